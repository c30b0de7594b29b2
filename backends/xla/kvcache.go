package xla

import (
	"context"
	"fmt"

	"github.com/gomlx/gomlx/pkg/core/graph"
	"github.com/gomlx/gomlx/pkg/core/tensors"

	"github.com/mypt/mypt/sdk"
	pb "github.com/mypt/mypt/sdk/proto/backendv1"
)

// kvCache is one sequence's keys and values, per layer [1,capacity,nh,hd] engine tensors
// (keys after RoPE), with the number of positions filled.
type kvCache struct {
	capacity, length int
	kv               []*tensors.Tensor // K_0, V_0, K_1, V_1, …
}

func (c *kvCache) free() { freeAll(c.kv) }

// rngState turns a request's dropout_seed into the RNG state of GoMLX's RandomUniform.
func rngState(seed uint64) (*tensors.Tensor, error) {
	t, err := graph.RNGStateFromSeed(int64(seed))
	if err != nil {
		return nil, fmt.Errorf("dropout rng state: %w", err)
	}
	return t, nil
}

// Prefill creates a KV cache for one sequence, runs the prompt through it and returns the
// next-token logits.
func (b *Backend) Prefill(_ context.Context, req *pb.PrefillRequest) (*pb.PrefillResponse, error) {
	s, err := b.lockSession()
	if err != nil {
		return nil, err
	}
	defer b.mu.Unlock()
	capacity, err := sdk.PrefillCapacity(req, s.a.BlockSize)
	if err != nil {
		return nil, err
	}
	P := len(req.Tokens)
	if err := sdk.ValidateTokens("tokens", req.Tokens, s.a.VocabSize); err != nil {
		return nil, err
	}
	e, err := s.prog.prefill(capacity)
	if err != nil {
		return nil, err
	}
	in := append([]*tensors.Tensor{tensors.FromFlatDataAndDimensions(req.Tokens, 1, P)}, s.prog.batchInputs(1, P, nil)...)
	defer freeAll(in)
	logits, kv, err := runAndRead(e, appendArgs(s.stateArgs(roleParam), in...), "prefill logits")
	if err != nil {
		return nil, err
	}
	if !req.AllLogits {
		logits = logits[(P-1)*s.a.VocabSize:]
	}
	h := s.caches.Add(&kvCache{capacity: capacity, length: P, kv: kv})
	return &pb.PrefillResponse{CacheHandle: h, Logits: logits}, nil
}

// Decode appends one token to a cache and returns the next-token logits.
func (b *Backend) Decode(_ context.Context, req *pb.DecodeRequest) (*pb.DecodeResponse, error) {
	s, err := b.lockSession()
	if err != nil {
		return nil, err
	}
	defer b.mu.Unlock()
	c, err := s.caches.Get(req.CacheHandle)
	if err != nil {
		return nil, err
	}
	if err := sdk.ValidateDecode(req, s.a.VocabSize, c.length, c.capacity); err != nil {
		return nil, err
	}
	at := c.length
	bias := make([]float32, c.capacity)
	for j := at + 1; j < c.capacity; j++ {
		bias[j] = maskedScore
	}
	// decodeGraph's inputs after the parameters and the cache: token, positions…, bias, at.
	in := []*tensors.Tensor{tensors.FromFlatDataAndDimensions([]int32{req.Token}, 1, 1)}
	in = append(in, s.prog.positionTensors([]int32{int32(at)}, 1, 1)...)
	in = append(in, tensors.FromFlatDataAndDimensions(bias, 1, 1, c.capacity), tensors.FromScalar(int32(at)))
	defer freeAll(in)
	logits, kv, err := runAndRead(s.prog.decode, appendArgs(appendArgs(s.stateArgs(roleParam), c.kv...), in...), "decode logits")
	if err != nil {
		return nil, err
	}
	c.free()
	c.kv = kv
	c.length++
	return &pb.DecodeResponse{Logits: logits, Length: uint32(c.length)}, nil
}

// ReleaseCache frees a KV cache.
func (b *Backend) ReleaseCache(_ context.Context, req *pb.ReleaseCacheRequest) (*pb.ReleaseCacheResponse, error) {
	s, err := b.lockSession()
	if err != nil {
		return nil, err
	}
	defer b.mu.Unlock()
	c, err := s.caches.Remove(req.CacheHandle)
	if err != nil {
		return nil, err
	}
	c.free()
	return &pb.ReleaseCacheResponse{}, nil
}

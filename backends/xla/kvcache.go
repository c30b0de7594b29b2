package xla

import (
	"context"
	"fmt"
	"slices"

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
	a := s.a
	capacity, err := sdk.PrefillCapacity(req, a.block)
	if err != nil {
		return nil, err
	}
	P := len(req.Tokens)
	if err := sdk.ValidateTokens("tokens", req.Tokens, a.V); err != nil {
		return nil, err
	}
	e, err := s.prog.prefill(capacity)
	if err != nil {
		return nil, err
	}
	hi := batchInputs(a, 1, P, nil)
	defer hi.finish()
	args := append(s.paramArgs(), tensors.FromFlatDataAndDimensions(slices.Clone(req.Tokens), 1, P))
	for _, p := range hi.pos {
		args = append(args, p)
	}
	args = append(args, hi.bias)
	out, err := run(e, args)
	if err != nil {
		return nil, err
	}
	logits, err := hostF32(out[0])
	_ = out[0].FinalizeAll()
	if err != nil {
		freeAll(out[1:])
		return nil, fmt.Errorf("prefill logits: %w", err)
	}
	if !req.AllLogits {
		logits = logits[(P-1)*a.V:]
	}
	h := s.caches.Add(&kvCache{capacity: capacity, length: P, kv: out[1:]})
	return &pb.PrefillResponse{CacheHandle: h, Logits: logits}, nil
}

// Decode appends one token to a cache and returns the next-token logits.
func (b *Backend) Decode(_ context.Context, req *pb.DecodeRequest) (*pb.DecodeResponse, error) {
	s, err := b.lockSession()
	if err != nil {
		return nil, err
	}
	defer b.mu.Unlock()
	a := s.a
	c, err := s.caches.Get(req.CacheHandle)
	if err != nil {
		return nil, err
	}
	if err := sdk.ValidateDecode(req, a.V, c.length, c.capacity); err != nil {
		return nil, err
	}
	at := c.length
	bias := make([]float32, c.capacity)
	for j := at + 1; j < c.capacity; j++ {
		bias[j] = maskedScore
	}
	args := s.paramArgs()
	for _, t := range c.kv {
		args = append(args, t)
	}
	args = append(args, tensors.FromFlatDataAndDimensions([]int32{req.Token}, 1, 1))
	for _, p := range positionTensors(a, []int32{int32(at)}, 1, 1) {
		args = append(args, p)
	}
	args = append(args, tensors.FromFlatDataAndDimensions(bias, 1, 1, c.capacity), tensors.FromScalar(int32(at)))
	out, err := run(s.prog.decode, args)
	if err != nil {
		return nil, err
	}
	logits, err := hostF32(out[0])
	_ = out[0].FinalizeAll()
	if err != nil {
		freeAll(out[1:])
		return nil, fmt.Errorf("decode logits: %w", err)
	}
	c.free()
	c.kv = out[1:]
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

package xla

import (
	"context"
	"errors"

	"github.com/gomlx/gomlx/pkg/core/tensors"

	"github.com/mypt/mypt/sdk/backendkit"
)

// kvCache is one sequence's keys and values, per layer [1,capacity,nh,hd] engine tensors
// (keys after RoPE). It runs on its session's current parameters.
type kvCache struct {
	s        *session
	capacity int
	kv       []*tensors.Tensor // K_0, V_0, K_1, V_1, …; nil before the prefill
}

// NewKVCache implements backendkit.KVSession. Nothing is allocated until the prefill,
// whose program fills the whole cache.
func (s *session) NewKVCache(_ context.Context, capacity int) (backendkit.KVCache, error) {
	return &kvCache{s: s, capacity: capacity}, nil
}

// Release implements backendkit.KVCache.
func (c *kvCache) Release() {
	freeAll(c.kv)
	c.kv = nil
}

// Extend implements backendkit.KVCache: the prefill program over the whole prompt at
// start 0, the decode program once per token after that.
func (c *kvCache) Extend(_ context.Context, tokens []int32, start int) ([]float32, error) {
	if start == 0 {
		return c.prefill(tokens)
	}
	if c.kv == nil {
		return nil, errors.New("kv cache: decode before prefill")
	}
	logits := make([]float32, 0, len(tokens)*c.s.net.a.VocabSize)
	for i, tok := range tokens {
		l, err := c.decode(tok, start+i)
		if err != nil {
			return nil, err
		}
		logits = append(logits, l...)
	}
	return logits, nil
}

// prefill runs tokens at positions 0… through the prefill program for the cache's
// capacity, which returns every position's logits and the filled cache.
func (c *kvCache) prefill(tokens []int32) ([]float32, error) {
	s := c.s
	e, err := s.prog.prefill(c.capacity)
	if err != nil {
		return nil, err
	}
	P := len(tokens)
	pos := make([]int32, P)
	for i := range pos {
		pos[i] = int32(i)
	}
	in := append([]*tensors.Tensor{tensors.FromFlatDataAndDimensions(tokens, 1, P)},
		s.prog.batchInputs(pos, nil, 1, P)...)
	defer freeAll(in)
	logits, kv, err := runAndRead(e, appendArgs(stateArgs(s.state.Param), in...), "prefill logits")
	if err != nil {
		return nil, err
	}
	c.Release()
	c.kv = kv
	return logits, nil
}

// decode runs one token at position at through the decode program, which writes its keys
// and values into the cache and attends over positions ≤ at.
func (c *kvCache) decode(token int32, at int) ([]float32, error) {
	s := c.s
	bias := make([]float32, c.capacity)
	for j := at + 1; j < c.capacity; j++ {
		bias[j] = maskedScore
	}
	// decodeGraph's inputs after the parameters and the cache: token, positions…, bias, at.
	in := []*tensors.Tensor{tensors.FromFlatDataAndDimensions([]int32{token}, 1, 1)}
	in = append(in, s.prog.positionTensors([]int32{int32(at)}, 1, 1)...)
	in = append(in, tensors.FromFlatDataAndDimensions(bias, 1, 1, c.capacity), tensors.FromScalar(int32(at)))
	defer freeAll(in)
	logits, kv, err := runAndRead(s.prog.decode, appendArgs(appendArgs(stateArgs(s.state.Param), c.kv...), in...), "decode logits")
	if err != nil {
		return nil, err
	}
	c.Release()
	c.kv = kv
	return logits, nil
}

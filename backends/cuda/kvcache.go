package cuda

import (
	"context"

	"github.com/mypt/mypt/backends/cuda/device"
	"github.com/mypt/mypt/backends/cuda/kernels"
	"github.com/mypt/mypt/sdk"
	pb "github.com/mypt/mypt/sdk/proto/backendv1"
)

// kvCache holds one sequence's keys (after RoPE) and values per layer on the device.
type kvCache struct {
	capacity, length int
	mem              bufs
	k, v             []device.Ptr // per layer, [capacity, C]
}

// kvScratch are the buffers of one chunk of incremental inference, shared by the caches.
type kvScratch struct {
	rows                                  int
	mem                                   bufs
	x, ln, qkv, y, tmp, mean, rstd, h, up device.Ptr
	act, pos, tokens, logits              device.Ptr
}

func (s *session) scratch(rows int) (*kvScratch, error) {
	if s.scr != nil && s.scr.rows >= rows {
		return s.scr, nil
	}
	if s.scr != nil {
		s.scr.mem.free()
		s.scr = nil
	}
	a := s.model.a
	c := &kvScratch{rows: rows, mem: bufs{d: s.model.q.d}}
	m := &c.mem
	C, H := a.C, a.H
	c.x, c.ln, c.y, c.tmp, c.qkv = m.f32(rows*C), m.f32(rows*C), m.f32(rows*C), m.f32(rows*C), m.f32(rows*3*C)
	c.mean, c.rstd, c.h, c.up, c.act = m.f32(rows), m.f32(rows), m.f32(rows*H), m.f32(rows*H), m.f32(rows*H)
	c.pos, c.tokens, c.logits = m.alloc(4*rows), m.alloc(4*rows), m.f32(rows*a.V)
	if m.err != nil {
		m.free()
		return nil, sdk.ResourceExhausted("KV-cache scratch for %d tokens: %v", rows, m.err)
	}
	s.scr = c
	return c, nil
}

// extend runs tokens through the network at positions c.length…, appending their keys and
// values, and returns the logits of every new position ([len(tokens), V]).
func (s *session) extend(c *kvCache, tokens []int32) ([]float32, error) {
	m := s.model
	a, q := m.a, m.q
	n, C, H := len(tokens), a.C, a.H
	sc, err := s.scratch(n)
	if err != nil {
		return nil, err
	}
	pos0 := c.length
	pos := make([]int32, n)
	for i := range pos {
		pos[i] = int32(pos0 + i)
	}
	q.up(sc.tokens, bytesOf(tokens))
	q.up(sc.pos, bytesOf(pos))
	q.k("embed_fwd", device.D1(n), device.D1(kernels.NormBlock), sc.x, m.w.wte, m.w.wpe, sc.tokens, sc.pos, int32(n), int32(C))
	for l := 0; l < a.L; l++ {
		w := &m.w.layers[l]
		q.normFwd(a, sc.ln, sc.mean, sc.rstd, sc.x, w.ln1W, w.ln1B, n)
		q.linearFwd(sc.qkv, sc.ln, w.qkvW, w.qkvB, n, C, 3*C)
		if !a.learnedPos {
			q.elt("rope", n*a.nh*(a.hd/2), sc.qkv, sc.pos, m.ropeCos, m.ropeSin, int32(n), int32(C), int32(a.nh), int32(0))
		}
		q.elt("kv_append", n*C, c.k[l], c.v[l], sc.qkv, int32(n), int32(C), int32(pos0))
		q.k("attn_fwd", device.D2(device.Blocks(n, kernels.AttBQ), a.nh), device.D1(kernels.AttBQ),
			sc.y, device.Ptr(0), sc.qkv, c.k[l], c.v[l], device.Ptr(0),
			int32(n), int32(pos0+n), int32(pos0), int32(a.nh), int32(a.hd), int32(3*C), int32(C), int32(C),
			uint64(0), uint64(0), uint64(0), float32(1))
		q.linearFwd(sc.tmp, sc.y, w.projW, w.projB, n, C, C)
		q.elt("residual_add", n*C, sc.x, sc.tmp, int64(n*C), uint64(0), uint64(0), uint64(0), float32(1))
		q.normFwd(a, sc.ln, sc.mean, sc.rstd, sc.x, w.ln2W, w.ln2B, n)
		if a.swiglu {
			q.linearFwd(sc.h, sc.ln, w.gateW, 0, n, C, H)
			q.linearFwd(sc.up, sc.ln, w.upW, 0, n, C, H)
			q.elt("swiglu_fwd", n*H, sc.act, sc.h, sc.up, int64(n*H))
			q.linearFwd(sc.tmp, sc.act, w.downW, 0, n, H, C)
		} else {
			q.linearFwd(sc.h, sc.ln, w.fc1W, w.fc1B, n, C, H)
			q.elt("gelu_fwd", n*H, sc.act, sc.h, int64(n*H))
			q.linearFwd(sc.tmp, sc.act, w.fc2W, w.fc2B, n, H, C)
		}
		q.elt("residual_add", n*C, sc.x, sc.tmp, int64(n*C), uint64(0), uint64(0), uint64(0), float32(1))
	}
	q.normFwd(a, sc.ln, sc.mean, sc.rstd, sc.x, m.w.lnfW, m.w.lnfB, n)
	q.linearFwd(sc.logits, sc.ln, m.w.lmW, m.w.lmB, n, C, a.V)
	if q.err != nil {
		return nil, q.err
	}
	c.length += n
	return m.readF32(sc.logits, n*a.V)
}

// Prefill creates a cache, runs the prompt through it and returns next-token logits.
func (b *Backend) Prefill(_ context.Context, req *pb.PrefillRequest) (*pb.PrefillResponse, error) {
	s, err := b.lockSession()
	if err != nil {
		return nil, err
	}
	defer b.mu.Unlock()
	a := s.model.a
	capacity := int(req.Capacity)
	if capacity == 0 {
		capacity = a.block
	}
	if capacity > a.block {
		return nil, sdk.InvalidArgument("capacity", "%d exceeds block_size %d", capacity, a.block)
	}
	if len(req.Tokens) < 1 || len(req.Tokens) > capacity {
		return nil, sdk.InvalidArgument("tokens", "prompt length %d must be in [1, capacity=%d]", len(req.Tokens), capacity)
	}
	if err := sdk.ValidateTokens("tokens", req.Tokens, a.V); err != nil {
		return nil, err
	}
	c := &kvCache{capacity: capacity, mem: bufs{d: s.model.q.d}}
	for range a.L {
		c.k = append(c.k, c.mem.f32(capacity*a.C))
		c.v = append(c.v, c.mem.f32(capacity*a.C))
	}
	if c.mem.err != nil {
		c.mem.free()
		return nil, sdk.ResourceExhausted("KV cache of %d tokens: %v", capacity, c.mem.err)
	}
	logits, err := s.extend(c, req.Tokens)
	if err != nil {
		c.mem.free()
		return nil, err
	}
	s.nextID++
	s.caches[s.nextID] = c
	if !req.AllLogits {
		logits = logits[(len(req.Tokens)-1)*a.V:]
	}
	return &pb.PrefillResponse{CacheHandle: s.nextID, Logits: logits}, nil
}

// Decode appends one token and returns the next-token logits.
func (b *Backend) Decode(_ context.Context, req *pb.DecodeRequest) (*pb.DecodeResponse, error) {
	s, err := b.lockSession()
	if err != nil {
		return nil, err
	}
	defer b.mu.Unlock()
	c, ok := s.caches[req.CacheHandle]
	if !ok {
		return nil, sdk.NotFound("cache handle %d is unknown or released", req.CacheHandle)
	}
	a := s.model.a
	if req.Token < 0 || int(req.Token) >= a.V {
		return nil, sdk.InvalidArgument("token", "token id %d is outside [0, %d)", req.Token, a.V)
	}
	if c.length >= c.capacity {
		return nil, sdk.FailedPrecondition("cache %d is full (%d tokens)", req.CacheHandle, c.capacity)
	}
	logits, err := s.extend(c, []int32{req.Token})
	if err != nil {
		return nil, err
	}
	return &pb.DecodeResponse{Logits: logits, Length: uint32(c.length)}, nil
}

// ReleaseCache frees a cache.
func (b *Backend) ReleaseCache(_ context.Context, req *pb.ReleaseCacheRequest) (*pb.ReleaseCacheResponse, error) {
	s, err := b.lockSession()
	if err != nil {
		return nil, err
	}
	defer b.mu.Unlock()
	c, ok := s.caches[req.CacheHandle]
	if !ok {
		return nil, sdk.NotFound("cache handle %d is unknown or released", req.CacheHandle)
	}
	c.mem.free()
	delete(s.caches, req.CacheHandle)
	return &pb.ReleaseCacheResponse{}, nil
}

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
	C, H := a.NEmbd, a.MLPHidden
	c.x, c.ln, c.y, c.tmp, c.qkv = m.f32(rows*C), m.f32(rows*C), m.f32(rows*C), m.f32(rows*C), m.f32(rows*3*C)
	c.mean, c.rstd, c.h, c.up, c.act = m.f32(rows), m.f32(rows), m.f32(rows*H), m.f32(rows*H), m.f32(rows*H)
	c.pos, c.tokens, c.logits = m.alloc(4*rows), m.alloc(4*rows), m.f32(rows*a.VocabSize)
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
	n, C, H := len(tokens), a.NEmbd, a.MLPHidden
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
	q.k("embed_fwd", device.D1(n), device.D1(kernels.NormBlock), sc.x, m.w.Wte, m.w.Wpe, sc.tokens, sc.pos, int32(n), int32(C))
	for l := 0; l < a.NLayer; l++ {
		w := &m.w.Layers[l]
		q.normFwd(a, sc.ln, sc.mean, sc.rstd, sc.x, w.Ln1W, w.Ln1B, n)
		q.linearFwd(sc.qkv, sc.ln, w.QkvW, w.QkvB, n, C, 3*C)
		if !a.LearnedPos {
			q.elt("rope", n*a.NHead*(a.HeadDim/2), sc.qkv, sc.pos, m.ropeCos, m.ropeSin, int32(n), int32(C), int32(a.NHead), int32(0))
		}
		q.elt("kv_append", n*C, c.k[l], c.v[l], sc.qkv, int32(n), int32(C), int32(pos0))
		q.k("attn_fwd", device.D2(device.Blocks(n, kernels.AttBQ), a.NHead), device.D1(kernels.AttBQ),
			sc.y, device.Ptr(0), sc.qkv, c.k[l], c.v[l], device.Ptr(0),
			int32(n), int32(pos0+n), int32(pos0), int32(a.NHead), int32(a.HeadDim), int32(3*C), int32(C), int32(C),
			uint64(0), uint64(0), uint64(0), float32(1))
		q.linearFwd(sc.tmp, sc.y, w.ProjW, w.ProjB, n, C, C)
		q.elt("residual_add", n*C, sc.x, sc.tmp, int64(n*C), uint64(0), uint64(0), uint64(0), float32(1))
		q.normFwd(a, sc.ln, sc.mean, sc.rstd, sc.x, w.Ln2W, w.Ln2B, n)
		if a.SwiGLU {
			q.linearFwd(sc.h, sc.ln, w.GateW, 0, n, C, H)
			q.linearFwd(sc.up, sc.ln, w.UpW, 0, n, C, H)
			q.elt("swiglu_fwd", n*H, sc.act, sc.h, sc.up, int64(n*H))
			q.linearFwd(sc.tmp, sc.act, w.DownW, 0, n, H, C)
		} else {
			q.linearFwd(sc.h, sc.ln, w.Fc1W, w.Fc1B, n, C, H)
			q.elt("gelu_fwd", n*H, sc.act, sc.h, int64(n*H))
			q.linearFwd(sc.tmp, sc.act, w.Fc2W, w.Fc2B, n, H, C)
		}
		q.elt("residual_add", n*C, sc.x, sc.tmp, int64(n*C), uint64(0), uint64(0), uint64(0), float32(1))
	}
	q.normFwd(a, sc.ln, sc.mean, sc.rstd, sc.x, m.w.LnfW, m.w.LnfB, n)
	q.linearFwd(sc.logits, sc.ln, m.w.LmW, m.w.LmB, n, C, a.VocabSize)
	if q.err != nil {
		return nil, q.err
	}
	c.length += n
	return m.readF32(sc.logits, n*a.VocabSize)
}

// Prefill creates a cache, runs the prompt through it and returns next-token logits.
func (b *Backend) Prefill(_ context.Context, req *pb.PrefillRequest) (*pb.PrefillResponse, error) {
	s, err := b.lockSession()
	if err != nil {
		return nil, err
	}
	defer b.mu.Unlock()
	a := s.model.a
	capacity, err := sdk.PrefillCapacity(req, a.BlockSize)
	if err != nil {
		return nil, err
	}
	if err := sdk.ValidateTokens("tokens", req.Tokens, a.VocabSize); err != nil {
		return nil, err
	}
	c := &kvCache{capacity: capacity, mem: bufs{d: s.model.q.d}}
	for range a.NLayer {
		c.k = append(c.k, c.mem.f32(capacity*a.NEmbd))
		c.v = append(c.v, c.mem.f32(capacity*a.NEmbd))
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
	h := s.caches.Add(c)
	if !req.AllLogits {
		logits = logits[(len(req.Tokens)-1)*a.VocabSize:]
	}
	return &pb.PrefillResponse{CacheHandle: h, Logits: logits}, nil
}

// Decode appends one token and returns the next-token logits.
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
	if err := sdk.ValidateDecode(req, s.model.a.VocabSize, c.length, c.capacity); err != nil {
		return nil, err
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
	c, err := s.caches.Remove(req.CacheHandle)
	if err != nil {
		return nil, err
	}
	c.mem.free()
	return &pb.ReleaseCacheResponse{}, nil
}

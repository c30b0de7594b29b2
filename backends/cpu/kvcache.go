package cpu

import (
	"context"
	"math"
	"slices"

	"github.com/mypt/mypt/sdk"
	"github.com/mypt/mypt/sdk/modelspec"
	pb "github.com/mypt/mypt/sdk/proto/backendv1"
)

// kvCache holds one sequence's keys (after RoPE) and values for every layer, plus the
// scratch buffers incremental inference needs.
type kvCache struct {
	capacity, length int
	k, v             [][]float32 // per layer, [capacity, C]
	// scratch, sized for the longest chunk seen
	rows                           int
	x, ln, qkv, y, tmp, mean, rstd []float32
	h, up, act                     []float32
	pos                            []int32
	scores                         [][]float32 // per worker, [capacity]
	logits                         []float32
}

func newKVCache(m *model[float32], capacity int) *kvCache {
	a := m.a
	c := &kvCache{capacity: capacity}
	for range a.NLayer {
		c.k = append(c.k, make([]float32, capacity*a.NEmbd))
		c.v = append(c.v, make([]float32, capacity*a.NEmbd))
	}
	for range m.pool.workers {
		c.scores = append(c.scores, make([]float32, capacity))
	}
	return c
}

func (c *kvCache) ensure(rows int, a modelspec.Arch) {
	if rows <= c.rows {
		return
	}
	c.rows = rows
	C, H := a.NEmbd, a.MLPHidden
	c.x, c.ln, c.y, c.tmp = make([]float32, rows*C), make([]float32, rows*C), make([]float32, rows*C), make([]float32, rows*C)
	c.qkv = make([]float32, rows*3*C)
	c.mean, c.rstd = make([]float32, rows), make([]float32, rows)
	c.h, c.up, c.act = make([]float32, rows*H), make([]float32, rows*H), make([]float32, rows*H)
	c.pos = make([]int32, rows)
	c.logits = make([]float32, rows*a.VocabSize)
}

// extendCache32 runs tokens through the network at positions c.length…, appending their
// keys and values, and returns the logits of every new position ([len(tokens), V], owned by c).
func extendCache32(m *model[float32], c *kvCache, tokens []int32) []float32 {
	a := m.a
	n, C, H := len(tokens), a.NEmbd, a.MLPHidden
	c.ensure(n, a)
	pos0 := c.length
	x, ln, qkv, y, tmp := c.x[:n*C], c.ln[:n*C], c.qkv[:n*3*C], c.y[:n*C], c.tmp[:n*C]
	pos := c.pos[:n]
	for i, tok := range tokens {
		pos[i] = int32(pos0 + i)
		dst := x[i*C : (i+1)*C]
		copy(dst, m.w.Wte[int(tok)*C:])
		if a.LearnedPos {
			for j, v := range m.w.Wpe[(pos0+i)*C : (pos0+i+1)*C] {
				dst[j] += v
			}
		}
	}
	hd := a.HeadDim
	scale := 1 / math.Sqrt(float64(hd))
	for l := 0; l < a.NLayer; l++ {
		w := &m.w.Layers[l]
		normForward(m.pool, a.LayerNorm, ln, c.mean, c.rstd, x, w.Ln1W, w.Ln1B, n, C, a.NormEps)
		linearForward(m.mm, m.pool, qkv, ln, w.QkvW, w.QkvB, n, C, 3*C)
		if !a.LearnedPos {
			ropeApply(m.pool, qkv, pos, m.ropeCos, m.ropeSin, n, C, a.NHead, false)
		}
		kc, vc := c.k[l], c.v[l]
		for i := 0; i < n; i++ {
			copy(kc[(pos0+i)*C:(pos0+i+1)*C], qkv[i*3*C+C:i*3*C+2*C])
			copy(vc[(pos0+i)*C:(pos0+i+1)*C], qkv[i*3*C+2*C:i*3*C+3*C])
		}
		// each new position attends to every cached position up to itself
		m.pool.run(n*a.NHead, 1, func(wk, lo, hi int) {
			sc := c.scores[wk]
			for ih := lo; ih < hi; ih++ {
				i, h := ih/a.NHead, ih%a.NHead
				p := pos0 + i
				q := qkv[i*3*C+h*hd : i*3*C+(h+1)*hd]
				mx := math.Inf(-1)
				for j := 0; j <= p; j++ {
					kj := kc[j*C+h*hd : j*C+(h+1)*hd]
					var s float32
					for d, qv := range q {
						s += qv * kj[d]
					}
					sc[j] = s * float32(scale)
					mx = math.Max(mx, float64(sc[j]))
				}
				var sum float64
				for j := 0; j <= p; j++ {
					e := math.Exp(float64(sc[j]) - mx)
					sc[j] = float32(e)
					sum += e
				}
				out := y[i*C+h*hd : i*C+(h+1)*hd]
				clear(out)
				inv := float32(1 / sum)
				for j := 0; j <= p; j++ {
					pj := sc[j] * inv
					for d, vv := range vc[j*C+h*hd : j*C+(h+1)*hd] {
						out[d] += pj * vv
					}
				}
			}
		})
		linearForward(m.mm, m.pool, tmp, y, w.ProjW, w.ProjB, n, C, C)
		residualAdd(m.pool, x, tmp, nil)
		normForward(m.pool, a.LayerNorm, ln, c.mean, c.rstd, x, w.Ln2W, w.Ln2B, n, C, a.NormEps)
		h, act := c.h[:n*H], c.act[:n*H]
		if a.SwiGLU {
			up := c.up[:n*H]
			linearForward(m.mm, m.pool, h, ln, w.GateW, nil, n, C, H)
			linearForward(m.mm, m.pool, up, ln, w.UpW, nil, n, C, H)
			swigluForward(m.pool, act, h, up)
			linearForward(m.mm, m.pool, tmp, act, w.DownW, nil, n, H, C)
		} else {
			linearForward(m.mm, m.pool, h, ln, w.Fc1W, w.Fc1B, n, C, H)
			geluForward(m.pool, act, h)
			linearForward(m.mm, m.pool, tmp, act, w.Fc2W, w.Fc2B, n, H, C)
		}
		residualAdd(m.pool, x, tmp, nil)
	}
	c.length += n
	normForward(m.pool, a.LayerNorm, ln, c.mean, c.rstd, x, m.w.LnfW, m.w.LnfB, n, C, a.NormEps)
	logits := c.logits[:n*a.VocabSize]
	linearForward(m.mm, m.pool, logits, ln, m.w.LmW, m.w.LmB, n, C, a.VocabSize)
	return logits
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
	for i, t := range req.Tokens {
		if t < 0 || int(t) >= a.VocabSize {
			return nil, sdk.InvalidArgument("tokens["+itoa(i)+"]", "token id %d is outside [0, %d)", t, a.VocabSize)
		}
	}
	c := newKVCache(s.model, capacity)
	logits := extendCache32(s.model, c, req.Tokens)
	h := s.caches.Add(c)
	if !req.AllLogits {
		logits = logits[(len(req.Tokens)-1)*a.VocabSize:]
	}
	return &pb.PrefillResponse{CacheHandle: h, Logits: slices.Clone(logits)}, nil
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
	logits := extendCache32(s.model, c, []int32{req.Token})
	return &pb.DecodeResponse{Logits: slices.Clone(logits), Length: uint32(c.length)}, nil
}

// ReleaseCache frees a cache.
func (b *Backend) ReleaseCache(_ context.Context, req *pb.ReleaseCacheRequest) (*pb.ReleaseCacheResponse, error) {
	s, err := b.lockSession()
	if err != nil {
		return nil, err
	}
	defer b.mu.Unlock()
	if _, err := s.caches.Remove(req.CacheHandle); err != nil {
		return nil, err
	}
	return &pb.ReleaseCacheResponse{}, nil
}

// Package cpu is mypt's pure-Go reference backend: GPT-2 and LLaMA style transformers with
// explicit per-layer backward passes, AdamW, gradient clipping and a KV cache, all in
// float32 on the CPU. It is the numerical reference other backends are held to and the
// default backend when there is no GPU. Matrix products go through backends/cpu/gemm;
// other loops are spread over a small worker pool. The RPC shell (validation, state
// streams, cache table) is sdk/backendkit's; this package holds the maths.
package cpu

import (
	"context"
	"runtime"
	"slices"

	"github.com/mypt/mypt/backends/cpu/gemm"
	"github.com/mypt/mypt/sdk/backendkit"
	"github.com/mypt/mypt/sdk/paramstate"
	pb "github.com/mypt/mypt/sdk/proto/backendv1"
)

// Version is the backend's own semantic version.
const Version = "0.2.0"

// Options configure a backend.
type Options struct {
	// Threads is the number of cores to compute on; 0 means runtime.GOMAXPROCS(0).
	Threads int
}

// New returns a CPU backend.
func New(opts Options) *backendkit.Backend {
	t := opts.Threads
	if t <= 0 {
		t = runtime.GOMAXPROCS(0)
	}
	return backendkit.New(engine{threads: t})
}

// engine is the CPU: a thread count.
type engine struct{ threads int }

// Describe implements backendkit.Engine.
func (e engine) Describe(context.Context) (backendkit.Description, error) {
	eng := gemm.New(1)
	kernel := eng.Kernel()
	eng.Close()
	return backendkit.Description{
		Name: "cpu", Version: Version, Engine: "pure-go gemm " + kernel,
		Devices:       []*pb.Device{{Kind: "cpu", Name: runtime.GOARCH, Cores: uint32(e.threads)}},
		ComputeDTypes: []pb.DType{pb.DType_DTYPE_F32},
		// Work is split by sizes and the fixed thread count only, and every reduction
		// runs in a fixed order, so results are bit-identical run to run (for the same
		// thread count): deterministic.
		Features: append(backendkit.CompleteFeatures(), pb.Feature_FEATURE_DETERMINISTIC),
	}, nil
}

// session is one configured model on the CPU.
type session struct {
	model   *model[float32]
	opt     optimizer
	state   paramstate.Roles[[]float32] // the flat buffers of the state streams
	pool    *pool
	engine  *gemm.Engine
	workers []*gemm.Engine
	partial []float64
}

// NewSession implements backendkit.Engine.
func (e engine) NewSession(_ context.Context, cfg backendkit.SessionConfig) (backendkit.Session, error) {
	s := &session{pool: newPool(e.threads), engine: gemm.New(e.threads), partial: make([]float64, e.threads)}
	workerMM := make([]gemmFunc[float32], e.threads)
	for i := range workerMM {
		w := gemm.New(1)
		s.workers = append(s.workers, w)
		workerMM[i] = w.Sgemm
	}
	s.model = newModel(cfg.Arch, cfg.Layout, s.pool, s.engine.Sgemm, workerMM)
	o := cfg.Optimizer
	s.opt = optimizer{beta1: o.Beta1, beta2: o.Beta2, eps: o.Eps,
		m: make([]float32, cfg.Layout.Total), v: make([]float32, cfg.Layout.Total)}
	if cfg.MaxBatch > 0 {
		s.model.ensure(cfg.MaxBatch, cfg.MaxSeqLen, cfg.MaxSeqLen, cfg.Arch.Dropout > 0)
	}
	s.state = paramstate.Roles[[]float32]{Param: s.model.params, AdamM: s.opt.m, AdamV: s.opt.v, Grad: s.model.grads}
	return s, nil
}

// Close implements backendkit.Session.
func (s *session) Close() error {
	s.pool.close()
	s.engine.Close()
	for _, e := range s.workers {
		e.Close()
	}
	return nil
}

// Has implements paramstate.Store: a role's tensors are ranges of its flat buffer.
func (s *session) Has(role pb.TensorRole) bool { return s.state.Has(role) }

// Load implements paramstate.Store.
func (s *session) Load(role pb.TensorRole, i int, values []float32) error {
	p := s.model.lay.Params[i]
	buf, _ := s.state.Of(role)
	copy(buf[p.Offset:p.Offset+p.Size], values)
	return nil
}

// Values implements paramstate.Store.
func (s *session) Values(role pb.TensorRole, i int) ([]float32, error) {
	p := s.model.lay.Params[i]
	buf, _ := s.state.Of(role)
	return buf[p.Offset : p.Offset+p.Size], nil
}

// ZeroGrads implements backendkit.Trainer.
func (s *session) ZeroGrads() error {
	clear(s.model.grads)
	return nil
}

// passOf is the forward pass over a kit batch.
func passOf(b *backendkit.Batch) pass {
	return pass{b: b.B, t: b.T, tokens: b.Tokens, pos: b.Positions, segs: b.Segments}
}

// ForwardBackward implements backendkit.Trainer.
func (s *session) ForwardBackward(_ context.Context, b *backendkit.Batch, gradScale float32, seed uint64) (backendkit.Totals, error) {
	ps := passOf(b)
	ps.train, ps.seed = true, seed
	return s.model.forwardBackward(ps, b.Targets, b.Weights, float64(gradScale)), nil
}

// OptimizerStep implements backendkit.Trainer.
func (s *session) OptimizerStep(_ context.Context, st backendkit.Step) (float64, error) {
	return s.opt.step(s.pool, s.model.lay, s.model.params, s.model.grads, st, s.partial), nil
}

// Evaluate implements backendkit.Session.
func (s *session) Evaluate(_ context.Context, b *backendkit.Batch, rows []int) (backendkit.Totals, []float32, error) {
	m := s.model
	m.forward(passOf(b), nil)
	var logits []float32
	if rows != nil {
		V := m.a.VocabSize
		logits = make([]float32, 0, len(rows)*V)
		for _, r := range rows {
			logits = append(logits, m.x.logits[r*V:(r+1)*V]...)
		}
	}
	return m.lossAndGrad(b.B*b.T, b.Targets, b.Weights, 0, false), logits, nil
}

// NewKVCache implements backendkit.KVSession.
func (s *session) NewKVCache(_ context.Context, capacity int) (backendkit.KVCache, error) {
	return newKVCache(s.model, capacity), nil
}

// kvCache holds one sequence's keys (after RoPE) and values for every layer.
type kvCache[F Float] struct {
	m    *model[F]
	k, v [][]F   // per layer, [capacity, KVDim]
	pos  []int32 // scratch for the positions of one Extend
}

func newKVCache[F Float](m *model[F], capacity int) *kvCache[F] {
	c := &kvCache[F]{m: m}
	for range m.a.NLayer {
		c.k = append(c.k, make([]F, capacity*m.a.KVDim()))
		c.v = append(c.v, make([]F, capacity*m.a.KVDim()))
	}
	return c
}

// Extend implements backendkit.KVCache: the forward pass over tokens at positions
// start…, attending to the cached sequence, appends their keys and values.
func (c *kvCache[F]) Extend(_ context.Context, tokens []int32, start int) ([]float32, error) {
	n := len(tokens)
	c.pos = slices.Grow(c.pos[:0], n)[:n]
	for i := range c.pos {
		c.pos[i] = int32(start + i)
	}
	c.m.forward(pass{b: 1, t: n, tokens: tokens, pos: c.pos}, c)
	logits := make([]float32, n*c.m.a.VocabSize)
	for i, v := range c.m.x.logits[:len(logits)] {
		logits[i] = float32(v)
	}
	return logits, nil
}

// appendKeys copies the keys (after RoPE) and values of the t rows of qkv (row stride
// stride) into layer l's cache at positions start…, and returns the cached sequence up
// to them for attention to read.
func (c *kvCache[F]) appendKeys(l int, qkv []F, start, t, width, stride int) keyView[F] {
	kd := c.m.a.KVDim()
	k, v := c.k[l], c.v[l]
	for i := range t {
		row := qkv[i*stride:]
		copy(k[(start+i)*kd:(start+i+1)*kd], row[width:width+kd])
		copy(v[(start+i)*kd:(start+i+1)*kd], row[width+kd:width+2*kd])
	}
	return keyView[F]{k: k, v: v, ld: kd}
}

// Release implements backendkit.KVCache (the garbage collector frees the buffers).
func (c *kvCache[F]) Release() { c.k, c.v = nil, nil }

// Package gpt is a small, complete mypt backend for plugin authors to read and copy: the
// two GPT architectures MyPT trains (GPT-2 style: learned positions, LayerNorm, GELU MLP;
// LLaMA style: RoPE, RMSNorm, SwiGLU), with training, a KV cache, packed sequences, loss
// weights and frozen parameters, written as plain float64 loops in the manner of
// nanoGPT and llm.c. It is slow by design; backends/cpu is the optimised float32
// version of the same maths, and this package's tests hold the two together.
//
// The protocol's bookkeeping is sdk/backendkit's: it validates every request against
// the model contract, answers with the right status codes, serialises calls, streams
// state, counts optimizer steps and keeps the KV-cache table. What is left to a backend,
// and what this package shows, is the maths:
//
//   - gpt.go: the Engine (what GetInfo reports, NewSession) and the Session — where the
//     parameters, gradients and AdamW moments live (paramstate.Store), Evaluate,
//     ForwardBackward, OptimizerStep and the KV cache;
//   - model.go: the network: one forward pass (training, evaluation and generation all
//     run it; with a KV cache it appends keys and values and attends to the cached
//     sequence), the weighted cross-entropy, and the backward pass written block by
//     block in reverse;
//   - layers.go: each layer's forward and backward.
//
// To start a backend of your own, copy this directory, rename the package and the
// Description's Name (the plugin binary must be called mypt-backend-<Name>), and replace
// the loops with your device's kernels one at a time, keeping the finite-difference and
// conformance tests green. Declare a feature only once it works: the kit refuses what
// is not declared (this backend has no dropout or NEFTune, so a model with dropout > 0
// gets UNIMPLEMENTED).
//
// Parameters and optimizer state are float64 here; the state streams carry float32, so
// GetState rounds and SetState widens (a run resumed from a checkpoint continues from the
// rounded values).
package gpt

import (
	"context"
	"math"
	"runtime"

	"github.com/mypt/mypt/sdk/backendkit"
	"github.com/mypt/mypt/sdk/paramstate"
	pb "github.com/mypt/mypt/sdk/proto/backendv1"
)

// Version is the example backend's version.
const Version = "0.1.0"

// New returns the backend, ready to serve: sdk.Serve(gpt.New()).
func New() *backendkit.Backend { return backendkit.New(engine{}) }

// engine is the CPU the example computes on.
type engine struct{}

// Describe implements backendkit.Engine.
func (engine) Describe(context.Context) (backendkit.Description, error) {
	return backendkit.Description{
		Name: "gpt", Version: Version, Engine: "pure-go float64 example",
		Devices: []*pb.Device{{Kind: "cpu", Name: runtime.GOARCH, Cores: uint32(runtime.GOMAXPROCS(0))}},
		Features: []pb.Feature{pb.Feature_FEATURE_TRAINING, pb.Feature_FEATURE_KV_CACHE,
			pb.Feature_FEATURE_PACKED_SEGMENTS, pb.Feature_FEATURE_RETURN_LOGITS,
			pb.Feature_FEATURE_GRADIENT_STATE, pb.Feature_FEATURE_FROZEN_PARAMS,
			pb.Feature_FEATURE_LM_HEAD_WITHOUT_BIAS,
			// Every number is computed by one goroutine in a fixed order (see parallel),
			// so results are bit-identical whatever the number of cores.
			pb.Feature_FEATURE_DETERMINISTIC},
	}, nil
}

// session is one configured model and its AdamW moments.
type session struct {
	*model
	beta1, beta2, eps float64
	m, v              []float64                   // AdamW moments, laid out like the parameters
	state             paramstate.Roles[[]float64] // the flat buffer of each role of a state stream
}

// NewSession implements backendkit.Engine.
func (engine) NewSession(_ context.Context, cfg backendkit.SessionConfig) (backendkit.Session, error) {
	o := cfg.Optimizer
	s := &session{model: newModel(cfg.Arch, cfg.Layout), beta1: o.Beta1, beta2: o.Beta2, eps: o.Eps,
		m: make([]float64, cfg.Layout.Total), v: make([]float64, cfg.Layout.Total)}
	s.state = paramstate.Roles[[]float64]{Param: s.params, AdamM: s.m, AdamV: s.v, Grad: s.grads}
	return s, nil
}

// Close implements backendkit.Session (the garbage collector frees the buffers).
func (s *session) Close() error { return nil }

// MemoryBytes implements backendkit.MemoryReporter: parameters, gradients and two
// moments in float64.
func (s *session) MemoryBytes() uint64 { return 32 * uint64(s.lay.Total) }

// buffer returns the flat buffer holding a role's tensors.
func (s *session) buffer(role pb.TensorRole) []float64 {
	buf, _ := s.state.Of(role)
	return buf
}

// Has implements paramstate.Store.
func (s *session) Has(role pb.TensorRole) bool { return s.state.Has(role) }

// Load implements paramstate.Store: parameter i of role takes values.
func (s *session) Load(role pb.TensorRole, i int, values []float32) error {
	p := s.lay.Params[i]
	dst := s.buffer(role)[p.Offset : p.Offset+p.Size]
	for j, x := range values {
		dst[j] = float64(x)
	}
	return nil
}

// Values implements paramstate.Store: parameter i of role, rounded to float32.
func (s *session) Values(role pb.TensorRole, i int) ([]float32, error) {
	p := s.lay.Params[i]
	return toFloat32(s.buffer(role)[p.Offset : p.Offset+p.Size]), nil
}

func toFloat32(x []float64) []float32 {
	out := make([]float32, len(x))
	for i, v := range x {
		out[i] = float32(v)
	}
	return out
}

// passOf is the forward pass over a batch the kit has validated (it also computed the
// positions, restarting in every packed segment when the model asks for that).
func passOf(b *backendkit.Batch) pass {
	return pass{b: b.B, t: b.T, tokens: b.Tokens, pos: b.Positions, segs: b.Segments}
}

// Evaluate implements backendkit.Session: loss statistics, and the logits of rows.
func (s *session) Evaluate(_ context.Context, b *backendkit.Batch, rows []int) (backendkit.Totals, []float32, error) {
	x := s.forward(passOf(b), nil)
	V := s.a.VocabSize
	var logits []float32
	for _, r := range rows {
		logits = append(logits, toFloat32(x.logits[r*V:(r+1)*V])...)
	}
	tot, _ := crossEntropy(x.logits, b.Targets, b.Weights, V, 0)
	return tot, logits, nil
}

// ForwardBackward implements backendkit.Trainer: forward, loss, and backward, adding
// gradScale·∂(Σ w·CE)/∂θ to the gradients (so micro-batches accumulate).
func (s *session) ForwardBackward(_ context.Context, b *backendkit.Batch, gradScale float32, _ uint64) (backendkit.Totals, error) {
	x := s.forward(passOf(b), nil)
	tot, dlogits := crossEntropy(x.logits, b.Targets, b.Weights, s.a.VocabSize, float64(gradScale))
	s.backward(x, dlogits)
	return tot, nil
}

// ZeroGrads implements backendkit.Trainer.
func (s *session) ZeroGrads() error {
	clear(s.grads)
	return nil
}

// OptimizerStep implements backendkit.Trainer: torch.nn.utils.clip_grad_norm_ then
// torch.optim.AdamW (decoupled weight decay on the tensors marked for it, bias-corrected
// moments, eps outside the square root). Frozen tensors are left out of the norm and
// are not updated. It returns the norm before clipping and zeroes the gradients.
func (s *session) OptimizerStep(_ context.Context, st backendkit.Step) (float64, error) {
	for _, p := range s.lay.Params {
		if p.Frozen {
			clear(s.grads[p.Offset : p.Offset+p.Size])
		}
	}
	var sumSq float64
	for _, g := range s.grads {
		sumSq += g * g
	}
	norm := math.Sqrt(sumSq)
	clip := 1.0
	if st.ClipNorm > 0 && st.ClipNorm/(norm+1e-6) < 1 {
		clip = st.ClipNorm / (norm + 1e-6)
	}
	lr, t := st.LearningRate, float64(st.Number)
	bc1, bc2 := 1-math.Pow(s.beta1, t), 1-math.Pow(s.beta2, t)
	for _, p := range s.lay.Params {
		if p.Frozen {
			continue
		}
		decay := 1.0
		if p.Decay {
			decay = 1 - lr*st.WeightDecay
		}
		for i := p.Offset; i < p.Offset+p.Size; i++ {
			g := s.grads[i] * clip
			s.m[i] = s.beta1*s.m[i] + (1-s.beta1)*g
			s.v[i] = s.beta2*s.v[i] + (1-s.beta2)*g*g
			s.params[i] = s.params[i]*decay - lr/bc1*s.m[i]/(math.Sqrt(s.v[i])/math.Sqrt(bc2)+s.eps)
		}
	}
	clear(s.grads)
	return norm, nil
}

// NewKVCache implements backendkit.KVSession.
func (s *session) NewKVCache(_ context.Context, capacity int) (backendkit.KVCache, error) {
	c := &kvCache{m: s.model}
	for range s.a.NLayer {
		c.k = append(c.k, make([]float64, capacity*s.a.NEmbd))
		c.v = append(c.v, make([]float64, capacity*s.a.NEmbd))
	}
	return c, nil
}

// kvCache is one sequence's keys (after RoPE) and values, per layer [capacity, C].
type kvCache struct {
	m    *model
	k, v [][]float64
	n    int // tokens cached
}

// Extend implements backendkit.KVCache: the ordinary forward pass over tokens at
// positions start… (start == c.n; the kit checks the capacity), reading and extending
// the cache.
func (c *kvCache) Extend(_ context.Context, tokens []int32, start int) ([]float32, error) {
	pos := make([]int32, len(tokens))
	for i := range pos {
		pos[i] = int32(start + i)
	}
	x := c.m.forward(pass{b: 1, t: len(tokens), tokens: tokens, pos: pos}, c)
	return toFloat32(x.logits), nil
}

// appendKV stores the keys and values of the t new rows of layer l's qkv and returns
// the whole cached sequence for attention to read: keys, values (row stride C) and
// their number.
func (c *kvCache) appendKV(l int, qkv []float64, t int) (k, v []float64, s int) {
	C := c.m.a.NEmbd
	for i := range t {
		row := qkv[i*3*C : (i+1)*3*C]
		copy(c.k[l][(c.n+i)*C:], row[C:2*C])
		copy(c.v[l][(c.n+i)*C:], row[2*C:])
	}
	return c.k[l], c.v[l], c.n + t
}

// Release implements backendkit.KVCache.
func (c *kvCache) Release() { c.k, c.v = nil, nil }

package xla

import (
	"context"
	"fmt"
	"math"
	"slices"

	"github.com/gomlx/gomlx/backends"
	"github.com/gomlx/gomlx/pkg/core/graph"
	"github.com/gomlx/gomlx/pkg/core/shapes"
	"github.com/gomlx/gomlx/pkg/core/tensors"
	"github.com/gomlx/gopjrt/dtypes"

	"github.com/mypt/mypt/sdk/backendkit"
	"github.com/mypt/mypt/sdk/modelspec"
	"github.com/mypt/mypt/sdk/paramstate"
	pb "github.com/mypt/mypt/sdk/proto/backendv1"
)

// session is one configured model: its graphs, compiled programs and state tensors.
type session struct {
	lay  *modelspec.Layout
	net  *net
	prog *programs
	opt  backendkit.Optimizer
	// state holds one engine tensor per parameter for each role (parameters, Adam
	// moments, gradients), in the layout's order.
	state paramstate.Roles[[]*tensors.Tensor]
}

var (
	_ backendkit.Trainer   = (*session)(nil)
	_ backendkit.KVSession = (*session)(nil)
)

// newSession builds cfg's model on be with zeroed state. sliceAlways takes the Slice path
// even where be lacks Pad (see engine.sliceAlways).
func newSession(be backends.Backend, cfg backendkit.SessionConfig, sliceAlways bool) (*session, error) {
	ops := be.Capabilities().Operations
	n := &net{a: cfg.Arch, lay: cfg.Layout, noPad: !ops[backends.OpTypePad] && !sliceAlways,
		noDUS: !ops[backends.OpTypeDynamicUpdateSlice], compute: dtypes.Float32}
	if cfg.Compute == pb.DType_DTYPE_BF16 {
		n.compute = dtypes.BFloat16
	}
	prog, err := newPrograms(be, n)
	if err != nil {
		return nil, fmt.Errorf("configure: %w", err)
	}
	s := &session{lay: cfg.Layout, net: n, prog: prog, opt: cfg.Optimizer}
	for _, role := range s.roles() {
		*role = make([]*tensors.Tensor, len(cfg.Layout.Params))
		for i, p := range cfg.Layout.Params {
			(*role)[i] = zeros(p)
		}
	}
	return s, nil
}

// roles are the four state lists.
func (s *session) roles() []*[]*tensors.Tensor {
	return []*[]*tensors.Tensor{&s.state.Param, &s.state.AdamM, &s.state.AdamV, &s.state.Grad}
}

// zeros is a new zero-filled host tensor of p's shape.
func zeros(p modelspec.Param) *tensors.Tensor {
	return tensors.FromShape(shapes.Make(dtypes.Float32, toInts(p.Shape)...))
}

func toInts(s []int64) []int {
	out := make([]int, len(s))
	for i, v := range s {
		out[i] = int(v)
	}
	return out
}

// Close implements backendkit.Session (the kit has released the caches).
func (s *session) Close() error {
	for _, role := range s.roles() {
		freeAll(*role)
	}
	s.prog.close()
	return nil
}

func freeAll(ts []*tensors.Tensor) {
	for _, t := range ts {
		if t != nil {
			_ = t.FinalizeAll()
		}
	}
}

// ZeroGrads implements backendkit.Trainer.
func (s *session) ZeroGrads() error {
	for i, p := range s.lay.Params {
		old := s.state.Grad[i]
		s.state.Grad[i] = zeros(p)
		_ = old.FinalizeAll()
	}
	return nil
}

// hostCopy copies a tensor's values to the host.
func hostCopy[T dtypes.Supported](t *tensors.Tensor) (out []T, err error) {
	err = tensors.ConstFlatData(t, func(flat []T) { out = slices.Clone(flat) })
	return out, err
}

// targetsFor returns the targets with ignored (weight 0) entries replaced by 0, so
// out-of-range ids there cannot reach the gather of the target logit.
func targetsFor(b *backendkit.Batch) []int32 {
	tg := slices.Clone(b.Targets)
	for i, w := range b.Weights {
		if w == 0 {
			tg[i] = 0
		}
	}
	return tg
}

// stateArgs are the tensors of the given state lists, list after list, as program
// arguments.
func stateArgs(lists ...[]*tensors.Tensor) []any {
	var args []any
	for _, l := range lists {
		args = appendArgs(args, l...)
	}
	return args
}

// rngState turns a dropout seed into the RNG state of GoMLX's RandomUniform.
func rngState(seed uint64) (*tensors.Tensor, error) {
	t, err := graph.RNGStateFromSeed(int64(seed))
	if err != nil {
		return nil, fmt.Errorf("dropout rng state: %w", err)
	}
	return t, nil
}

// ForwardBackward implements backendkit.Trainer: one training micro-batch, accumulating
// gradScale·∂loss_sum/∂θ inside the program.
func (s *session) ForwardBackward(_ context.Context, b *backendkit.Batch, gradScale float32, seed uint64) (backendkit.Totals, error) {
	in := []*tensors.Tensor{
		tensors.FromFlatDataAndDimensions(b.Tokens, b.B, b.T),
		tensors.FromFlatDataAndDimensions(targetsFor(b), b.B, b.T),
		tensors.FromFlatDataAndDimensions(b.Weights, b.B, b.T),
		tensors.FromScalar(gradScale)}
	in = append(in, s.prog.batchInputs(b.Positions, b.Segments, b.B, b.T)...)
	if s.prog.random {
		rng, err := rngState(seed)
		if err != nil {
			freeAll(in)
			return backendkit.Totals{}, err
		}
		in = append(in, rng)
	}
	defer freeAll(in)
	ce, grads, err := runAndRead(s.prog.train, appendArgs(stateArgs(s.state.Param, s.state.Grad), in...), "forward_backward loss")
	if err != nil {
		return backendkit.Totals{}, err
	}
	freeAll(s.state.Grad)
	copy(s.state.Grad, grads)
	var t backendkit.Totals
	t.LossSum, t.WeightSum = weighted(ce, b.Weights)
	return t, nil
}

// weighted returns Σ w·ce and Σ w in float64 over positions with w > 0.
func weighted(ce, w []float32) (lossSum, weightSum float64) {
	for i, x := range w {
		if x > 0 {
			lossSum += float64(x) * float64(ce[i])
			weightSum += float64(x)
		}
	}
	return lossSum, weightSum
}

// OptimizerStep implements backendkit.Trainer: clipping, AdamW and zeroed gradients in one
// compiled program.
func (s *session) OptimizerStep(_ context.Context, st backendkit.Step) (float64, error) {
	in := []*tensors.Tensor{tensors.FromFlatDataAndDimensions(s.hyper(st), numHyper), tensors.FromScalar(st.ClipNorm)}
	defer freeAll(in)
	out, err := run(s.prog.opt, appendArgs(stateArgs(s.state.Param, s.state.Grad, s.state.AdamM, s.state.AdamV), in...))
	if err != nil {
		return 0, err
	}
	np := len(s.lay.Params)
	norm, err := hostCopy[float64](out[4*np])
	_ = out[4*np].FinalizeAll()
	if err != nil {
		freeAll(out[:4*np])
		return 0, fmt.Errorf("optimizer_step norm: %w", err)
	}
	// the program's outputs: parameters, moments, zeroed gradients (optGraph)
	for k, dst := range [][]*tensors.Tensor{s.state.Param, s.state.AdamM, s.state.AdamV, s.state.Grad} {
		freeAll(dst)
		copy(dst, out[k*np:(k+1)*np])
	}
	return norm[0], nil
}

// hyper is the optimizer program's f32 hyper-parameter vector for step st; the bias
// corrections are computed here in float64, as backends/cpu does.
func (s *session) hyper(st backendkit.Step) []float32 {
	o := s.opt
	lr, wd := st.LearningRate, st.WeightDecay
	bc1 := 1 - math.Pow(o.Beta1, float64(st.Number))
	bc2 := 1 - math.Pow(o.Beta2, float64(st.Number))
	b1, b2 := float32(o.Beta1), float32(o.Beta2)
	h := make([]float32, numHyper)
	h[hB1], h[hC1], h[hB2], h[hC2] = b1, 1-b1, b2, 1-b2
	h[hBC2Sqrt] = float32(math.Sqrt(bc2))
	h[hEps] = float32(o.Eps)
	h[hStepSize] = float32(lr / bc1)
	h[hDecay] = float32(1 - lr*wd)
	return h
}

// Evaluate implements backendkit.Session. The program without logits runs when none are
// asked for, so the [B,T,V] logits never leave the device then.
func (s *session) Evaluate(_ context.Context, b *backendkit.Batch, rows []int) (backendkit.Totals, []float32, error) {
	in := []*tensors.Tensor{
		tensors.FromFlatDataAndDimensions(b.Tokens, b.B, b.T),
		tensors.FromFlatDataAndDimensions(targetsFor(b), b.B, b.T)}
	in = append(in, s.prog.batchInputs(b.Positions, b.Segments, b.B, b.T)...)
	defer freeAll(in)
	e := s.prog.eval
	if rows != nil {
		e = s.prog.evalLog
	}
	out, err := run(e, appendArgs(stateArgs(s.state.Param), in...))
	if err != nil {
		return backendkit.Totals{}, nil, err
	}
	defer freeAll(out)
	t, err := evalTotals(out[0], out[1], b)
	if err != nil || rows == nil {
		return t, nil, err
	}
	all, err := hostCopy[float32](out[2])
	if err != nil {
		return backendkit.Totals{}, nil, fmt.Errorf("evaluate logits: %w", err)
	}
	return t, pickRows(all, rows, s.net.a.VocabSize), nil
}

// evalTotals sums the evaluate program's per-token CE and argmax over b's weighted
// positions.
func evalTotals(ceT, argmaxT *tensors.Tensor, b *backendkit.Batch) (backendkit.Totals, error) {
	var t backendkit.Totals
	ce, err := hostCopy[float32](ceT)
	if err != nil {
		return t, fmt.Errorf("evaluate loss: %w", err)
	}
	am, err := hostCopy[int32](argmaxT)
	if err != nil {
		return t, fmt.Errorf("evaluate argmax: %w", err)
	}
	t.LossSum, t.WeightSum = weighted(ce, b.Weights)
	for i, w := range b.Weights {
		if w > 0 {
			t.Counted++
			if am[i] == b.Targets[i] {
				t.Correct++
			}
		}
	}
	return t, nil
}

// pickRows returns the logits of the flat positions rows (V values each, in order) out of
// all positions' logits. Every position in order, what return_logits without
// logit_positions asks for, is all itself: no copy of a [B,T,V] slice.
func pickRows(all []float32, rows []int, V int) []float32 {
	if len(rows)*V == len(all) && isIdentity(rows) {
		return all
	}
	out := make([]float32, 0, len(rows)*V)
	for _, r := range rows {
		out = append(out, all[r*V:(r+1)*V]...)
	}
	return out
}

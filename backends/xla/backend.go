// Package xla is mypt's XLA backend: the GPT-2 / LLaMA style transformer of backends/cpu
// written as a GoMLX (v0.25.0) graph, differentiated by GoMLX's reverse-mode autodiff and
// compiled by XLA through PJRT (github.com/gomlx/gopjrt). With a PJRT plugin (a .so such as
// JAX's CUDA plugin) it runs on that device; without one it runs the very same graphs on
// GoMLX's pure-Go simplego engine, which is how CI tests it.
//
// Parameters, gradients and AdamW moments live as engine tensors (device memory under
// PJRT). Every call is one compiled program: forward+backward with in-graph gradient
// accumulation, evaluation, clipping+AdamW, KV-cache prefill and decode; each compiles once
// per input shape (batch, seq_len, cache capacity) and is cached. See docs/XLA.md.
package xla

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"os"
	"slices"
	"sync"

	"github.com/gomlx/gomlx/backends"
	"github.com/gomlx/gomlx/pkg/core/shapes"
	"github.com/gomlx/gomlx/pkg/core/tensors"
	"github.com/gomlx/gopjrt/dtypes"

	"github.com/mypt/mypt/sdk"
	"github.com/mypt/mypt/sdk/modelspec"
	"github.com/mypt/mypt/sdk/paramstate"
	pb "github.com/mypt/mypt/sdk/proto/backendv1"
)

// Version is the backend's own semantic version.
const Version = "0.1.0"

// Options configure a Backend.
type Options struct {
	// PJRTPlugin is the path of a PJRT plugin .so to run on; empty runs GoMLX's pure-Go
	// simplego engine.
	PJRTPlugin string
	// Logger receives diagnostics; nil means slog.Default().
	Logger *slog.Logger
}

// OptionsFromEnv reads the plugin path from $PJRT_PLUGIN_LIBRARY_PATH.
func OptionsFromEnv() Options {
	return Options{PJRTPlugin: os.Getenv(PluginEnv)}
}

// Backend implements sdk.Backend with GoMLX. Calls are serialised by a mutex.
type Backend struct {
	sdk.UnimplementedProfiles
	opts Options
	log  *slog.Logger

	mu      sync.Mutex
	eng     *engine // started on first use
	engErr  error
	session *session // nil before Configure and after Shutdown
}

// session is everything one Configure builds.
type session struct {
	a      modelspec.Arch
	lay    *modelspec.Layout
	net    *net
	prog   *programs
	beta1  float64
	beta2  float64
	eps    float64
	steps  uint64
	state  [4][]*tensors.Tensor // by role index: params, grads, adam m, adam v
	caches sdk.CacheTable[*kvCache]
}

const (
	roleParam = iota
	roleGrad
	roleM
	roleV
)

// New returns an XLA backend; the engine starts on first use.
func New(opts Options) *Backend {
	l := opts.Logger
	if l == nil {
		l = slog.Default()
	}
	return &Backend{opts: opts, log: l}
}

var _ sdk.Backend = (*Backend)(nil)

// engineLocked starts the engine once; b.mu must be held.
func (b *Backend) engineLocked() (*engine, error) {
	if b.eng == nil && b.engErr == nil {
		b.eng, b.engErr = newEngine(b.opts.PJRTPlugin)
		if b.engErr != nil {
			b.engErr = sdk.FailedPrecondition("xla engine: %v", b.engErr)
		} else {
			b.log.Debug("xla backend engine started", "engine", b.eng.name, "device", b.eng.device.Name)
		}
	}
	return b.eng, b.engErr
}

// GetInfo describes the backend and the engine in use.
func (b *Backend) GetInfo(context.Context, *pb.GetInfoRequest) (*pb.GetInfoResponse, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	eng, err := b.engineLocked()
	if err != nil {
		return nil, err
	}
	features := []pb.Feature{pb.Feature_FEATURE_TRAINING, pb.Feature_FEATURE_DROPOUT,
		pb.Feature_FEATURE_KV_CACHE, pb.Feature_FEATURE_PACKED_SEGMENTS, pb.Feature_FEATURE_NEFTUNE,
		pb.Feature_FEATURE_RETURN_LOGITS, pb.Feature_FEATURE_GRADIENT_STATE, pb.Feature_FEATURE_FROZEN_PARAMS}
	if eng.deterministic {
		features = append(features, pb.Feature_FEATURE_DETERMINISTIC)
	}
	return &pb.GetInfoResponse{
		Name: "xla", Version: Version, ProtocolVersion: sdk.ProtocolVersion,
		Devices: []*pb.Device{eng.device},
		Capabilities: &pb.Capabilities{
			PosEncodings:       []pb.PosEncoding{pb.PosEncoding_POS_ENCODING_LEARNED, pb.PosEncoding_POS_ENCODING_ROPE},
			MlpTypes:           []pb.MLPType{pb.MLPType_MLP_TYPE_GELU, pb.MLPType_MLP_TYPE_SWIGLU},
			NormTypes:          []pb.NormType{pb.NormType_NORM_TYPE_LAYERNORM, pb.NormType_NORM_TYPE_RMSNORM},
			ParamDtypes:        []pb.DType{pb.DType_DTYPE_F32},
			ComputeDtypes:      eng.computeDTypes(),
			Features:           features,
			MaxStateChunkBytes: uint64(sdk.MaxChunkBytes),
		},
		Engine: eng.name,
	}, nil
}

// Configure builds the model, its programs and zeroed state, discarding any previous session.
func (b *Backend) Configure(_ context.Context, req *pb.ConfigureRequest) (*pb.ConfigureResponse, error) {
	a, err := modelspec.Validate(req.GetModel())
	if err != nil {
		return nil, err
	}
	lay, err := modelspec.NewLayout(a, req.GetModel().GetParams())
	if err != nil {
		return nil, err
	}
	o := req.GetOptimizer()
	if err := sdk.ValidateOptimizer(o); err != nil {
		return nil, err
	}

	b.mu.Lock()
	defer b.mu.Unlock()
	eng, err := b.engineLocked()
	if err != nil {
		return nil, err
	}
	if req.Deterministic && !eng.deterministic {
		return nil, sdk.Unimplemented("deterministic mode (FEATURE_DETERMINISTIC) on the " + eng.name + " engine")
	}
	compute, err := sdk.ValidatePrecision(req.GetPrecision(), eng.computeDTypes())
	if err != nil {
		return nil, err
	}
	b.closeSession()
	ops := eng.be.Capabilities().Operations
	n := &net{a: a, lay: lay, noPad: !ops[backends.OpTypePad], noDUS: !ops[backends.OpTypeDynamicUpdateSlice],
		compute: dtypes.Float32}
	if compute == pb.DType_DTYPE_BF16 {
		n.compute = dtypes.BFloat16
	}
	prog, err := newPrograms(eng.be, n)
	if err != nil {
		return nil, fmt.Errorf("configure: %w", err)
	}
	s := &session{a: a, lay: lay, net: n, prog: prog, beta1: o.Beta1, beta2: o.Beta2, eps: o.Eps}
	for r := range s.state {
		s.state[r] = make([]*tensors.Tensor, len(lay.Params))
		for i, p := range lay.Params {
			s.state[r][i] = zeros(p)
		}
	}
	b.session = s
	return &pb.ConfigureResponse{ParameterCount: uint64(lay.Total), MemoryBytes: uint64(4 * 4 * lay.Total)}, nil
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

func (s *session) close() {
	for c := range s.caches.All() {
		c.free()
	}
	for _, role := range s.state {
		freeAll(role)
	}
	s.prog.close()
}

func freeAll(ts []*tensors.Tensor) {
	for _, t := range ts {
		if t != nil {
			_ = t.FinalizeAll()
		}
	}
}

func (b *Backend) closeSession() {
	if b.session != nil {
		b.session.close()
		b.session = nil
	}
}

// Shutdown frees the session; the engine stays up for a later Configure.
func (b *Backend) Shutdown(context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closeSession()
	return nil
}

func (b *Backend) lockSession() (*session, error) {
	b.mu.Lock()
	if b.session == nil {
		b.mu.Unlock()
		return nil, sdk.FailedPrecondition("backend is not configured: call Configure first")
	}
	return b.session, nil
}

func roleIndex(r pb.TensorRole) int {
	switch r {
	case pb.TensorRole_TENSOR_ROLE_PARAM:
		return roleParam
	case pb.TensorRole_TENSOR_ROLE_GRAD:
		return roleGrad
	case pb.TensorRole_TENSOR_ROLE_ADAM_M:
		return roleM
	case pb.TensorRole_TENSOR_ROLE_ADAM_V:
		return roleV
	}
	return -1
}

// SetState loads named tensors and clears the accumulated gradients.
func (b *Backend) SetState(_ context.Context, r sdk.StateReader) (*pb.SetStateResponse, error) {
	s, err := b.lockSession()
	if err != nil {
		return nil, err
	}
	defer b.mu.Unlock()
	if h := r.Header(); h != nil {
		s.steps = h.OptimizerSteps
	}
	count, err := paramstate.Receive(r, s.lay, s)
	if err != nil {
		return nil, err
	}
	s.zeroGrads()
	return &pb.SetStateResponse{TensorsReceived: count}, nil
}

func (s *session) zeroGrads() {
	for i, p := range s.lay.Params {
		old := s.state[roleGrad][i]
		s.state[roleGrad][i] = zeros(p)
		_ = old.FinalizeAll()
	}
}

// GetState writes the requested tensors in the host's parameter order.
func (b *Backend) GetState(_ context.Context, req *pb.GetStateRequest, w sdk.StateWriter) error {
	s, err := b.lockSession()
	if err != nil {
		return err
	}
	defer b.mu.Unlock()
	return paramstate.Send(req, w, s.lay, s.steps, s)
}

// hostCopy copies a tensor's values to the host.
func hostCopy[T dtypes.Supported](t *tensors.Tensor) (out []T, err error) {
	err = tensors.ConstFlatData(t, func(flat []T) { out = slices.Clone(flat) })
	return out, err
}

// targetsFor returns the targets with ignored (weight 0) entries replaced by 0, so
// out-of-range ids there cannot reach the gather of the target logit.
func targetsFor(bt *pb.Batch) []int32 {
	tg := slices.Clone(bt.Targets)
	for i, w := range bt.LossWeights {
		if w == 0 {
			tg[i] = 0
		}
	}
	return tg
}

// stateArgs are the state tensors of roles, role after role, as program arguments.
func (s *session) stateArgs(roles ...int) []any {
	args := make([]any, 0, len(roles)*len(s.lay.Params))
	for _, r := range roles {
		args = appendArgs(args, s.state[r]...)
	}
	return args
}

// ForwardBackward runs one training micro-batch and accumulates grad_scale·∂loss_sum/∂θ.
func (b *Backend) ForwardBackward(_ context.Context, req *pb.ForwardBackwardRequest) (*pb.ForwardBackwardResponse, error) {
	s, err := b.lockSession()
	if err != nil {
		return nil, err
	}
	defer b.mu.Unlock()
	bt := req.GetBatch()
	if err := sdk.ValidateBatch("batch", bt, s.a.VocabSize, s.a.BlockSize); err != nil {
		return nil, err
	}
	if g := float64(req.GradScale); math.IsNaN(g) || math.IsInf(g, 0) {
		return nil, sdk.InvalidArgument("grad_scale", "must be finite, got %v", req.GradScale)
	}
	B, T := int(bt.BatchSize), int(bt.SeqLen)
	in := []*tensors.Tensor{
		tensors.FromFlatDataAndDimensions(bt.Tokens, B, T),
		tensors.FromFlatDataAndDimensions(targetsFor(bt), B, T),
		tensors.FromFlatDataAndDimensions(bt.LossWeights, B, T),
		tensors.FromScalar(req.GradScale)}
	in = append(in, s.prog.batchInputs(B, T, bt.SegmentIds)...)
	if s.prog.random {
		rng, err := rngState(req.DropoutSeed)
		if err != nil {
			freeAll(in)
			return nil, err
		}
		in = append(in, rng)
	}
	defer freeAll(in)
	ce, grads, err := runAndRead(s.prog.train, appendArgs(s.stateArgs(roleParam, roleGrad), in...), "forward_backward loss")
	if err != nil {
		return nil, err
	}
	freeAll(s.state[roleGrad])
	copy(s.state[roleGrad], grads)
	lossSum, weightSum := weighted(ce, bt.LossWeights)
	return &pb.ForwardBackwardResponse{LossSum: lossSum, WeightSum: weightSum, Tokens: uint64(B * T)}, nil
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

// OptimizerStep clips, applies AdamW and zeroes the gradients, in one compiled program.
func (b *Backend) OptimizerStep(_ context.Context, req *pb.OptimizerStepRequest) (*pb.OptimizerStepResponse, error) {
	s, err := b.lockSession()
	if err != nil {
		return nil, err
	}
	defer b.mu.Unlock()
	if err := sdk.ValidateOptimizerStep(req); err != nil {
		return nil, err
	}
	lr, wd := req.LearningRate, req.WeightDecay
	steps := s.steps + 1
	bc1 := 1 - math.Pow(s.beta1, float64(steps))
	bc2 := 1 - math.Pow(s.beta2, float64(steps))
	b1, b2 := float32(s.beta1), float32(s.beta2)
	hyper := make([]float32, numHyper)
	hyper[hB1], hyper[hC1], hyper[hB2], hyper[hC2] = b1, 1-b1, b2, 1-b2
	hyper[hBC2Sqrt] = float32(math.Sqrt(bc2))
	hyper[hEps] = float32(s.eps)
	hyper[hStepSize] = float32(lr / bc1)
	hyper[hDecay] = float32(1 - lr*wd)
	clip := req.ClipNorm
	if math.IsInf(clip, 1) {
		clip = 0 // +Inf never clips
	}
	in := []*tensors.Tensor{tensors.FromFlatDataAndDimensions(hyper, numHyper), tensors.FromScalar(clip)}
	defer freeAll(in)
	out, err := run(s.prog.opt, appendArgs(s.stateArgs(roleParam, roleGrad, roleM, roleV), in...))
	if err != nil {
		return nil, err
	}
	np := len(s.lay.Params)
	norm, err := hostCopy[float64](out[4*np])
	_ = out[4*np].FinalizeAll()
	if err != nil {
		freeAll(out[:4*np])
		return nil, fmt.Errorf("optimizer_step norm: %w", err)
	}
	for k, r := range []int{roleParam, roleM, roleV, roleGrad} {
		freeAll(s.state[r])
		copy(s.state[r], out[k*np:(k+1)*np])
	}
	s.steps = steps
	return &pb.OptimizerStepResponse{GradNorm: norm[0], OptimizerSteps: s.steps}, nil
}

// Evaluate runs one batch without dropout or gradients.
func (b *Backend) Evaluate(_ context.Context, req *pb.EvaluateRequest) (*pb.EvaluateResponse, error) {
	s, err := b.lockSession()
	if err != nil {
		return nil, err
	}
	defer b.mu.Unlock()
	bt := req.GetBatch()
	if err := sdk.ValidateBatch("batch", bt, s.a.VocabSize, s.a.BlockSize); err != nil {
		return nil, err
	}
	B, T := int(bt.BatchSize), int(bt.SeqLen)
	in := []*tensors.Tensor{
		tensors.FromFlatDataAndDimensions(bt.Tokens, B, T),
		tensors.FromFlatDataAndDimensions(targetsFor(bt), B, T)}
	in = append(in, s.prog.batchInputs(B, T, bt.SegmentIds)...)
	defer freeAll(in)
	e := s.prog.eval
	if req.ReturnLogits {
		e = s.prog.evalLog
	}
	out, err := run(e, appendArgs(s.stateArgs(roleParam), in...))
	if err != nil {
		return nil, err
	}
	defer freeAll(out)
	ce, err := hostCopy[float32](out[0])
	if err != nil {
		return nil, fmt.Errorf("evaluate loss: %w", err)
	}
	am, err := hostCopy[int32](out[1])
	if err != nil {
		return nil, fmt.Errorf("evaluate argmax: %w", err)
	}
	resp := &pb.EvaluateResponse{}
	resp.LossSum, resp.WeightSum = weighted(ce, bt.LossWeights)
	for i, w := range bt.LossWeights {
		if w > 0 {
			resp.Counted++
			if am[i] == bt.Targets[i] {
				resp.Correct++
			}
		}
	}
	if req.ReturnLogits {
		if resp.Logits, err = hostCopy[float32](out[2]); err != nil {
			return nil, fmt.Errorf("evaluate logits: %w", err)
		}
	}
	return resp, nil
}

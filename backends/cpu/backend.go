// Package cpu is mypt's pure-Go reference backend: GPT-2 and LLaMA style transformers with
// explicit per-layer backward passes, AdamW, gradient clipping and a KV cache, all in
// float32 on the CPU. It is the numerical reference other backends are held to and the
// default backend when there is no GPU. Matrix products go through backends/cpu/gemm;
// other loops are spread over a small worker pool.
package cpu

import (
	"context"
	"fmt"
	"math"
	"runtime"
	"slices"
	"sync"

	"github.com/mypt/mypt/backends/cpu/gemm"
	"github.com/mypt/mypt/sdk"
	"github.com/mypt/mypt/sdk/modelspec"
	"github.com/mypt/mypt/sdk/paramstate"
	pb "github.com/mypt/mypt/sdk/proto/backendv1"
)

// Version is the backend's own semantic version.
const Version = "0.1.0"

// computeDTypes are the compute dtypes the backend declares and accepts.
func computeDTypes() []pb.DType { return []pb.DType{pb.DType_DTYPE_F32} }

// Options configure a Backend.
type Options struct {
	// Threads is the number of cores to compute on; 0 means runtime.GOMAXPROCS(0).
	Threads int
}

// Backend implements sdk.Backend on the CPU. Calls are serialised by a mutex.
type Backend struct {
	sdk.UnimplementedBackend
	threads int

	mu      sync.Mutex
	session *session // nil before Configure and after Shutdown
}

// session is everything one Configure builds.
type session struct {
	spec    *pb.ModelSpec
	model   *model[float32]
	opt     optimizer
	pool    *pool
	engine  *gemm.Engine
	workers []*gemm.Engine
	partial []float64
	caches  sdk.CacheTable[*kvCache]
}

// New returns a CPU backend.
func New(opts Options) *Backend {
	t := opts.Threads
	if t <= 0 {
		t = runtime.GOMAXPROCS(0)
	}
	return &Backend{threads: t}
}

var _ sdk.Backend = (*Backend)(nil)

// GetInfo describes the backend.
func (b *Backend) GetInfo(context.Context, *pb.GetInfoRequest) (*pb.GetInfoResponse, error) {
	eng := gemm.New(1)
	kernel := eng.Kernel()
	eng.Close()
	return &pb.GetInfoResponse{
		Name: "cpu", Version: Version, ProtocolVersion: sdk.ProtocolVersion,
		Devices: []*pb.Device{{Kind: "cpu", Name: runtime.GOARCH, Cores: uint32(b.threads)}},
		Capabilities: &pb.Capabilities{
			PosEncodings:  []pb.PosEncoding{pb.PosEncoding_POS_ENCODING_LEARNED, pb.PosEncoding_POS_ENCODING_ROPE},
			MlpTypes:      []pb.MLPType{pb.MLPType_MLP_TYPE_GELU, pb.MLPType_MLP_TYPE_SWIGLU},
			NormTypes:     []pb.NormType{pb.NormType_NORM_TYPE_LAYERNORM, pb.NormType_NORM_TYPE_RMSNORM},
			ParamDtypes:   []pb.DType{pb.DType_DTYPE_F32},
			ComputeDtypes: computeDTypes(),
			Features: []pb.Feature{pb.Feature_FEATURE_TRAINING, pb.Feature_FEATURE_DROPOUT,
				pb.Feature_FEATURE_KV_CACHE, pb.Feature_FEATURE_PACKED_SEGMENTS, pb.Feature_FEATURE_NEFTUNE,
				pb.Feature_FEATURE_RETURN_LOGITS, pb.Feature_FEATURE_GRADIENT_STATE, pb.Feature_FEATURE_FROZEN_PARAMS,
				// Work is split by sizes and the fixed thread count only, and every
				// reduction runs in a fixed order, so results are bit-identical
				// run to run (for the same thread count).
				pb.Feature_FEATURE_DETERMINISTIC},
			MaxStateChunkBytes: uint64(sdk.MaxChunkBytes),
		},
		Engine: "pure-go gemm " + kernel,
	}, nil
}

// Configure builds the model and optimizer, discarding any previous session.
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
	if _, err := sdk.ValidatePrecision(req.GetPrecision(), computeDTypes()); err != nil {
		return nil, err
	}

	b.mu.Lock()
	defer b.mu.Unlock()
	b.closeSession()
	s := &session{spec: req.GetModel()}
	s.pool = newPool(b.threads)
	s.engine = gemm.New(b.threads)
	workerMM := make([]gemmFunc[float32], b.threads)
	for i := range workerMM {
		e := gemm.New(1)
		s.workers = append(s.workers, e)
		workerMM[i] = e.Sgemm
	}
	s.partial = make([]float64, b.threads)
	s.model = newModel(a, lay, s.pool, s.engine.Sgemm, workerMM)
	s.opt = optimizer{beta1: o.Beta1, beta2: o.Beta2, eps: o.Eps,
		m: make([]float32, lay.Total), v: make([]float32, lay.Total)}
	maxB, maxT := int(req.MaxBatchSize), int(req.MaxSeqLen)
	if maxT == 0 || maxT > a.BlockSize {
		maxT = a.BlockSize
	}
	if maxB > 0 {
		s.model.ensure(maxB, maxT, a.Dropout > 0)
	}
	b.session = s
	return &pb.ConfigureResponse{ParameterCount: uint64(lay.Total), MemoryBytes: uint64(4 * 4 * lay.Total)}, nil
}

func (b *Backend) closeSession() {
	if b.session == nil {
		return
	}
	b.session.pool.close()
	b.session.engine.Close()
	for _, e := range b.session.workers {
		e.Close()
	}
	b.session = nil
}

// Shutdown frees everything.
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

// roleBuffer returns the flat buffer holding a role's tensors.
func (s *session) roleBuffer(role pb.TensorRole) []float32 {
	switch role {
	case pb.TensorRole_TENSOR_ROLE_PARAM:
		return s.model.params
	case pb.TensorRole_TENSOR_ROLE_ADAM_M:
		return s.opt.m
	case pb.TensorRole_TENSOR_ROLE_ADAM_V:
		return s.opt.v
	case pb.TensorRole_TENSOR_ROLE_GRAD:
		return s.model.grads
	}
	return nil
}

// session is the paramstate.Store of the state calls: a role's tensors are ranges of
// its flat buffer.
var _ paramstate.Store = (*session)(nil)

func (s *session) Has(role pb.TensorRole) bool { return s.roleBuffer(role) != nil }

func (s *session) Load(role pb.TensorRole, i int, values []float32) error {
	p := s.model.lay.Params[i]
	copy(s.roleBuffer(role)[p.Offset:p.Offset+p.Size], values)
	return nil
}

func (s *session) Values(role pb.TensorRole, i int) ([]float32, error) {
	p := s.model.lay.Params[i]
	return s.roleBuffer(role)[p.Offset : p.Offset+p.Size], nil
}

// SetState loads named tensors and clears the accumulated gradients.
func (b *Backend) SetState(_ context.Context, r sdk.StateReader) (*pb.SetStateResponse, error) {
	s, err := b.lockSession()
	if err != nil {
		return nil, err
	}
	defer b.mu.Unlock()
	if h := r.Header(); h != nil {
		s.opt.steps = h.OptimizerSteps
	}
	count, err := paramstate.Receive(r, s.model.lay, s)
	if err != nil {
		return nil, err
	}
	clear(s.model.grads)
	return &pb.SetStateResponse{TensorsReceived: count}, nil
}

// GetState writes the requested tensors in the host's parameter order.
func (b *Backend) GetState(_ context.Context, req *pb.GetStateRequest, w sdk.StateWriter) error {
	s, err := b.lockSession()
	if err != nil {
		return err
	}
	defer b.mu.Unlock()
	return paramstate.Send(req, w, s.model.lay, s.opt.steps, s)
}

// validateBatch checks a batch against the model; field paths start with prefix.
func validateBatch(a modelspec.Arch, bt *pb.Batch, prefix string, needTargets bool) (pass, error) {
	if bt == nil {
		return pass{}, sdk.InvalidArgument(prefix, "missing")
	}
	B, T := int(bt.BatchSize), int(bt.SeqLen)
	if B < 1 {
		return pass{}, sdk.InvalidArgument(prefix+".batch_size", "must be ≥ 1, got %d", B)
	}
	if T < 1 || T > a.BlockSize {
		return pass{}, sdk.InvalidArgument(prefix+".seq_len", "must be in [1, block_size=%d], got %d", a.BlockSize, T)
	}
	n := B * T
	check := func(field string, got int) error {
		if got != n {
			return sdk.InvalidArgument(prefix+"."+field, "has %d entries, want batch_size·seq_len = %d", got, n)
		}
		return nil
	}
	if err := check("tokens", len(bt.Tokens)); err != nil {
		return pass{}, err
	}
	for i, tok := range bt.Tokens {
		if tok < 0 || int(tok) >= a.VocabSize {
			return pass{}, sdk.InvalidArgument(fmt.Sprintf("%s.tokens[%d]", prefix, i), "token id %d is outside [0, %d)", tok, a.VocabSize)
		}
	}
	if needTargets {
		if err := check("loss_weights", len(bt.LossWeights)); err != nil {
			return pass{}, err
		}
		if err := check("targets", len(bt.Targets)); err != nil {
			return pass{}, err
		}
		for i, w := range bt.LossWeights {
			if !(w >= 0) || math.IsInf(float64(w), 0) {
				return pass{}, sdk.InvalidArgument(fmt.Sprintf("%s.loss_weights[%d]", prefix, i), "weight %v must be finite and ≥ 0", w)
			}
			if tg := bt.Targets[i]; w > 0 && (tg < 0 || int(tg) >= a.VocabSize) {
				return pass{}, sdk.InvalidArgument(fmt.Sprintf("%s.targets[%d]", prefix, i), "target id %d is outside [0, %d)", tg, a.VocabSize)
			}
		}
	}
	ps := pass{b: B, t: T, tokens: bt.Tokens}
	if len(bt.SegmentIds) > 0 {
		if err := check("segment_ids", len(bt.SegmentIds)); err != nil {
			return pass{}, err
		}
		ps.segs = bt.SegmentIds
	}
	return ps, nil
}

// ForwardBackward runs one training micro-batch and accumulates its gradients.
func (b *Backend) ForwardBackward(_ context.Context, req *pb.ForwardBackwardRequest) (*pb.ForwardBackwardResponse, error) {
	s, err := b.lockSession()
	if err != nil {
		return nil, err
	}
	defer b.mu.Unlock()
	ps, err := validateBatch(s.model.a, req.GetBatch(), "batch", true)
	if err != nil {
		return nil, err
	}
	if g := float64(req.GradScale); math.IsNaN(g) || math.IsInf(g, 0) {
		return nil, sdk.InvalidArgument("grad_scale", "must be finite, got %v", req.GradScale)
	}
	ps.train, ps.seed = true, req.DropoutSeed
	tot := s.model.forwardBackward(ps, req.Batch.Targets, req.Batch.LossWeights, float64(req.GradScale))
	return &pb.ForwardBackwardResponse{LossSum: tot.lossSum, WeightSum: tot.weightSum, Tokens: uint64(ps.b * ps.t)}, nil
}

// OptimizerStep clips, applies AdamW and zeroes the gradients.
func (b *Backend) OptimizerStep(_ context.Context, req *pb.OptimizerStepRequest) (*pb.OptimizerStepResponse, error) {
	s, err := b.lockSession()
	if err != nil {
		return nil, err
	}
	defer b.mu.Unlock()
	if err := sdk.ValidateOptimizerStep(req); err != nil {
		return nil, err
	}
	norm := s.opt.step(s.pool, s.model.lay, s.model.params, s.model.grads, req.LearningRate, req.WeightDecay, req.ClipNorm, s.partial)
	return &pb.OptimizerStepResponse{GradNorm: norm, OptimizerSteps: s.opt.steps}, nil
}

// Evaluate runs one batch without dropout or gradients.
func (b *Backend) Evaluate(_ context.Context, req *pb.EvaluateRequest) (*pb.EvaluateResponse, error) {
	s, err := b.lockSession()
	if err != nil {
		return nil, err
	}
	defer b.mu.Unlock()
	ps, err := validateBatch(s.model.a, req.GetBatch(), "batch", true)
	if err != nil {
		return nil, err
	}
	s.model.forward(ps)
	n := ps.b * ps.t
	resp := &pb.EvaluateResponse{}
	if req.ReturnLogits {
		resp.Logits = slices.Clone(s.model.x.logits[:n*s.model.a.VocabSize])
	}
	tot := s.model.lossAndGrad(n, req.Batch.Targets, req.Batch.LossWeights, 0, false)
	resp.LossSum, resp.WeightSum, resp.Correct, resp.Counted = tot.lossSum, tot.weightSum, tot.correct, tot.counted
	return resp, nil
}

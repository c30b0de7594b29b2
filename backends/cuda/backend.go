// Package cuda is mypt's CUDA backend (plugin mypt-backend-cuda): hand-written CUDA kernels
// (backends/cuda/kernels, compiled at run time by NVRTC) and cuBLASLt matrix products,
// driven from Go through run-time bindings (backends/cuda/driver, no cgo). The step
// orchestration in model.go runs unchanged on backends/cuda/device's Fake device, which is
// how CI checks it against the PyTorch golden vectors without a GPU. Semantics follow the
// CPU reference backend (docs/CPU_BACKEND.md); see docs/CUDA.md.
package cuda

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"sync"

	"github.com/mypt/mypt/backends/cuda/device"
	"github.com/mypt/mypt/backends/cuda/kernels"
	"github.com/mypt/mypt/sdk"
	"github.com/mypt/mypt/sdk/modelspec"
	"github.com/mypt/mypt/sdk/paramstate"
	pb "github.com/mypt/mypt/sdk/proto/backendv1"
)

// Version is the backend's own semantic version.
const Version = "0.1.0"

// computeDTypes are the compute dtypes the backend declares and accepts: bf16 matrix
// products with fp32 accumulation, or fp32.
func computeDTypes() []pb.DType { return []pb.DType{pb.DType_DTYPE_F32, pb.DType_DTYPE_BF16} }

// Options configure a Backend.
type Options struct {
	// Fake runs on the fake device (Go twins of the kernels) instead of a GPU: for tests
	// and for checking the host side anywhere. The plugin sets it from MYPT_CUDA_FAKE=1.
	Fake bool
	// Ordinal is the GPU to use.
	Ordinal int
	// CacheDir holds compiled kernel modules; empty means $XDG_CACHE_HOME/mypt/cuda (or
	// ~/.cache/mypt/cuda).
	CacheDir string
	// Logger receives diagnostics; nil discards them.
	Logger *slog.Logger
}

// Backend implements sdk.Backend on a CUDA device. Calls are serialised by a mutex.
type Backend struct {
	sdk.UnimplementedProfiles
	opts Options

	mu      sync.Mutex
	dev     device.Device // opened on first use
	session *session
}

type session struct {
	model  *model
	opt    optimizer
	caches sdk.CacheTable[*kvCache]
	scr    *kvScratch
}

// New returns a CUDA backend; the device is opened on the first call that needs it.
func New(opts Options) *Backend {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.CacheDir == "" {
		if d, err := os.UserCacheDir(); err == nil {
			opts.CacheDir = filepath.Join(d, "mypt", "cuda")
		}
	}
	return &Backend{opts: opts}
}

var _ sdk.Backend = (*Backend)(nil)

// device opens the device once; the caller holds b.mu.
func (b *Backend) device() (device.Device, error) {
	if b.dev != nil {
		return b.dev, nil
	}
	if b.opts.Fake {
		b.dev = device.NewFake()
		return b.dev, nil
	}
	g, err := device.OpenGPU(b.opts.Ordinal, b.opts.CacheDir, b.opts.Logger)
	if err != nil {
		return nil, sdk.FailedPrecondition("CUDA backend unavailable: %v", err)
	}
	b.dev = g
	return g, nil
}

// Device returns the device in use (opening it), for tests.
func (b *Backend) Device() (device.Device, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.device()
}

// GetInfo describes the backend; without a GPU it fails with the reason.
func (b *Backend) GetInfo(context.Context, *pb.GetInfoRequest) (*pb.GetInfoResponse, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	d, err := b.device()
	if err != nil {
		return nil, err
	}
	in := d.Info()
	return &pb.GetInfoResponse{
		Name: "cuda", Version: Version, ProtocolVersion: sdk.ProtocolVersion,
		Devices: []*pb.Device{{Kind: in.Kind, Name: in.Name, MemoryBytes: in.MemoryBytes, Cores: uint32(in.SMs)}},
		Capabilities: &pb.Capabilities{
			PosEncodings:  []pb.PosEncoding{pb.PosEncoding_POS_ENCODING_LEARNED, pb.PosEncoding_POS_ENCODING_ROPE},
			MlpTypes:      []pb.MLPType{pb.MLPType_MLP_TYPE_GELU, pb.MLPType_MLP_TYPE_SWIGLU},
			NormTypes:     []pb.NormType{pb.NormType_NORM_TYPE_LAYERNORM, pb.NormType_NORM_TYPE_RMSNORM},
			ParamDtypes:   []pb.DType{pb.DType_DTYPE_F32},
			ComputeDtypes: computeDTypes(),
			Features: []pb.Feature{pb.Feature_FEATURE_TRAINING, pb.Feature_FEATURE_DROPOUT,
				pb.Feature_FEATURE_KV_CACHE, pb.Feature_FEATURE_PACKED_SEGMENTS, pb.Feature_FEATURE_NEFTUNE,
				pb.Feature_FEATURE_RETURN_LOGITS, pb.Feature_FEATURE_GRADIENT_STATE, pb.Feature_FEATURE_DETERMINISTIC,
				pb.Feature_FEATURE_FROZEN_PARAMS},
			MaxStateChunkBytes: uint64(sdk.MaxChunkBytes),
		},
		Engine: in.Engine,
	}, nil
}

// Configure builds the model on the device, discarding any previous session.
func (b *Backend) Configure(_ context.Context, req *pb.ConfigureRequest) (*pb.ConfigureResponse, error) {
	a, err := modelspec.Validate(req.GetModel())
	if err != nil {
		return nil, err
	}
	if a.HeadDim > kernels.MaxHeadDim {
		return nil, sdk.Unimplemented(fmt.Sprintf("head dim %d (the attention kernels take at most %d)", a.HeadDim, kernels.MaxHeadDim))
	}
	lay, err := modelspec.NewLayout(a, req.GetModel().GetParams())
	if err != nil {
		return nil, err
	}
	o := req.GetOptimizer()
	if err := sdk.ValidateOptimizer(o); err != nil {
		return nil, err
	}
	compute, err := sdk.ValidatePrecision(req.GetPrecision(), computeDTypes())
	if err != nil {
		return nil, err
	}
	bf16 := compute == pb.DType_DTYPE_BF16
	b.mu.Lock()
	defer b.mu.Unlock()
	d, err := b.device()
	if err != nil {
		return nil, err
	}
	b.closeSession()
	d.SetBF16(bf16)
	m, err := newModel(d, a, lay)
	if err != nil {
		return nil, sdk.ResourceExhausted("%v", err)
	}
	maxB, maxT := int(req.MaxBatchSize), int(req.MaxSeqLen)
	if maxT == 0 || maxT > a.BlockSize {
		maxT = a.BlockSize
	}
	if maxB > 0 {
		if err := m.ensure(maxB, maxT); err != nil {
			m.free()
			return nil, sdk.ResourceExhausted("%v", err)
		}
	}
	b.session = &session{model: m, opt: optimizer{beta1: o.Beta1, beta2: o.Beta2, eps: o.Eps}}
	mem := m.mem.size
	if m.x != nil {
		mem += m.x.mem.size
	}
	return &pb.ConfigureResponse{ParameterCount: uint64(lay.Total), MemoryBytes: uint64(mem)}, nil
}

func (b *Backend) closeSession() {
	if b.session == nil {
		return
	}
	for c := range b.session.caches.All() {
		c.mem.free()
	}
	if b.session.scr != nil {
		b.session.scr.mem.free()
	}
	b.session.model.free()
	b.session = nil
}

// Shutdown frees everything, the device included.
func (b *Backend) Shutdown(context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closeSession()
	if b.dev != nil {
		err := b.dev.Close()
		b.dev = nil
		return err
	}
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

func (s *session) roleBuffer(role pb.TensorRole) device.Ptr {
	switch role {
	case pb.TensorRole_TENSOR_ROLE_PARAM:
		return s.model.params
	case pb.TensorRole_TENSOR_ROLE_ADAM_M:
		return s.model.adamM
	case pb.TensorRole_TENSOR_ROLE_ADAM_V:
		return s.model.adamV
	case pb.TensorRole_TENSOR_ROLE_GRAD:
		return s.model.grads
	}
	return 0
}

// session is the paramstate.Store of the state calls: a role's tensors are ranges of
// its flat device buffer, copied to and from the host.
var _ paramstate.Store = (*session)(nil)

func (s *session) Has(role pb.TensorRole) bool { return s.roleBuffer(role) != 0 }

func (s *session) Load(role pb.TensorRole, i int, values []float32) error {
	p := s.model.lay.Params[i]
	if err := s.model.q.d.HtoD(s.roleBuffer(role).F32(p.Offset), le32(values)); err != nil {
		return fmt.Errorf("uploading %s: %w", p.Name, err)
	}
	return nil
}

func (s *session) Values(role pb.TensorRole, i int) ([]float32, error) {
	p := s.model.lay.Params[i]
	host, err := s.model.readF32(s.roleBuffer(role).F32(p.Offset), p.Size)
	if err != nil {
		return nil, fmt.Errorf("downloading %s: %w", p.Name, err)
	}
	return host, nil
}

// SetState loads named tensors and clears the accumulated gradients.
func (b *Backend) SetState(_ context.Context, r sdk.StateReader) (*pb.SetStateResponse, error) {
	s, err := b.lockSession()
	if err != nil {
		return nil, err
	}
	defer b.mu.Unlock()
	m := s.model
	if h := r.Header(); h != nil {
		s.opt.steps = h.OptimizerSteps
	}
	count, err := paramstate.Receive(r, m.lay, s)
	if err != nil {
		return nil, err
	}
	if err := m.q.d.Zero(m.grads, 4*m.lay.Total); err != nil {
		return nil, err
	}
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

// checkBatch validates a batch (sdk.ValidateBatch) and builds its pass.
func checkBatch(a modelspec.Arch, bt *pb.Batch) (*pass, error) {
	if err := sdk.ValidateBatch("batch", bt, a.VocabSize, a.BlockSize); err != nil {
		return nil, err
	}
	ps := &pass{b: int(bt.BatchSize), t: int(bt.SeqLen), tokens: bt.Tokens}
	if len(bt.SegmentIds) > 0 {
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
	m := s.model
	ps, err := checkBatch(m.a, req.GetBatch())
	if err != nil {
		return nil, err
	}
	if g := float64(req.GradScale); math.IsNaN(g) || math.IsInf(g, 0) {
		return nil, sdk.InvalidArgument("grad_scale", "must be finite, got %v", req.GradScale)
	}
	ps.train, ps.seed = true, req.DropoutSeed
	if err := m.forward(ps); err != nil {
		return nil, err
	}
	tot, err := m.loss(ps.b*ps.t, req.Batch.Targets, req.Batch.LossWeights, float64(req.GradScale), true)
	if err != nil {
		return nil, err
	}
	if err := m.backward(ps); err != nil {
		return nil, err
	}
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
	norm, err := s.model.adamStep(s.opt, s.opt.steps+1, req.LearningRate, req.WeightDecay, req.ClipNorm)
	if err != nil {
		return nil, err
	}
	s.opt.steps++
	return &pb.OptimizerStepResponse{GradNorm: norm, OptimizerSteps: s.opt.steps}, nil
}

// Evaluate runs one batch without dropout or gradients.
func (b *Backend) Evaluate(_ context.Context, req *pb.EvaluateRequest) (*pb.EvaluateResponse, error) {
	s, err := b.lockSession()
	if err != nil {
		return nil, err
	}
	defer b.mu.Unlock()
	m := s.model
	ps, err := checkBatch(m.a, req.GetBatch())
	if err != nil {
		return nil, err
	}
	if err := m.forward(ps); err != nil {
		return nil, err
	}
	n := ps.b * ps.t
	resp := &pb.EvaluateResponse{}
	if req.ReturnLogits {
		if resp.Logits, err = m.readF32(m.x.logits, n*m.a.VocabSize); err != nil {
			return nil, err
		}
	}
	tot, err := m.loss(n, req.Batch.Targets, req.Batch.LossWeights, 0, false)
	if err != nil {
		return nil, err
	}
	resp.LossSum, resp.WeightSum, resp.Correct, resp.Counted = tot.lossSum, tot.weightSum, tot.correct, tot.counted
	return resp, nil
}

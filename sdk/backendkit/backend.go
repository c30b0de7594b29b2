package backendkit

import (
	"context"
	"fmt"
	"math"
	"slices"
	"sync"

	"google.golang.org/protobuf/proto"

	"github.com/mypt/mypt/sdk"
	"github.com/mypt/mypt/sdk/modelspec"
	"github.com/mypt/mypt/sdk/paramstate"
	pb "github.com/mypt/mypt/sdk/proto/backendv1"
)

// Backend is the sdk.Backend the kit makes of an Engine. Its methods may be called
// concurrently: GetInfo answers from the cached description, every other call is
// serialised.
type Backend struct {
	eng Engine

	descMu sync.Mutex
	info   *pb.GetInfoResponse // nil until Describe succeeds

	mu    sync.Mutex
	s     *session // nil before Configure and after Shutdown
	steps uint64   // optimizer steps of the current session
}

// session is one configured model and what the kit keeps beside it.
type session struct {
	Session
	arch     modelspec.Arch
	layout   *modelspec.Layout
	features []pb.Feature // the engine's declared features
	// trainer and kv are the Session's optional profiles (nil when not declared).
	trainer Trainer
	kv      KVSession
	caches  sdk.CacheTable[*cacheEntry]
}

// cacheEntry is one Prefill's cache with the kit's bookkeeping.
type cacheEntry struct {
	cache            KVCache
	length, capacity int
}

// New returns the backend shell around eng.
func New(eng Engine) *Backend { return &Backend{eng: eng} }

var (
	_ sdk.Backend         = (*Backend)(nil)
	_ sdk.SelfSerializing = (*Backend)(nil)
)

// SerializesCalls implements sdk.SelfSerializing: the SDK's gRPC adapter need not hold
// a second lock around the kit's.
func (b *Backend) SerializesCalls() {}

// Engine returns the engine the backend runs on (for its own tests).
func (b *Backend) Engine() Engine { return b.eng }

// describe returns the GetInfo answer, asking the engine once.
func (b *Backend) describe(ctx context.Context) (*pb.GetInfoResponse, error) {
	b.descMu.Lock()
	defer b.descMu.Unlock()
	if b.info != nil {
		return b.info, nil
	}
	d, err := b.eng.Describe(ctx)
	if err != nil {
		return nil, err
	}
	compute := d.ComputeDTypes
	if len(compute) == 0 {
		compute = []pb.DType{pb.DType_DTYPE_F32}
	}
	b.info = &pb.GetInfoResponse{
		Name: d.Name, Version: d.Version, ProtocolVersion: sdk.ProtocolVersion, Engine: d.Engine,
		Devices: d.Devices,
		Capabilities: &pb.Capabilities{
			PosEncodings:       modelspec.PosEncodings(),
			MlpTypes:           modelspec.MLPTypes(),
			NormTypes:          modelspec.NormTypes(),
			ParamDtypes:        []pb.DType{pb.DType_DTYPE_F32},
			ComputeDtypes:      compute,
			Features:           d.Features,
			MaxStateChunkBytes: uint64(sdk.MaxChunkBytes),
		},
	}
	return b.info, nil
}

func (s *session) declares(f pb.Feature) bool { return slices.Contains(s.features, f) }

// GetInfo implements sdk.Backend. The answer is the caller's to keep.
func (b *Backend) GetInfo(ctx context.Context, _ *pb.GetInfoRequest) (*pb.GetInfoResponse, error) {
	info, err := b.describe(ctx)
	if err != nil {
		return nil, err
	}
	return proto.Clone(info).(*pb.GetInfoResponse), nil
}

// Configure implements sdk.Backend: it validates the request against the model
// contract and the engine's declared capabilities, then replaces the session.
func (b *Backend) Configure(ctx context.Context, req *pb.ConfigureRequest) (*pb.ConfigureResponse, error) {
	info, err := b.describe(ctx)
	if err != nil {
		return nil, err
	}
	features := info.Capabilities.Features
	cfg, err := sessionConfig(req, info.Capabilities.ComputeDtypes, features)
	if err != nil {
		return nil, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closeSession()
	s, err := b.eng.NewSession(ctx, cfg)
	if err != nil {
		return nil, err
	}
	ses := &session{Session: s, arch: cfg.Arch, layout: cfg.Layout, features: features}
	if ses.declares(pb.Feature_FEATURE_TRAINING) {
		if ses.trainer, _ = s.(Trainer); ses.trainer == nil {
			_ = s.Close()
			return nil, fmt.Errorf("backend declares FEATURE_TRAINING but its session %T does not implement backendkit.Trainer", s)
		}
	}
	if ses.declares(pb.Feature_FEATURE_KV_CACHE) {
		if ses.kv, _ = s.(KVSession); ses.kv == nil {
			_ = s.Close()
			return nil, fmt.Errorf("backend declares FEATURE_KV_CACHE but its session %T does not implement backendkit.KVSession", s)
		}
	}
	b.s, b.steps = ses, 0
	mem := uint64(16 * cfg.Layout.Total)
	if r, ok := s.(MemoryReporter); ok {
		mem = r.MemoryBytes()
	}
	return &pb.ConfigureResponse{ParameterCount: uint64(cfg.Layout.Total), MemoryBytes: mem}, nil
}

// sessionConfig validates a ConfigureRequest: the model (modelspec), its parameter list,
// the optimizer, the precision, and every optional behaviour it asks for against the
// declared features.
func sessionConfig(req *pb.ConfigureRequest, compute []pb.DType, features []pb.Feature) (SessionConfig, error) {
	m := req.GetModel()
	a, err := modelspec.Validate(m)
	if err != nil {
		return SessionConfig{}, err
	}
	lay, err := modelspec.NewLayout(a, m.GetParams())
	if err != nil {
		return SessionConfig{}, err
	}
	for _, need := range []struct {
		asked   bool
		feature pb.Feature
		what    string
	}{
		{req.GetDeterministic(), pb.Feature_FEATURE_DETERMINISTIC, "deterministic"},
		{a.Dropout > 0, pb.Feature_FEATURE_DROPOUT, "model.dropout > 0"},
		{a.NeftuneAlpha > 0, pb.Feature_FEATURE_NEFTUNE, "model.neftune_alpha > 0"},
		{a.NKVHead != a.NHead, pb.Feature_FEATURE_GROUPED_QUERY_ATTENTION, fmt.Sprintf("model.n_kv_head %d < n_head %d", a.NKVHead, a.NHead)},
		{!a.LMHeadBias, pb.Feature_FEATURE_LM_HEAD_WITHOUT_BIAS, "model.no_lm_head_bias"},
	} {
		if need.asked && !slices.Contains(features, need.feature) {
			return SessionConfig{}, sdk.Unimplemented(fmt.Sprintf("%s (%v)", need.what, need.feature))
		}
	}
	if err := modelspec.CheckFrozen(m.GetParams(), slices.Contains(features, pb.Feature_FEATURE_FROZEN_PARAMS)); err != nil {
		return SessionConfig{}, err
	}
	o := req.GetOptimizer()
	if err := sdk.ValidateOptimizer(o); err != nil {
		return SessionConfig{}, err
	}
	if k := o.GetKind(); k != pb.OptimizerKind_OPTIMIZER_KIND_ADAMW {
		return SessionConfig{}, sdk.Unimplemented(fmt.Sprintf("optimizer.kind %v (Capabilities.optimizer_kinds: AdamW only)", k))
	}
	dtype, err := sdk.ValidatePrecision(req.GetPrecision(), compute)
	if err != nil {
		return SessionConfig{}, err
	}
	maxT := int(req.GetMaxSeqLen())
	if maxT == 0 || maxT > a.BlockSize {
		maxT = a.BlockSize
	}
	return SessionConfig{Arch: a, Layout: lay, Compute: dtype,
		Optimizer: Optimizer{Beta1: o.GetBeta1(), Beta2: o.GetBeta2(), Eps: o.GetEps()},
		Seed:      req.GetSeed(), MaxBatch: int(req.GetMaxBatchSize()), MaxSeqLen: maxT,
		Deterministic: req.GetDeterministic()}, nil
}

// closeSession releases the session and its caches; b.mu is held.
func (b *Backend) closeSession() {
	if b.s == nil {
		return
	}
	for e := range b.s.caches.All() {
		e.cache.Release()
	}
	_ = b.s.Close()
	b.s = nil
}

// Shutdown implements sdk.Backend: it releases the session and the engine's device.
// GetInfo and Configure stay valid.
func (b *Backend) Shutdown(context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closeSession()
	if c, ok := b.eng.(Closer); ok {
		return c.Close()
	}
	return nil
}

// lock takes the call lock and returns the session, or FailedPrecondition before
// Configure. The caller unlocks b.mu unless an error is returned.
func (b *Backend) lock() (*session, error) {
	b.mu.Lock()
	if b.s == nil {
		b.mu.Unlock()
		return nil, sdk.FailedPrecondition("backend is not configured: call Configure first")
	}
	return b.s, nil
}

// SetState implements sdk.Backend: it loads the streamed tensors, takes the optimizer
// step count from the header and clears the gradients.
func (b *Backend) SetState(_ context.Context, r sdk.StateReader) (*pb.SetStateResponse, error) {
	s, err := b.lock()
	if err != nil {
		return nil, err
	}
	defer b.mu.Unlock()
	count, err := paramstate.Receive(r, s.layout, s)
	if err != nil {
		return nil, err
	}
	if h := r.Header(); h != nil {
		b.steps = h.GetOptimizerSteps()
	}
	if s.trainer != nil {
		if err := s.trainer.ZeroGrads(); err != nil {
			return nil, err
		}
	}
	return &pb.SetStateResponse{TensorsReceived: count}, nil
}

// GetState implements sdk.Backend.
func (b *Backend) GetState(_ context.Context, req *pb.GetStateRequest, w sdk.StateWriter) error {
	s, err := b.lock()
	if err != nil {
		return err
	}
	defer b.mu.Unlock()
	if slices.Contains(req.GetRoles(), pb.TensorRole_TENSOR_ROLE_GRAD) && !s.declares(pb.Feature_FEATURE_GRADIENT_STATE) {
		return sdk.Unimplemented("GetState of TENSOR_ROLE_GRAD (FEATURE_GRADIENT_STATE)")
	}
	return paramstate.Send(req, w, s.layout, b.steps, s)
}

// batch validates a request's batch against the model and the declared features.
func (s *session) batch(bt *pb.Batch) (*Batch, error) {
	a := s.arch
	if err := sdk.ValidateBatch("batch", bt, a.VocabSize, a.BlockSize); err != nil {
		return nil, err
	}
	out := &Batch{B: int(bt.GetBatchSize()), T: int(bt.GetSeqLen()), Tokens: bt.GetTokens(),
		Targets: bt.GetTargets(), Weights: bt.GetLossWeights()}
	if segs := bt.GetSegmentIds(); len(segs) > 0 {
		if !s.declares(pb.Feature_FEATURE_PACKED_SEGMENTS) {
			return nil, sdk.Unimplemented("batch.segment_ids (FEATURE_PACKED_SEGMENTS)")
		}
		out.Segments = segs
	}
	out.Positions = make([]int32, out.B*out.T)
	a.Positions(out.Positions, out.Segments, out.B, out.T)
	return out, nil
}

// ForwardBackward implements sdk.Backend.
func (b *Backend) ForwardBackward(ctx context.Context, req *pb.ForwardBackwardRequest) (*pb.ForwardBackwardResponse, error) {
	s, err := b.lock()
	if err != nil {
		return nil, err
	}
	defer b.mu.Unlock()
	if s.trainer == nil {
		return nil, sdk.Unimplemented("ForwardBackward (FEATURE_TRAINING)")
	}
	bt, err := s.batch(req.GetBatch())
	if err != nil {
		return nil, err
	}
	if g := float64(req.GetGradScale()); math.IsNaN(g) || math.IsInf(g, 0) {
		return nil, sdk.InvalidArgument("grad_scale", "must be finite, got %v", req.GetGradScale())
	}
	t, err := s.trainer.ForwardBackward(ctx, bt, req.GetGradScale(), req.GetDropoutSeed())
	if err != nil {
		return nil, err
	}
	return &pb.ForwardBackwardResponse{LossSum: t.LossSum, WeightSum: t.WeightSum, Tokens: uint64(bt.B * bt.T)}, nil
}

// OptimizerStep implements sdk.Backend.
func (b *Backend) OptimizerStep(ctx context.Context, req *pb.OptimizerStepRequest) (*pb.OptimizerStepResponse, error) {
	s, err := b.lock()
	if err != nil {
		return nil, err
	}
	defer b.mu.Unlock()
	if s.trainer == nil {
		return nil, sdk.Unimplemented("OptimizerStep (FEATURE_TRAINING)")
	}
	if err := sdk.ValidateOptimizerStep(req); err != nil {
		return nil, err
	}
	clip := req.GetClipNorm()
	if clip <= 0 || math.IsInf(clip, 1) {
		clip = 0
	}
	norm, err := s.trainer.OptimizerStep(ctx, Step{LearningRate: req.GetLearningRate(), WeightDecay: req.GetWeightDecay(),
		ClipNorm: clip, Number: b.steps + 1})
	if err != nil {
		return nil, err
	}
	b.steps++
	return &pb.OptimizerStepResponse{GradNorm: norm, OptimizerSteps: b.steps}, nil
}

// Evaluate implements sdk.Backend.
func (b *Backend) Evaluate(ctx context.Context, req *pb.EvaluateRequest) (*pb.EvaluateResponse, error) {
	s, err := b.lock()
	if err != nil {
		return nil, err
	}
	defer b.mu.Unlock()
	bt, err := s.batch(req.GetBatch())
	if err != nil {
		return nil, err
	}
	var rows []int
	if req.GetReturnLogits() {
		if !s.declares(pb.Feature_FEATURE_RETURN_LOGITS) {
			return nil, sdk.Unimplemented("return_logits (FEATURE_RETURN_LOGITS)")
		}
		if rows, err = logitRows(req.GetLogitPositions(), bt.B*bt.T); err != nil {
			return nil, err
		}
	} else if len(req.GetLogitPositions()) > 0 {
		return nil, sdk.InvalidArgument("logit_positions", "given without return_logits")
	}
	t, logits, err := s.Evaluate(ctx, bt, rows)
	if err != nil {
		return nil, err
	}
	return &pb.EvaluateResponse{LossSum: t.LossSum, WeightSum: t.WeightSum, Correct: t.Correct, Counted: t.Counted,
		Logits: logits}, nil
}

// logitRows checks EvaluateRequest.logit_positions and returns the rows to return
// (every position when none are given).
func logitRows(pos []uint32, n int) ([]int, error) {
	if len(pos) == 0 {
		rows := make([]int, n)
		for i := range rows {
			rows[i] = i
		}
		return rows, nil
	}
	rows := make([]int, len(pos))
	for i, p := range pos {
		if int(p) >= n {
			return nil, sdk.InvalidArgument(fmt.Sprintf("logit_positions[%d]", i), "position %d outside [0, batch_size·seq_len = %d)", p, n)
		}
		rows[i] = int(p)
	}
	return rows, nil
}

// Prefill implements sdk.Backend.
func (b *Backend) Prefill(ctx context.Context, req *pb.PrefillRequest) (*pb.PrefillResponse, error) {
	s, err := b.lock()
	if err != nil {
		return nil, err
	}
	defer b.mu.Unlock()
	if s.kv == nil {
		return nil, sdk.Unimplemented("Prefill (FEATURE_KV_CACHE)")
	}
	a := s.arch
	capacity, err := sdk.PrefillCapacity(req, a.BlockSize)
	if err != nil {
		return nil, err
	}
	if err := sdk.ValidateTokens("tokens", req.GetTokens(), a.VocabSize); err != nil {
		return nil, err
	}
	c, err := s.kv.NewKVCache(ctx, capacity)
	if err != nil {
		return nil, err
	}
	n := len(req.GetTokens())
	logits, err := c.Extend(ctx, req.GetTokens(), 0)
	if err != nil {
		c.Release()
		return nil, err
	}
	h := s.caches.Add(&cacheEntry{cache: c, length: n, capacity: capacity})
	if !req.GetAllLogits() {
		logits = logits[(n-1)*a.VocabSize:]
	}
	return &pb.PrefillResponse{CacheHandle: h, Logits: logits}, nil
}

// Decode implements sdk.Backend.
func (b *Backend) Decode(ctx context.Context, req *pb.DecodeRequest) (*pb.DecodeResponse, error) {
	s, err := b.lock()
	if err != nil {
		return nil, err
	}
	defer b.mu.Unlock()
	if s.kv == nil {
		return nil, sdk.Unimplemented("Decode (FEATURE_KV_CACHE)")
	}
	e, err := s.caches.Get(req.GetCacheHandle())
	if err != nil {
		return nil, err
	}
	if err := sdk.ValidateDecode(req, s.arch.VocabSize, e.length, e.capacity); err != nil {
		return nil, err
	}
	logits, err := e.cache.Extend(ctx, []int32{req.GetToken()}, e.length)
	if err != nil {
		return nil, err
	}
	e.length++
	return &pb.DecodeResponse{Logits: logits, Length: uint32(e.length)}, nil
}

// ReleaseCache implements sdk.Backend.
func (b *Backend) ReleaseCache(_ context.Context, req *pb.ReleaseCacheRequest) (*pb.ReleaseCacheResponse, error) {
	s, err := b.lock()
	if err != nil {
		return nil, err
	}
	defer b.mu.Unlock()
	if s.kv == nil {
		return nil, sdk.Unimplemented("ReleaseCache (FEATURE_KV_CACHE)")
	}
	e, err := s.caches.Remove(req.GetCacheHandle())
	if err != nil {
		return nil, err
	}
	e.cache.Release()
	return &pb.ReleaseCacheResponse{}, nil
}

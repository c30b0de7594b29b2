package backendkit

import (
	"context"
	"math"
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/mypt/mypt/sdk"
	"github.com/mypt/mypt/sdk/modelspec"
	pb "github.com/mypt/mypt/sdk/proto/backendv1"
)

// fakeEngine declares features and builds recording sessions.
type fakeEngine struct {
	features    []pb.Feature
	describeErr error
	describes   int
	noTrainer   bool // sessions lack the Trainer methods
	closed      int
	last        *fakeSession
}

func (e *fakeEngine) Describe(context.Context) (Description, error) {
	e.describes++
	if e.describeErr != nil {
		return Description{}, e.describeErr
	}
	return Description{Name: "fake", Version: "1.0.0", Features: e.features}, nil
}

func (e *fakeEngine) NewSession(_ context.Context, cfg SessionConfig) (Session, error) {
	e.last = &fakeSession{cfg: cfg, params: make([]float32, cfg.Layout.Total)}
	if e.noTrainer {
		return evalOnly{e.last}, nil
	}
	return e.last, nil
}

func (e *fakeEngine) Close() error { e.closed++; return nil }

// fakeSession records what the kit hands it.
type fakeSession struct {
	cfg       SessionConfig
	params    []float32
	batch     *Batch
	rows      []int
	steps     []Step
	zeroed    int
	extends   [][]int // (start, len) of every Extend
	released  int
	closed    bool
	gradScale float32
}

func (s *fakeSession) Has(r pb.TensorRole) bool { return r == pb.TensorRole_TENSOR_ROLE_PARAM }
func (s *fakeSession) Load(_ pb.TensorRole, i int, v []float32) error {
	p := s.cfg.Layout.Params[i]
	copy(s.params[p.Offset:], v)
	return nil
}
func (s *fakeSession) Values(_ pb.TensorRole, i int) ([]float32, error) {
	p := s.cfg.Layout.Params[i]
	return s.params[p.Offset : p.Offset+p.Size], nil
}
func (s *fakeSession) Evaluate(_ context.Context, b *Batch, rows []int) (Totals, []float32, error) {
	s.batch, s.rows = b, rows
	return Totals{LossSum: 1.5, WeightSum: 3, Correct: 1, Counted: 3}, make([]float32, len(rows)), nil
}
func (s *fakeSession) Close() error { s.closed = true; return nil }
func (s *fakeSession) ForwardBackward(_ context.Context, b *Batch, scale float32, _ uint64) (Totals, error) {
	s.batch, s.gradScale = b, scale
	return Totals{LossSum: 2, WeightSum: 4}, nil
}
func (s *fakeSession) OptimizerStep(_ context.Context, st Step) (float64, error) {
	s.steps = append(s.steps, st)
	return 0.5, nil
}
func (s *fakeSession) ZeroGrads() error { s.zeroed++; return nil }
func (s *fakeSession) NewKVCache(context.Context, int) (KVCache, error) {
	return &fakeCache{s: s}, nil
}

// evalOnly hides the Trainer and KVSession methods of a fakeSession.
type evalOnly struct{ s *fakeSession }

func (e evalOnly) Has(r pb.TensorRole) bool                         { return e.s.Has(r) }
func (e evalOnly) Load(r pb.TensorRole, i int, v []float32) error   { return e.s.Load(r, i, v) }
func (e evalOnly) Values(r pb.TensorRole, i int) ([]float32, error) { return e.s.Values(r, i) }
func (e evalOnly) Close() error                                     { return e.s.Close() }
func (e evalOnly) Evaluate(ctx context.Context, b *Batch, rows []int) (Totals, []float32, error) {
	return e.s.Evaluate(ctx, b, rows)
}

type fakeCache struct{ s *fakeSession }

func (c *fakeCache) Extend(_ context.Context, tokens []int32, start int) ([]float32, error) {
	c.s.extends = append(c.s.extends, []int{start, len(tokens)})
	return make([]float32, len(tokens)*c.s.cfg.Arch.VocabSize), nil
}
func (c *fakeCache) Release() { c.s.released++ }

var allFeatures = []pb.Feature{pb.Feature_FEATURE_TRAINING, pb.Feature_FEATURE_KV_CACHE, pb.Feature_FEATURE_PACKED_SEGMENTS,
	pb.Feature_FEATURE_RETURN_LOGITS}

// spec is a small valid LLaMA-style spec with its parameters.
func spec() *pb.ModelSpec {
	a := modelspec.Arch{VocabSize: 7, BlockSize: 6, NLayer: 1, NHead: 2, NEmbd: 4, MLPHidden: 8,
		SwiGLU: true, TieWeights: true, LMHeadBias: true, RopeTheta: 100, RopeScale: 1, NormEps: 1e-6, SegmentPositionReset: true}
	return a.Spec(nil)
}

func configureReq(edit ...func(*pb.ConfigureRequest)) *pb.ConfigureRequest {
	r := &pb.ConfigureRequest{Model: spec(), Optimizer: &pb.OptimizerSpec{Beta1: 0.9, Beta2: 0.95, Eps: 1e-8}, MaxBatchSize: 2}
	for _, e := range edit {
		e(r)
	}
	return r
}

func batch(b, t int) *pb.Batch {
	out := &pb.Batch{BatchSize: uint32(b), SeqLen: uint32(t)}
	for i := range b * t {
		out.Tokens = append(out.Tokens, int32(i%7))
		out.Targets = append(out.Targets, int32((i+1)%7))
		out.LossWeights = append(out.LossWeights, 1)
	}
	return out
}

// wantCode fails unless err has code and its message names what.
func wantCode(t *testing.T, what string, err error, code codes.Code, names string) {
	t.Helper()
	if sdk.Code(err) != code || !strings.Contains(err.Error(), names) {
		t.Errorf("%s: %v, want %v naming %q", what, err, code, names)
	}
}

func TestGetInfo(t *testing.T) {
	e := &fakeEngine{describeErr: sdk.FailedPrecondition("no device")}
	b := New(e)
	_, err := b.GetInfo(t.Context(), nil)
	wantCode(t, "GetInfo without a device", err, codes.FailedPrecondition, "no device")
	e.describeErr = nil
	info, err := b.GetInfo(t.Context(), nil)
	if err != nil {
		t.Fatal(err)
	}
	c := info.GetCapabilities()
	if info.GetProtocolVersion() != sdk.ProtocolVersion || len(c.GetPosEncodings()) != 2 || len(c.GetMlpTypes()) != 2 ||
		len(c.GetNormTypes()) != 2 || !slices.Equal(c.GetComputeDtypes(), []pb.DType{pb.DType_DTYPE_F32}) ||
		!slices.Equal(c.GetParamDtypes(), []pb.DType{pb.DType_DTYPE_F32}) || c.GetMaxStateChunkBytes() != uint64(sdk.MaxChunkBytes) {
		t.Errorf("GetInfo %v", info)
	}
	info.Name = "changed by the caller"
	again, _ := b.GetInfo(t.Context(), nil)
	if again.GetName() != "fake" || e.describes != 2 {
		t.Errorf("second GetInfo: name %q, Describe called %d times; want the engine's name and 2 calls (one failed)", again.GetName(), e.describes)
	}
}

// TestConfigureRefusesUndeclared: every optional behaviour a request asks for needs its
// feature; without it the kit answers UNIMPLEMENTED naming the field, and the engine never
// sees the request.
func TestConfigureRefusesUndeclared(t *testing.T) {
	for _, c := range []struct {
		names string
		edit  func(*pb.ConfigureRequest)
	}{
		{"deterministic", func(r *pb.ConfigureRequest) { r.Deterministic = true }},
		{"model.dropout", func(r *pb.ConfigureRequest) { r.Model.Dropout = 0.1 }},
		{"model.neftune_alpha", func(r *pb.ConfigureRequest) { r.Model.NeftuneAlpha = 5 }},
		{"model.n_kv_head", func(r *pb.ConfigureRequest) {
			r.Model.NKvHead = 1
			for _, p := range r.Model.Params {
				if p.Name == "blocks.0.sa.qkv.weight" {
					p.Shape = []int64{4 + 2*2, 4} // one key/value head of dim 2
				}
			}
		}},
		{"model.no_lm_head_bias", func(r *pb.ConfigureRequest) {
			r.Model.NoLmHeadBias = true
			r.Model.Params = r.Model.Params[:len(r.Model.Params)-1]
		}},
		{"model.params[0].frozen", func(r *pb.ConfigureRequest) { r.Model.Params[0].Frozen = true }},
		{"precision.compute_dtype", func(r *pb.ConfigureRequest) { r.Precision = &pb.Precision{ComputeDtype: pb.DType_DTYPE_BF16} }},
	} {
		e := &fakeEngine{}
		_, err := New(e).Configure(t.Context(), configureReq(c.edit))
		wantCode(t, c.names, err, codes.Unimplemented, c.names)
		if e.last != nil {
			t.Errorf("%s: the engine built a session for a refused request", c.names)
		}
	}
	e := &fakeEngine{}
	_, err := New(e).Configure(t.Context(), configureReq(func(r *pb.ConfigureRequest) { r.Optimizer.Kind = 7 }))
	wantCode(t, "optimizer kind 7", err, codes.Unimplemented, "optimizer.kind")
	_, err = New(e).Configure(t.Context(), configureReq(func(r *pb.ConfigureRequest) { r.Optimizer.Beta2 = 1 }))
	wantCode(t, "beta2 1", err, codes.InvalidArgument, "optimizer.beta2")
	_, err = New(e).Configure(t.Context(), configureReq(func(r *pb.ConfigureRequest) { r.Model.NHead = 3 }))
	wantCode(t, "n_head 3", err, codes.InvalidArgument, "model.n_head")
}

func TestProfilesAndOrder(t *testing.T) {
	ctx := t.Context()
	e := &fakeEngine{features: []pb.Feature{pb.Feature_FEATURE_RETURN_LOGITS}}
	b := New(e)
	_, err := b.Evaluate(ctx, &pb.EvaluateRequest{Batch: batch(1, 3)})
	wantCode(t, "Evaluate before Configure", err, codes.FailedPrecondition, "Configure")
	if _, err := b.Configure(ctx, configureReq()); err != nil {
		t.Fatal(err)
	}
	_, err = b.ForwardBackward(ctx, &pb.ForwardBackwardRequest{Batch: batch(1, 3), GradScale: 1})
	wantCode(t, "ForwardBackward undeclared", err, codes.Unimplemented, "FEATURE_TRAINING")
	_, err = b.OptimizerStep(ctx, &pb.OptimizerStepRequest{LearningRate: 1})
	wantCode(t, "OptimizerStep undeclared", err, codes.Unimplemented, "FEATURE_TRAINING")
	_, err = b.Prefill(ctx, &pb.PrefillRequest{Tokens: []int32{1}})
	wantCode(t, "Prefill undeclared", err, codes.Unimplemented, "FEATURE_KV_CACHE")
	packed := batch(1, 3)
	packed.SegmentIds = []int32{1, 1, 2}
	_, err = b.Evaluate(ctx, &pb.EvaluateRequest{Batch: packed})
	wantCode(t, "segment ids undeclared", err, codes.Unimplemented, "batch.segment_ids")
	err = b.GetState(ctx, &pb.GetStateRequest{Roles: []pb.TensorRole{pb.TensorRole_TENSOR_ROLE_GRAD}}, &sdk.StateCollector{})
	wantCode(t, "gradients undeclared", err, codes.Unimplemented, "FEATURE_GRADIENT_STATE")

	// an engine that declares training for sessions that cannot train is the backend's bug
	e = &fakeEngine{features: allFeatures, noTrainer: true}
	if _, err := New(e).Configure(ctx, configureReq()); err == nil || !strings.Contains(err.Error(), "Trainer") || !e.last.closed {
		t.Errorf("Configure of a session lacking Trainer: %v (session closed %v)", err, e.last.closed)
	}
}

func TestTrainingBookkeeping(t *testing.T) {
	ctx := t.Context()
	e := &fakeEngine{features: allFeatures}
	b := New(e)
	if _, err := b.Configure(ctx, configureReq()); err != nil {
		t.Fatal(err)
	}
	s := e.last
	if s.cfg.MaxSeqLen != 6 || s.cfg.MaxBatch != 2 || s.cfg.Compute != pb.DType_DTYPE_F32 {
		t.Errorf("SessionConfig %+v", s.cfg)
	}
	if _, err := b.SetState(ctx, sdk.NewTensorList(41)); err != nil || s.zeroed != 1 {
		t.Fatalf("SetState: %v, gradients cleared %d times", err, s.zeroed)
	}
	packed := batch(2, 3)
	packed.SegmentIds = []int32{1, 1, 2, 5, 5, 5}
	fb, err := b.ForwardBackward(ctx, &pb.ForwardBackwardRequest{Batch: packed, GradScale: 0.25})
	if err != nil || fb.GetLossSum() != 2 || fb.GetTokens() != 6 || s.gradScale != 0.25 {
		t.Fatalf("ForwardBackward: %v %v", fb, err)
	}
	if !slices.Equal(s.batch.Positions, []int32{0, 1, 0, 0, 1, 2}) {
		t.Errorf("positions %v, want restarts at every segment", s.batch.Positions)
	}
	_, err = b.ForwardBackward(ctx, &pb.ForwardBackwardRequest{Batch: batch(1, 3), GradScale: float32(math.Inf(1))})
	wantCode(t, "infinite grad_scale", err, codes.InvalidArgument, "grad_scale")
	for _, clip := range []float64{-1, math.Inf(1), 0.75} {
		r, err := b.OptimizerStep(ctx, &pb.OptimizerStepRequest{LearningRate: 1e-3, ClipNorm: clip})
		if err != nil {
			t.Fatal(err)
		}
		if r.GetGradNorm() != 0.5 || r.GetOptimizerSteps() != s.steps[len(s.steps)-1].Number {
			t.Errorf("OptimizerStep %v after steps %+v", r, s.steps)
		}
	}
	want := []Step{{LearningRate: 1e-3, Number: 42}, {LearningRate: 1e-3, Number: 43}, {LearningRate: 1e-3, ClipNorm: 0.75, Number: 44}}
	if !slices.Equal(s.steps, want) {
		t.Errorf("steps %+v, want %+v (numbering from the SetState header, clip ≤ 0 and +Inf as 0)", s.steps, want)
	}
	_, err = b.OptimizerStep(ctx, &pb.OptimizerStepRequest{LearningRate: 1, ClipNorm: math.NaN()})
	wantCode(t, "NaN clip_norm", err, codes.InvalidArgument, "clip_norm")
	snap := &sdk.StateCollector{}
	if err := b.GetState(ctx, &pb.GetStateRequest{Roles: []pb.TensorRole{pb.TensorRole_TENSOR_ROLE_PARAM}}, snap); err != nil || snap.Head.GetOptimizerSteps() != 44 {
		t.Errorf("GetState header %v (%v), want 44 optimizer steps", snap.Head, err)
	}
}

func TestEvaluateLogitPositions(t *testing.T) {
	ctx := t.Context()
	e := &fakeEngine{features: allFeatures}
	b := New(e)
	if _, err := b.Configure(ctx, configureReq()); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Evaluate(ctx, &pb.EvaluateRequest{Batch: batch(2, 3)}); err != nil || e.last.rows != nil {
		t.Errorf("Evaluate without logits: rows %v (%v), want nil", e.last.rows, err)
	}
	if _, err := b.Evaluate(ctx, &pb.EvaluateRequest{Batch: batch(2, 3), ReturnLogits: true}); err != nil || !slices.Equal(e.last.rows, []int{0, 1, 2, 3, 4, 5}) {
		t.Errorf("every position: rows %v (%v)", e.last.rows, err)
	}
	ev, err := b.Evaluate(ctx, &pb.EvaluateRequest{Batch: batch(2, 3), ReturnLogits: true, LogitPositions: []uint32{5, 2}})
	if err != nil || !slices.Equal(e.last.rows, []int{5, 2}) || ev.GetCounted() != 3 {
		t.Errorf("positions 5, 2: rows %v, %v (%v)", e.last.rows, ev, err)
	}
	_, err = b.Evaluate(ctx, &pb.EvaluateRequest{Batch: batch(2, 3), ReturnLogits: true, LogitPositions: []uint32{1, 6}})
	wantCode(t, "position 6 of 6", err, codes.InvalidArgument, "logit_positions[1]")
	_, err = b.Evaluate(ctx, &pb.EvaluateRequest{Batch: batch(2, 3), LogitPositions: []uint32{1}})
	wantCode(t, "positions without logits", err, codes.InvalidArgument, "logit_positions")
}

func TestKVCacheBookkeeping(t *testing.T) {
	ctx := t.Context()
	e := &fakeEngine{features: allFeatures}
	b := New(e)
	if _, err := b.Configure(ctx, configureReq()); err != nil {
		t.Fatal(err)
	}
	s := e.last
	p, err := b.Prefill(ctx, &pb.PrefillRequest{Tokens: []int32{1, 2, 3}, Capacity: 4})
	if err != nil || len(p.GetLogits()) != 7 {
		t.Fatalf("Prefill: %v, %d logits (want the last position's 7)", err, len(p.GetLogits()))
	}
	d, err := b.Decode(ctx, &pb.DecodeRequest{CacheHandle: p.GetCacheHandle(), Token: 4})
	if err != nil || d.GetLength() != 4 {
		t.Fatalf("Decode: %v %v", d, err)
	}
	_, err = b.Decode(ctx, &pb.DecodeRequest{CacheHandle: p.GetCacheHandle(), Token: 4})
	wantCode(t, "Decode into a full cache", err, codes.FailedPrecondition, "full")
	if !slices.EqualFunc(s.extends, [][]int{{0, 3}, {3, 1}}, slices.Equal) {
		t.Errorf("Extend calls (start, tokens) %v, want [0 3] then [3 1]", s.extends)
	}
	_, err = b.Prefill(ctx, &pb.PrefillRequest{Tokens: []int32{1, 9}})
	wantCode(t, "Prefill with token 9 of 7", err, codes.InvalidArgument, "tokens[1]")
	p2, _ := b.Prefill(ctx, &pb.PrefillRequest{Tokens: []int32{1}})
	if _, err := b.ReleaseCache(ctx, &pb.ReleaseCacheRequest{CacheHandle: p.GetCacheHandle()}); err != nil || s.released != 1 {
		t.Fatalf("ReleaseCache: %v, released %d", err, s.released)
	}
	_, err = b.Decode(ctx, &pb.DecodeRequest{CacheHandle: p.GetCacheHandle(), Token: 1})
	wantCode(t, "Decode after release", err, codes.NotFound, "cache handle")
	// a new Configure releases the old session's caches and closes it; Shutdown closes the engine
	if _, err := b.Configure(ctx, configureReq()); err != nil || s.released != 2 || !s.closed {
		t.Fatalf("Configure: %v; old caches released %d (want 2), session closed %v", err, s.released, s.closed)
	}
	_, err = b.Decode(ctx, &pb.DecodeRequest{CacheHandle: p2.GetCacheHandle(), Token: 1})
	wantCode(t, "Decode on the previous session's cache", err, codes.NotFound, "cache handle")
	if err := b.Shutdown(ctx); err != nil || e.closed != 1 || !e.last.closed {
		t.Fatalf("Shutdown: %v, engine closed %d, session closed %v", err, e.closed, e.last.closed)
	}
	_, err = b.Evaluate(ctx, &pb.EvaluateRequest{Batch: batch(1, 1)})
	if sdk.Code(err) != codes.FailedPrecondition {
		t.Errorf("Evaluate after Shutdown: %v, want FAILED_PRECONDITION", err)
	}
}

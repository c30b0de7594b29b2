// Package bigram is a complete, deliberately small mypt backend written against
// sdk.Backend directly, without sdk/backendkit: a bigram language model (logits for
// the next token are a row of one V×V matrix) with real cross-entropy gradients,
// AdamW, gradient clipping, state streaming and a trivial KV cache. It implements
// every call of the protocol with the contract's status codes and the sdk.Validate*
// helpers, so the SDK's own tests drive it through a real plugin process. The SDK
// serialises its calls (it is not sdk.SelfSerializing), so it holds no lock.
// A GPT backend is better built on the kit: see sdk/examples/gpt.
//
// Its model is its own: ModelSpec must list exactly one parameter,
// "bigram.weight" of shape [vocab_size, vocab_size]; the transformer fields
// are ignored.
package bigram

import (
	"context"
	"errors"
	"io"
	"math"
	"runtime"
	"strconv"

	"github.com/mypt/mypt/sdk"
	"github.com/mypt/mypt/sdk/modelspec"
	pb "github.com/mypt/mypt/sdk/proto/backendv1"
)

// WeightName is the single parameter's name.
const WeightName = "bigram.weight"

// Backend is the bigram backend. The zero value is ready for GetInfo and
// Configure.
type Backend struct {
	sdk.UnimplementedProfiles // defaults for calls later protocol versions add

	vocab  int
	block  int
	decay  bool
	opt    *pb.OptimizerSpec
	w, g   []float32 // weights and accumulated gradient, V×V
	m, v   []float32 // AdamW moments
	steps  uint64
	caches sdk.CacheTable[*cache]
}

type cache struct {
	last     int32
	length   int
	capacity int
}

// New returns an unconfigured bigram backend.
func New() *Backend { return &Backend{} }

// GetInfo implements sdk.Backend.
func (b *Backend) GetInfo(context.Context, *pb.GetInfoRequest) (*pb.GetInfoResponse, error) {
	return &pb.GetInfoResponse{
		Name:            "bigram",
		Version:         "1.0.0",
		ProtocolVersion: sdk.ProtocolVersion,
		Engine:          "pure-go example",
		Devices:         []*pb.Device{{Kind: "cpu", Name: runtime.GOARCH, Cores: uint32(runtime.NumCPU())}},
		Capabilities: &pb.Capabilities{
			ParamDtypes:   []pb.DType{pb.DType_DTYPE_F32},
			ComputeDtypes: []pb.DType{pb.DType_DTYPE_F32},
			Features: []pb.Feature{
				pb.Feature_FEATURE_TRAINING, pb.Feature_FEATURE_KV_CACHE, pb.Feature_FEATURE_DETERMINISTIC,
				pb.Feature_FEATURE_RETURN_LOGITS, pb.Feature_FEATURE_GRADIENT_STATE,
			},
		},
	}, nil
}

// Configure implements sdk.Backend.
func (b *Backend) Configure(_ context.Context, req *pb.ConfigureRequest) (*pb.ConfigureResponse, error) {
	spec := req.GetModel()
	if spec == nil {
		return nil, sdk.InvalidArgument("model", "missing")
	}
	v := int(spec.GetVocabSize())
	if v < 1 || v > 1<<15 {
		return nil, sdk.InvalidArgument("model.vocab_size", "must be in [1, 32768], got %d", v)
	}
	if spec.GetBlockSize() < 1 {
		return nil, sdk.InvalidArgument("model.block_size", "must be ≥ 1")
	}
	params := spec.GetParams()
	if len(params) != 1 || params[0].GetName() != WeightName {
		return nil, sdk.InvalidArgument("model.params", "the bigram backend needs exactly one parameter %q", WeightName)
	}
	// A backend that does not declare FEATURE_FROZEN_PARAMS refuses frozen tensors.
	if err := modelspec.CheckFrozen(params, false); err != nil {
		return nil, err
	}
	p := params[0]
	if len(p.GetShape()) != 2 || p.GetShape()[0] != int64(v) || p.GetShape()[1] != int64(v) {
		return nil, sdk.InvalidArgument("model.params[0].shape", "%q must be [%d %d], got %v", WeightName, v, v, p.GetShape())
	}
	if d := p.GetDtype(); d != pb.DType_DTYPE_F32 && d != pb.DType_DTYPE_UNSPECIFIED {
		return nil, sdk.InvalidArgument("model.params[0].dtype", "only F32 is supported, got %v", d)
	}
	if _, err := sdk.ValidatePrecision(req.GetPrecision(), []pb.DType{pb.DType_DTYPE_F32}); err != nil {
		return nil, err
	}
	opt := req.GetOptimizer()
	if err := sdk.ValidateOptimizer(opt); err != nil {
		return nil, err
	}
	n := v * v
	b.vocab, b.block, b.decay, b.opt = v, int(spec.GetBlockSize()), p.GetWeightDecay(), opt
	b.w, b.g, b.m, b.v = make([]float32, n), make([]float32, n), make([]float32, n), make([]float32, n)
	b.steps = 0
	b.caches = sdk.CacheTable[*cache]{}
	return &pb.ConfigureResponse{ParameterCount: uint64(n), MemoryBytes: uint64(16 * n)}, nil
}

func (b *Backend) configured() error {
	if b.w == nil {
		return sdk.FailedPrecondition("the backend is not configured: call Configure first")
	}
	return nil
}

// tensorFor returns the storage of a (name, role) pair.
func (b *Backend) tensorFor(field, name string, role pb.TensorRole) ([]float32, error) {
	if name != WeightName {
		return nil, sdk.InvalidArgument(field+".name", "unknown tensor %q (the model has only %q)", name, WeightName)
	}
	switch role {
	case pb.TensorRole_TENSOR_ROLE_PARAM:
		return b.w, nil
	case pb.TensorRole_TENSOR_ROLE_ADAM_M:
		return b.m, nil
	case pb.TensorRole_TENSOR_ROLE_ADAM_V:
		return b.v, nil
	case pb.TensorRole_TENSOR_ROLE_GRAD:
		return b.g, nil
	}
	return nil, sdk.InvalidArgument(field+".role", "tensor %q: unsupported role %v", name, role)
}

// SetState implements sdk.Backend.
func (b *Backend) SetState(_ context.Context, r sdk.StateReader) (*pb.SetStateResponse, error) {
	if err := b.configured(); err != nil {
		return nil, err
	}
	var n uint32
	for {
		t, err := r.Next()
		if err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			return nil, err
		}
		if t.Role == pb.TensorRole_TENSOR_ROLE_GRAD {
			return nil, sdk.InvalidArgument("chunk.role", "tensor %q: gradients are read-only", t.Name)
		}
		dst, err := b.tensorFor("chunk", t.Name, t.Role)
		if err != nil {
			return nil, err
		}
		if t.DType != pb.DType_DTYPE_F32 {
			return nil, sdk.InvalidArgument("chunk.dtype", "tensor %q: want F32, got %v", t.Name, t.DType)
		}
		if len(t.Shape) != 2 || t.Shape[0] != int64(b.vocab) || t.Shape[1] != int64(b.vocab) {
			return nil, sdk.InvalidArgument("chunk.shape", "tensor %q: want [%d %d], got %v", t.Name, b.vocab, b.vocab, t.Shape)
		}
		vals, err := sdk.F32Values(t.Data)
		if err != nil {
			return nil, sdk.InvalidArgument("chunk.data", "tensor %q: %v", t.Name, err)
		}
		copy(dst, vals)
		n++
	}
	b.steps = r.Header().GetOptimizerSteps()
	clear(b.g)
	return &pb.SetStateResponse{TensorsReceived: n}, nil
}

// GetState implements sdk.Backend.
func (b *Backend) GetState(_ context.Context, req *pb.GetStateRequest, w sdk.StateWriter) error {
	if err := b.configured(); err != nil {
		return err
	}
	if d := req.GetDtype(); d != pb.DType_DTYPE_F32 && d != pb.DType_DTYPE_UNSPECIFIED {
		return sdk.Unimplemented("state conversion to " + d.String())
	}
	for i, name := range req.GetNames() {
		if name != WeightName {
			return sdk.InvalidArgument("names["+strconv.Itoa(i)+"]", "unknown tensor %q", name)
		}
	}
	roles := req.GetRoles()
	if len(roles) == 0 {
		roles = []pb.TensorRole{pb.TensorRole_TENSOR_ROLE_PARAM, pb.TensorRole_TENSOR_ROLE_ADAM_M, pb.TensorRole_TENSOR_ROLE_ADAM_V}
	}
	var out []*sdk.Tensor
	for _, role := range roles {
		src, err := b.tensorFor("roles", WeightName, role)
		if err != nil {
			return err
		}
		out = append(out, sdk.F32Tensor(WeightName, role, []int64{int64(b.vocab), int64(b.vocab)}, src))
	}
	if err := w.WriteHeader(&pb.StateHeader{OptimizerSteps: b.steps, TensorCount: uint32(len(out))}); err != nil {
		return err
	}
	for _, t := range out {
		if err := w.WriteTensor(t); err != nil {
			return err
		}
	}
	return nil
}

// lossAndGrad computes Σ weight·CE of a batch; with scale ≠ 0 it adds
// scale·∂/∂W to the gradient.
func (b *Backend) lossAndGrad(batch *pb.Batch, scale float32, logitsOut []float32) (loss, wsum float64, correct, counted uint64) {
	v := b.vocab
	p := make([]float64, v)
	for i, tok := range batch.GetTokens() {
		row := b.w[int(tok)*v : (int(tok)+1)*v]
		if logitsOut != nil {
			copy(logitsOut[i*v:], row)
		}
		weight := float64(batch.GetLossWeights()[i])
		if weight == 0 {
			continue
		}
		target := int(batch.GetTargets()[i])
		maxv, argmax := row[0], 0
		for j, x := range row {
			if x > maxv {
				maxv, argmax = x, j
			}
		}
		var z float64
		for j, x := range row {
			p[j] = math.Exp(float64(x - maxv))
			z += p[j]
		}
		loss += weight * (math.Log(z) - float64(row[target]-maxv))
		wsum += weight
		counted++
		if argmax == target {
			correct++
		}
		if scale != 0 {
			grow := b.g[int(tok)*v : (int(tok)+1)*v]
			for j := range grow {
				d := p[j] / z
				if j == target {
					d--
				}
				grow[j] += scale * float32(weight*d)
			}
		}
	}
	return loss, wsum, correct, counted
}

// ForwardBackward implements sdk.Backend.
func (b *Backend) ForwardBackward(_ context.Context, req *pb.ForwardBackwardRequest) (*pb.ForwardBackwardResponse, error) {
	if err := b.configured(); err != nil {
		return nil, err
	}
	batch := req.GetBatch()
	if err := sdk.ValidateBatch("batch", batch, b.vocab, b.block); err != nil {
		return nil, err
	}
	if len(batch.GetSegmentIds()) != 0 {
		return nil, sdk.Unimplemented("packed segments (batch.segment_ids)")
	}
	loss, wsum, _, _ := b.lossAndGrad(batch, req.GetGradScale(), nil)
	return &pb.ForwardBackwardResponse{LossSum: loss, WeightSum: wsum, Tokens: uint64(len(batch.GetTokens()))}, nil
}

// OptimizerStep implements sdk.Backend.
func (b *Backend) OptimizerStep(_ context.Context, req *pb.OptimizerStepRequest) (*pb.OptimizerStepResponse, error) {
	if err := b.configured(); err != nil {
		return nil, err
	}
	if err := sdk.ValidateOptimizerStep(req); err != nil {
		return nil, err
	}
	lr, wd := req.GetLearningRate(), req.GetWeightDecay()
	var sq float64
	for _, g := range b.g {
		sq += float64(g) * float64(g)
	}
	norm := math.Sqrt(sq)
	gscale := 1.0
	if c := req.GetClipNorm(); c > 0 && norm > c {
		gscale = c / (norm + 1e-6)
	}
	b.steps++
	b1, b2, eps := b.opt.GetBeta1(), b.opt.GetBeta2(), b.opt.GetEps()
	bc1 := 1 - math.Pow(b1, float64(b.steps))
	bc2 := 1 - math.Pow(b2, float64(b.steps))
	for i := range b.w {
		g := float64(b.g[i]) * gscale
		w := float64(b.w[i])
		if b.decay {
			w -= lr * wd * w
		}
		m := b1*float64(b.m[i]) + (1-b1)*g
		v := b2*float64(b.v[i]) + (1-b2)*g*g
		w -= lr * (m / bc1) / (math.Sqrt(v/bc2) + eps)
		b.w[i], b.m[i], b.v[i] = float32(w), float32(m), float32(v)
	}
	clear(b.g)
	return &pb.OptimizerStepResponse{GradNorm: norm, OptimizerSteps: b.steps}, nil
}

// Evaluate implements sdk.Backend.
func (b *Backend) Evaluate(_ context.Context, req *pb.EvaluateRequest) (*pb.EvaluateResponse, error) {
	if err := b.configured(); err != nil {
		return nil, err
	}
	batch := req.GetBatch()
	if err := sdk.ValidateBatch("batch", batch, b.vocab, b.block); err != nil {
		return nil, err
	}
	if len(batch.GetSegmentIds()) != 0 {
		return nil, sdk.Unimplemented("packed segments (batch.segment_ids)")
	}
	var logits []float32
	if req.GetReturnLogits() {
		logits = make([]float32, len(batch.GetTokens())*b.vocab)
	}
	loss, wsum, correct, counted := b.lossAndGrad(batch, 0, logits)
	if pos := req.GetLogitPositions(); len(pos) > 0 && logits != nil {
		rows := make([]float32, 0, len(pos)*b.vocab)
		for i, p := range pos {
			if int(p) >= len(batch.GetTokens()) {
				return nil, sdk.InvalidArgument("logit_positions["+strconv.Itoa(i)+"]", "position %d outside the batch", p)
			}
			rows = append(rows, logits[int(p)*b.vocab:(int(p)+1)*b.vocab]...)
		}
		logits = rows
	}
	return &pb.EvaluateResponse{LossSum: loss, WeightSum: wsum, Correct: correct, Counted: counted, Logits: logits}, nil
}

// Prefill implements sdk.Backend.
func (b *Backend) Prefill(_ context.Context, req *pb.PrefillRequest) (*pb.PrefillResponse, error) {
	if err := b.configured(); err != nil {
		return nil, err
	}
	toks := req.GetTokens()
	capacity, err := sdk.PrefillCapacity(req, b.block)
	if err != nil {
		return nil, err
	}
	if err := sdk.ValidateTokens("tokens", toks, b.vocab); err != nil {
		return nil, err
	}
	h := b.caches.Add(&cache{last: toks[len(toks)-1], length: len(toks), capacity: capacity})
	var logits []float32
	if req.GetAllLogits() {
		for _, t := range toks {
			logits = append(logits, b.row(t)...)
		}
	} else {
		logits = append(logits, b.row(toks[len(toks)-1])...)
	}
	return &pb.PrefillResponse{CacheHandle: h, Logits: logits}, nil
}

func (b *Backend) row(tok int32) []float32 {
	return b.w[int(tok)*b.vocab : (int(tok)+1)*b.vocab]
}

// Decode implements sdk.Backend.
func (b *Backend) Decode(_ context.Context, req *pb.DecodeRequest) (*pb.DecodeResponse, error) {
	if err := b.configured(); err != nil {
		return nil, err
	}
	c, err := b.caches.Get(req.GetCacheHandle())
	if err != nil {
		return nil, err
	}
	if err := sdk.ValidateDecode(req, b.vocab, c.length, c.capacity); err != nil {
		return nil, err
	}
	c.last = req.GetToken()
	c.length++
	return &pb.DecodeResponse{Logits: append([]float32(nil), b.row(c.last)...), Length: uint32(c.length)}, nil
}

// ReleaseCache implements sdk.Backend.
func (b *Backend) ReleaseCache(_ context.Context, req *pb.ReleaseCacheRequest) (*pb.ReleaseCacheResponse, error) {
	if err := b.configured(); err != nil {
		return nil, err
	}
	if _, err := b.caches.Remove(req.GetCacheHandle()); err != nil {
		return nil, err
	}
	return &pb.ReleaseCacheResponse{}, nil
}

// Shutdown implements sdk.Backend.
func (b *Backend) Shutdown(context.Context) error {
	b.w, b.g, b.m, b.v, b.caches = nil, nil, nil, nil, sdk.CacheTable[*cache]{}
	return nil
}

package conformance

import (
	"errors"
	"fmt"
	"math"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/mypt/mypt/conformance/golden"
	"github.com/mypt/mypt/sdk"
	pb "github.com/mypt/mypt/sdk/proto/backendv1"
)

// statusOf returns the protocol status code and message an error carries.
func statusOf(err error) (codes.Code, string) {
	if err == nil {
		return codes.OK, ""
	}
	var se interface{ GRPCStatus() *status.Status }
	if errors.As(err, &se) {
		st := se.GRPCStatus()
		return st.Code(), st.Message()
	}
	return codes.Unknown, err.Error()
}

// must fails the check when a call that should succeed did not.
func (c *chk) must(err error, what string) {
	c.Helper()
	if err != nil {
		c.Fatalf("%s: %v", what, err)
	}
}

// configure sends Configure for spec in compute dtype d (F32 master weights).
func (c *chk) configure(b sdk.Backend, spec *pb.ModelSpec, opt *pb.OptimizerSpec, d pb.DType, mods ...func(*pb.ConfigureRequest)) *pb.ConfigureResponse {
	c.Helper()
	if opt == nil {
		opt = &pb.OptimizerSpec{Beta1: 0.9, Beta2: 0.95, Eps: 1e-8}
	}
	req := &pb.ConfigureRequest{Model: spec, Optimizer: opt,
		Precision: &pb.Precision{ParamDtype: pb.DType_DTYPE_F32, ComputeDtype: d}, Seed: 1337}
	for _, m := range mods {
		m(req)
	}
	resp, err := b.Configure(c.ctx, req)
	c.must(err, "Configure")
	return resp
}

// openCase configures golden case g and loads its initial parameters.
func (c *chk) openCase(b sdk.Backend, g *golden.Case, d pb.DType, mods ...func(*pb.ConfigureRequest)) {
	c.Helper()
	mods = append([]func(*pb.ConfigureRequest){func(r *pb.ConfigureRequest) { r.MaxBatchSize = g.Batch.BatchSize }}, mods...)
	c.configure(b, g.Spec(), g.OptimizerSpec(), d, mods...)
	c.setState(b, g.InitState())
}

func (c *chk) setState(b sdk.Backend, r sdk.StateReader) *pb.SetStateResponse {
	c.Helper()
	resp, err := b.SetState(c.ctx, r)
	c.must(err, "SetState")
	return resp
}

// stateKey names one tensor of a state stream.
type stateKey struct {
	role pb.TensorRole
	name string
}

// stateSnapshot is a GetState stream held in memory.
type stateSnapshot struct {
	header  *pb.StateHeader
	tensors map[stateKey]*sdk.Tensor
	order   []stateKey
	values  map[stateKey][]float32
	err     error // first malformed tensor
}

func (s *stateSnapshot) WriteHeader(h *pb.StateHeader) error {
	if s.header != nil {
		return errors.New("second state header")
	}
	s.header = h
	return nil
}

func (s *stateSnapshot) WriteTensor(t *sdk.Tensor) error {
	k := stateKey{t.Role, t.Name}
	if _, dup := s.tensors[k]; dup {
		return fmt.Errorf("%v %s sent twice", t.Role, t.Name)
	}
	s.tensors[k] = t
	s.order = append(s.order, k)
	if t.DType == pb.DType_DTYPE_F32 {
		v, err := sdk.F32Values(t.Data)
		if err != nil && s.err == nil {
			s.err = fmt.Errorf("%v %s: %w", t.Role, t.Name, err)
		}
		s.values[k] = v
	} else if s.err == nil {
		s.err = fmt.Errorf("%v %s arrived as %v, F32 was requested", t.Role, t.Name, t.DType)
	}
	return nil
}

// get streams the requested roles (all names) out of b as F32.
func (c *chk) get(b sdk.Backend, roles ...pb.TensorRole) *stateSnapshot {
	c.Helper()
	return c.getReq(b, &pb.GetStateRequest{Roles: roles, Dtype: pb.DType_DTYPE_F32})
}

func (c *chk) getReq(b sdk.Backend, req *pb.GetStateRequest) *stateSnapshot {
	c.Helper()
	s := &stateSnapshot{tensors: map[stateKey]*sdk.Tensor{}, values: map[stateKey][]float32{}}
	c.must(b.GetState(c.ctx, req, s), "GetState")
	if s.err != nil {
		c.Fatalf("GetState: %v", s.err)
	}
	return s
}

// value returns one tensor's values, failing the check when it is missing.
func (c *chk) value(s *stateSnapshot, role pb.TensorRole, name string) []float32 {
	c.Helper()
	v, ok := s.values[stateKey{role, name}]
	if !ok {
		c.Fatalf("GetState did not return %v %s", role, name)
	}
	return v
}

func (c *chk) grads(b sdk.Backend) *stateSnapshot {
	c.Helper()
	return c.get(b, pb.TensorRole_TENSOR_ROLE_GRAD)
}

func (c *chk) evaluate(b sdk.Backend, batch *pb.Batch, logits bool) *pb.EvaluateResponse {
	c.Helper()
	resp, err := b.Evaluate(c.ctx, &pb.EvaluateRequest{Batch: batch, ReturnLogits: logits})
	c.must(err, "Evaluate")
	return resp
}

func (c *chk) forwardBackward(b sdk.Backend, batch *pb.Batch, scale float32, seed uint64) *pb.ForwardBackwardResponse {
	c.Helper()
	resp, err := b.ForwardBackward(c.ctx, &pb.ForwardBackwardRequest{Batch: batch, GradScale: scale, DropoutSeed: seed})
	c.must(err, "ForwardBackward")
	return resp
}

func (c *chk) step(b sdk.Backend, lr, wd, clip float64) *pb.OptimizerStepResponse {
	c.Helper()
	resp, err := b.OptimizerStep(c.ctx, &pb.OptimizerStepRequest{LearningRate: lr, WeightDecay: wd, ClipNorm: clip})
	c.must(err, "OptimizerStep")
	return resp
}

// closeTo compares got with want element-wise and reports the worst element.
// It logs the measured error as a fraction of the tolerance.
func (c *chk) closeTo(what string, got, want []float32, tol Tolerance) bool {
	c.Helper()
	if len(got) != len(want) {
		c.Errorf("%s: %d values, want %d", what, len(got), len(want))
		return false
	}
	ratio, at, maxAbs := tol.worst(got, want)
	if ratio > 1 {
		c.Errorf("%s", tol.failure(what, got, want, ratio, at, maxAbs))
		return false
	}
	c.Logf("%s: max abs error %.3g (%.2f of tolerance)", what, maxAbs, ratio)
	c.comparison++
	if c.worstWhat == "" || ratio > c.worst {
		c.worst, c.worstWhat = ratio, fmt.Sprintf("%s, max abs error %.3g (%.2f of tolerance)", what, maxAbs, ratio)
	}
	return true
}

// relClose compares two scalars relative to max(|want|, floor).
func (c *chk) relClose(what string, got, want, tol, floor float64) bool {
	c.Helper()
	if e := relErr(got, want, floor); e > tol {
		c.Errorf("%s = %.9g, want %.9g (relative error %.3g > %g)", what, got, want, e, tol)
		return false
	}
	return true
}

// firstNonZero returns the index of the first non-zero (or NaN) element of v, or -1.
func firstNonZero(v []float32) int {
	for i, x := range v {
		if x != 0 {
			return i
		}
	}
	return -1
}

// hasNaN returns the index of the first NaN or infinite element of v, or -1.
func hasNaN(v []float32) int {
	for i, x := range v {
		if x != x || math.IsInf(float64(x), 0) {
			return i
		}
	}
	return -1
}

// rows returns rows [r0, r1) of a batch.
func rows(b *pb.Batch, r0, r1 int) *pb.Batch {
	T := int(b.SeqLen)
	out := &pb.Batch{BatchSize: uint32(r1 - r0), SeqLen: b.SeqLen,
		Tokens:      append([]int32(nil), b.Tokens[r0*T:r1*T]...),
		Targets:     append([]int32(nil), b.Targets[r0*T:r1*T]...),
		LossWeights: append([]float32(nil), b.LossWeights[r0*T:r1*T]...)}
	if len(b.SegmentIds) > 0 {
		out.SegmentIds = append([]int32(nil), b.SegmentIds[r0*T:r1*T]...)
	}
	return out
}

// kBiasRule reports whether name is an attention qkv bias, whose key third
// has an exact gradient of 0: the key bias shifts every score of a softmax
// row equally, so Adam turns rounding noise into steps of up to lr there.
func kBiasRule(name string) bool { return strings.HasSuffix(name, "sa.qkv.bias") }

// compareParamsAfterSteps compares parameters after `steps` AdamW steps at lr.
func (c *chk) compareParamsAfterSteps(what, name string, got, want []float32, tol Tolerances, lr float64, steps int) bool {
	c.Helper()
	pt := Tolerance{Atol: tol.ParamPerLRStep * lr * float64(steps), Rtol: tol.ParamRtol}
	if kBiasRule(name) && len(got) == len(want) && len(got)%3 == 0 {
		C := len(got) / 3
		ok := c.closeTo(what+" (key third, within lr per step)", got[C:2*C], want[C:2*C], Tolerance{Atol: lr * float64(steps)})
		got = append(append([]float32{}, got[:C]...), got[2*C:]...)
		want = append(append([]float32{}, want[:C]...), want[2*C:]...)
		return c.closeTo(what, got, want, pt) && ok
	}
	return c.closeTo(what, got, want, pt)
}

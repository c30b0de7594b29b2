package paramstate

import (
	"math"
	"strings"
	"testing"

	"github.com/mypt/mypt/sdk"
	"github.com/mypt/mypt/sdk/modelspec"
	pb "github.com/mypt/mypt/sdk/proto/backendv1"
	"google.golang.org/grpc/codes"
)

// store keeps each role in one flat buffer, as the CPU backend does.
type store struct {
	lay   *modelspec.Layout
	roles map[pb.TensorRole][]float32
}

func newStore(lay *modelspec.Layout, roles ...pb.TensorRole) store {
	s := store{lay, map[pb.TensorRole][]float32{}}
	for _, r := range roles {
		s.roles[r] = make([]float32, lay.Total)
	}
	return s
}

func (s store) Has(r pb.TensorRole) bool { _, ok := s.roles[r]; return ok }

func (s store) Load(r pb.TensorRole, i int, v []float32) error {
	copy(s.roles[r][s.lay.Params[i].Offset:], v)
	return nil
}

func (s store) Values(r pb.TensorRole, i int) ([]float32, error) {
	p := s.lay.Params[i]
	return s.roles[r][p.Offset : p.Offset+p.Size], nil
}

// layout is the smallest model: no blocks, RMSNorm, tied, vocabulary and width 3:
// token_embedding_table.weight [3,3], ln_f.weight [3], lm_head.bias [3].
func layout(t *testing.T) *modelspec.Layout {
	t.Helper()
	a := modelspec.Arch{VocabSize: 3, NEmbd: 3, TieWeights: true, LMHeadBias: true}
	lay, err := modelspec.NewLayout(a, []*pb.ParamSpec{
		{Name: "token_embedding_table.weight", Shape: []int64{3, 3}},
		{Name: "ln_f.weight", Shape: []int64{3}}, {Name: "lm_head.bias", Shape: []int64{3}}})
	if err != nil {
		t.Fatal(err)
	}
	return lay
}

func TestRoundTrip(t *testing.T) {
	lay := layout(t)
	st := newStore(lay, pb.TensorRole_TENSOR_ROLE_PARAM, pb.TensorRole_TENSOR_ROLE_GRAD,
		pb.TensorRole_TENSOR_ROLE_ADAM_M, pb.TensorRole_TENSOR_ROLE_ADAM_V)
	f64 := make([]byte, 24)
	for i, v := range []float64{1.5, -2, 3} {
		bits := math.Float64bits(v)
		for k := range 8 {
			f64[8*i+k] = byte(bits >> (8 * k))
		}
	}
	n, err := Receive(sdk.NewTensorList(7,
		sdk.F32Tensor("lm_head.bias", pb.TensorRole_TENSOR_ROLE_PARAM, []int64{3}, []float32{4, 5, 6}),
		&sdk.Tensor{Name: "ln_f.weight", Role: pb.TensorRole_TENSOR_ROLE_ADAM_M, Shape: []int64{3}, DType: pb.DType_DTYPE_F64, Data: f64},
	), lay, st)
	if err != nil || n != 2 {
		t.Fatalf("Receive: %d %v", n, err)
	}
	w := &sdk.StateCollector{}
	if err := Send(&pb.GetStateRequest{Names: []string{"lm_head.bias"}, Dtype: pb.DType_DTYPE_BF16}, w, lay, 7, st); err != nil {
		t.Fatal(err)
	}
	if w.Head.OptimizerSteps != 7 || w.Head.TensorCount != 3 || len(w.Tensors) != 3 {
		t.Fatalf("Send: header %v, %d tensors", w.Head, len(w.Tensors))
	}
	// BF16 of 4, 5, 6 is exact: the tensor's bytes decode back.
	if got, err := decode(w.Tensors[0].Data, 3, pb.DType_DTYPE_BF16); err != nil || got[0] != 4 || got[2] != 6 || w.Tensors[0].Role != pb.TensorRole_TENSOR_ROLE_PARAM {
		t.Errorf("lm_head.bias as BF16: %v %v", got, err)
	}
	w = &sdk.StateCollector{}
	if err := Send(&pb.GetStateRequest{Roles: []pb.TensorRole{pb.TensorRole_TENSOR_ROLE_ADAM_M}}, w, lay, 7, st); err != nil {
		t.Fatal(err)
	}
	if len(w.Tensors) != 3 || w.Tensors[1].Name != "ln_f.weight" {
		t.Fatalf("adam_m: %d tensors", len(w.Tensors))
	}
	if got, _ := sdk.F32Values(w.Tensors[1].Data); got[0] != 1.5 || got[1] != -2 || got[2] != 3 {
		t.Errorf("ln_f.weight adam_m: %v", got)
	}
}

func TestErrors(t *testing.T) {
	lay := layout(t)
	st := newStore(lay, pb.TensorRole_TENSOR_ROLE_PARAM, pb.TensorRole_TENSOR_ROLE_GRAD)
	f32 := func(name string, role pb.TensorRole, shape ...int64) *sdk.Tensor {
		return sdk.F32Tensor(name, role, shape, []float32{1, 2, 3})
	}
	for _, c := range []struct {
		code codes.Code
		what string
		t    *sdk.Tensor
	}{
		{codes.NotFound, "nope", f32("nope", pb.TensorRole_TENSOR_ROLE_PARAM, 3)},
		{codes.InvalidArgument, "tensor[ln_f.weight].role: gradients are read-only", f32("ln_f.weight", pb.TensorRole_TENSOR_ROLE_GRAD, 3)},
		{codes.InvalidArgument, "tensor[ln_f.weight].role: unsupported", f32("ln_f.weight", pb.TensorRole_TENSOR_ROLE_ADAM_V, 3)},
		{codes.InvalidArgument, "tensor[ln_f.weight].shape", f32("ln_f.weight", pb.TensorRole_TENSOR_ROLE_PARAM, 1, 3)},
		{codes.InvalidArgument, "tensor[ln_f.weight]: got 12 bytes, want 6", &sdk.Tensor{Name: "ln_f.weight", Role: pb.TensorRole_TENSOR_ROLE_PARAM,
			Shape: []int64{3}, DType: pb.DType_DTYPE_BF16, Data: make([]byte, 12)}},
	} {
		if _, err := Receive(sdk.NewTensorList(0, c.t), lay, st); sdk.Code(err) != c.code || !strings.Contains(err.Error(), c.what) {
			t.Errorf("%s: got %v", c.what, err)
		}
	}
	for _, c := range []struct {
		code codes.Code
		what string
		req  *pb.GetStateRequest
	}{
		{codes.InvalidArgument, "roles[1]", &pb.GetStateRequest{Roles: []pb.TensorRole{pb.TensorRole_TENSOR_ROLE_PARAM, pb.TensorRole_TENSOR_ROLE_ADAM_M}}},
		{codes.InvalidArgument, "dtype", &pb.GetStateRequest{Roles: []pb.TensorRole{pb.TensorRole_TENSOR_ROLE_GRAD}, Dtype: pb.DType_DTYPE_F16}},
		{codes.NotFound, "names[1]", &pb.GetStateRequest{Roles: []pb.TensorRole{pb.TensorRole_TENSOR_ROLE_GRAD}, Names: []string{"ln_f.weight", "x"}}},
	} {
		if err := Send(c.req, &sdk.StateCollector{}, lay, 0, st); sdk.Code(err) != c.code || !strings.Contains(err.Error(), c.what) {
			t.Errorf("%s: got %v", c.what, err)
		}
	}
	// no roles: the parameters, and the moments only of a store that keeps them
	var got sdk.StateCollector
	if err := Send(&pb.GetStateRequest{}, &got, lay, 0, st); err != nil {
		t.Fatal(err)
	}
	for _, x := range got.Tensors {
		if x.Role != pb.TensorRole_TENSOR_ROLE_PARAM {
			t.Errorf("GetState without roles sent %v %s from a store without moments", x.Role, x.Name)
		}
	}
	if len(got.Tensors) != len(lay.Params) {
		t.Errorf("GetState without roles sent %d tensors, want the %d parameters", len(got.Tensors), len(lay.Params))
	}
}

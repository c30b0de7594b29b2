package modelspec

import (
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/mypt/mypt/sdk"
	pb "github.com/mypt/mypt/sdk/proto/backendv1"
	"google.golang.org/grpc/codes"
)

// llama is a valid LLaMA-style spec (RoPE, SwiGLU, RMSNorm, tied) with its parameter list.
func llama(t *testing.T) *pb.ModelSpec {
	t.Helper()
	m := &pb.ModelSpec{VocabSize: 11, BlockSize: 8, NLayer: 2, NHead: 2, NEmbd: 8, MlpHidden: 12,
		PosEncoding: pb.PosEncoding_POS_ENCODING_ROPE, MlpType: pb.MLPType_MLP_TYPE_SWIGLU,
		NormType: pb.NormType_NORM_TYPE_RMSNORM, TieWeights: true, RopeTheta: 100, NormEps: 1e-5}
	a, err := Validate(m)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range a.Tensors() {
		m.Params = append(m.Params, &pb.ParamSpec{Name: d.Name, Shape: d.Shape})
	}
	return m
}

func TestValidate(t *testing.T) {
	a, err := Validate(llama(t))
	if err != nil {
		t.Fatal(err)
	}
	if a.HeadDim != 4 || a.RopeScale != 1 || a.LearnedPos || a.LayerNorm || !a.SwiGLU || !a.TieWeights {
		t.Errorf("Validate: %+v", a)
	}
	for _, c := range []struct {
		field string
		edit  func(*pb.ModelSpec)
	}{
		{"model.vocab_size", func(m *pb.ModelSpec) { m.VocabSize = 0 }},
		{"model.n_head", func(m *pb.ModelSpec) { m.NHead = 3 }},
		{"model.n_head", func(m *pb.ModelSpec) { m.NHead, m.NEmbd = 2, 6 }}, // odd RoPE head dim
		{"model.rope_theta", func(m *pb.ModelSpec) { m.RopeTheta = 0 }},
		{"model.rope_scale", func(m *pb.ModelSpec) { m.RopeScale = 0.5 }},
		{"model.pos_encoding", func(m *pb.ModelSpec) { m.PosEncoding = pb.PosEncoding_POS_ENCODING_UNSPECIFIED }},
		{"model.mlp_type", func(m *pb.ModelSpec) { m.MlpType = pb.MLPType_MLP_TYPE_UNSPECIFIED }},
		{"model.norm_type", func(m *pb.ModelSpec) { m.NormType = pb.NormType_NORM_TYPE_UNSPECIFIED }},
		{"model.norm_eps", func(m *pb.ModelSpec) { m.NormEps = 0 }},
		{"model.dropout", func(m *pb.ModelSpec) { m.Dropout = 1 }},
		{"model.neftune_alpha", func(m *pb.ModelSpec) { m.NeftuneAlpha = -1 }},
	} {
		m := llama(t)
		c.edit(m)
		if _, err := Validate(m); sdk.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), c.field+":") {
			t.Errorf("%s: got %v", c.field, err)
		}
	}
}

func TestNewLayout(t *testing.T) {
	m := llama(t)
	a, _ := Validate(m)
	lay, err := NewLayout(a, m.Params)
	if err != nil {
		t.Fatal(err)
	}
	off := 0
	for i, p := range lay.Params {
		if j, ok := lay.Index(p.Name); !ok || j != i || p.Offset != off {
			t.Errorf("param %d %s: index %d %v, offset %d, want %d", i, p.Name, j, ok, p.Offset, off)
		}
		off += p.Size
	}
	if lay.Total != off || off == 0 {
		t.Errorf("total %d, want %d", lay.Total, off)
	}
	w := ViewWeights(a, lay, func(p Param) string { return p.Name })
	if w.LmW != "token_embedding_table.weight" || w.Wpe != "" || w.Layers[1].GateW != "blocks.1.fwd.w_gate.weight" || w.Layers[0].QkvB != "" {
		t.Errorf("ViewWeights: %+v", w)
	}

	for _, c := range []struct {
		field, what string
		edit        func(*pb.ModelSpec)
	}{
		{"model.params[3].shape", "shape", func(m *pb.ModelSpec) { m.Params[3].Shape = []int64{1} }},
		{"model.params[1]", "twice", func(m *pb.ModelSpec) { m.Params[1] = m.Params[0] }},
		{"model.params[0]", "tie_weights", func(m *pb.ModelSpec) { m.Params[0].Name = "lm_head.weight" }},
		{"model.params[0]", "not part", func(m *pb.ModelSpec) { m.Params[0].Name = "nope" }},
		{"model.params[0].dtype", "F32", func(m *pb.ModelSpec) { m.Params[0].Dtype = pb.DType_DTYPE_BF16 }},
		{"model.params", "missing", func(m *pb.ModelSpec) { m.Params = m.Params[1:] }},
	} {
		m := llama(t)
		c.edit(m)
		_, err := NewLayout(a, m.Params)
		if sdk.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), c.field+":") || !strings.Contains(err.Error(), c.what) {
			t.Errorf("%s (%s): got %v", c.field, c.what, err)
		}
	}
}

func TestFrozen(t *testing.T) {
	m := llama(t)
	a, _ := Validate(m)
	m.Params[3].Frozen = true
	lay, err := NewLayout(a, m.Params)
	if err != nil {
		t.Fatal(err)
	}
	if !lay.AnyFrozen || !lay.Params[3].Frozen || lay.Params[2].Frozen {
		t.Errorf("NewLayout: AnyFrozen %v, params[2] %v, params[3] %v", lay.AnyFrozen, lay.Params[2].Frozen, lay.Params[3].Frozen)
	}
	if err := CheckFrozen(m.Params, true); err != nil {
		t.Errorf("CheckFrozen(supported): %v", err)
	}
	err = CheckFrozen(m.Params, false)
	if sdk.Code(err) != codes.Unimplemented || !strings.Contains(err.Error(), "model.params[3].frozen") || !strings.Contains(err.Error(), m.Params[3].Name) {
		t.Errorf("CheckFrozen(unsupported): %v", err)
	}
	m.Params[3].Frozen = false
	if err := CheckFrozen(m.Params, false); err != nil {
		t.Errorf("CheckFrozen(nothing frozen): %v", err)
	}
	if lay, _ := NewLayout(a, m.Params); lay.AnyFrozen {
		t.Error("AnyFrozen with nothing frozen")
	}
}

func TestPositionsAndRope(t *testing.T) {
	segs := []int32{1, 1, 2, 2, 2, 7, 7, 7, 7, 7}
	pos := make([]int32, 10)
	for _, c := range []struct {
		reset bool
		segs  []int32
		want  []int32
	}{
		{true, segs, []int32{0, 1, 0, 1, 2, 0, 1, 2, 3, 4}},
		{false, segs, []int32{0, 1, 2, 3, 4, 0, 1, 2, 3, 4}},
		{true, nil, []int32{0, 1, 2, 3, 4, 0, 1, 2, 3, 4}},
	} {
		Arch{SegmentPositionReset: c.reset}.Positions(pos, c.segs, 2, 5)
		if !slices.Equal(pos, c.want) {
			t.Errorf("reset %v segs %v: positions %v, want %v", c.reset, c.segs, pos, c.want)
		}
	}

	// hd 4: inv_freq = [1, 1/√θ]; with rope_scale 2 position 2 has angles [1, 1/√θ].
	a := Arch{HeadDim: 4, BlockSize: 3, RopeTheta: 10000, RopeScale: 2}
	cos, sin := a.RopeTables()
	wantCos := []float64{1, 1, math.Cos(0.5), math.Cos(0.005), math.Cos(1), math.Cos(0.01)}
	wantSin := []float64{0, 0, math.Sin(0.5), math.Sin(0.005), math.Sin(1), math.Sin(0.01)}
	for i := range wantCos {
		if math.Abs(cos[i]-wantCos[i]) > 1e-15 || math.Abs(sin[i]-wantSin[i]) > 1e-15 {
			t.Errorf("[%d] cos %v sin %v, want %v %v", i, cos[i], sin[i], wantCos[i], wantSin[i])
		}
	}
}

// Spec is Validate's inverse for both architecture families, and its parameter list
// is one NewLayout accepts, with decay where the callback says.
func TestArchSpec(t *testing.T) {
	gpt2 := &pb.ModelSpec{VocabSize: 13, BlockSize: 6, NLayer: 1, NHead: 2, NEmbd: 4, MlpHidden: 16, Bias: true,
		PosEncoding: pb.PosEncoding_POS_ENCODING_LEARNED, MlpType: pb.MLPType_MLP_TYPE_GELU,
		NormType: pb.NormType_NORM_TYPE_LAYERNORM, NormEps: 1e-5, Dropout: 0.1, NeftuneAlpha: 5, SegmentPositionReset: true}
	for _, m := range []*pb.ModelSpec{llama(t), gpt2} {
		a, err := Validate(m)
		if err != nil {
			t.Fatal(err)
		}
		matrix := func(d Tensor) bool { return len(d.Shape) == 2 }
		spec := a.Spec(matrix)
		back, err := Validate(spec)
		if err != nil {
			t.Fatalf("Validate(a.Spec()): %v", err)
		}
		if back != a {
			t.Errorf("Validate(a.Spec()) = %+v, want %+v", back, a)
		}
		lay, err := NewLayout(back, spec.Params)
		if err != nil {
			t.Fatalf("NewLayout(a.Spec().Params): %v", err)
		}
		for _, p := range lay.Params {
			if p.Decay != (len(p.Shape) == 2) || p.Frozen {
				t.Errorf("%s: decay %v frozen %v", p.Name, p.Decay, p.Frozen)
			}
		}
		for _, p := range a.Spec(nil).Params {
			if p.WeightDecay || p.Dtype != pb.DType_DTYPE_F32 {
				t.Errorf("Spec(nil): %s has weight decay %v, dtype %v", p.Name, p.WeightDecay, p.Dtype)
			}
		}
	}
}

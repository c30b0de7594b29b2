// Package modelspec validates a ModelSpec and derives MyPT's canonical parameter list
// and its layout from it: the one place that decides which specs a backend accepts,
// which tensors (MyPT's state_dict names and shapes) an architecture has, and whether
// the host's parameter list matches them. Every shipped backend uses it, so they accept
// exactly the same ModelSpecs and report the same InvalidArgument fields; a third-party
// backend can use it to behave the same way.
package modelspec

import (
	"fmt"
	"math"
	"slices"

	"github.com/mypt/mypt/sdk"
	pb "github.com/mypt/mypt/sdk/proto/backendv1"
)

// Arch is the network shape a ModelSpec describes, validated. The integer fields are
// the spec's (all positive); the booleans name the choice the spec's enums make.
type Arch struct {
	// The spec's sizes, all positive.
	VocabSize, BlockSize, NLayer, NHead, NEmbd, MLPHidden int
	// HeadDim is NEmbd / NHead.
	HeadDim int
	// LearnedPos is true for learned position embeddings, false for RoPE.
	LearnedPos bool
	// LayerNorm is true for LayerNorm, false for RMSNorm.
	LayerNorm bool
	// SwiGLU is true for the SwiGLU MLP, false for the GELU MLP.
	SwiGLU bool
	// Bias switches the attention qkv and projection biases.
	Bias bool
	// TieWeights shares token_embedding_table.weight as the output projection.
	TieWeights bool
	// SegmentPositionReset restarts positions at every packed segment.
	SegmentPositionReset bool
	// RopeTheta and RopeScale are the RoPE base and position scale (RopeScale is 1
	// when the spec leaves it 0); they are unchecked with learned positions.
	RopeTheta, RopeScale float64
	// NormEps, Dropout and NeftuneAlpha are the spec's, checked: NormEps > 0,
	// Dropout in [0,1), NeftuneAlpha ≥ 0.
	NormEps, Dropout, NeftuneAlpha float64
}

// Validate checks m and returns the architecture it describes. Errors are
// sdk.InvalidArgument naming the field ("model.n_head", "model.rope_theta", …).
func Validate(m *pb.ModelSpec) (Arch, error) {
	if m == nil {
		return Arch{}, sdk.InvalidArgument("model", "missing")
	}
	a := Arch{VocabSize: int(m.VocabSize), BlockSize: int(m.BlockSize), NLayer: int(m.NLayer), NHead: int(m.NHead),
		NEmbd: int(m.NEmbd), MLPHidden: int(m.MlpHidden), Bias: m.Bias, TieWeights: m.TieWeights,
		SegmentPositionReset: m.SegmentPositionReset, RopeTheta: m.RopeTheta, RopeScale: m.RopeScale,
		NormEps: m.NormEps, Dropout: m.Dropout, NeftuneAlpha: m.NeftuneAlpha}
	for _, f := range []struct {
		n string
		v int
	}{{"vocab_size", a.VocabSize}, {"block_size", a.BlockSize}, {"n_layer", a.NLayer}, {"n_head", a.NHead}, {"n_embd", a.NEmbd}, {"mlp_hidden", a.MLPHidden}} {
		if f.v <= 0 {
			return a, sdk.InvalidArgument("model."+f.n, "must be positive, got %d", f.v)
		}
	}
	if a.NEmbd%a.NHead != 0 {
		return a, sdk.InvalidArgument("model.n_head", "n_embd %d is not divisible by n_head %d", a.NEmbd, a.NHead)
	}
	a.HeadDim = a.NEmbd / a.NHead
	switch m.PosEncoding {
	case pb.PosEncoding_POS_ENCODING_LEARNED:
		a.LearnedPos = true
	case pb.PosEncoding_POS_ENCODING_ROPE:
		if a.HeadDim%2 != 0 {
			return a, sdk.InvalidArgument("model.n_head", "RoPE needs an even head dim, got %d", a.HeadDim)
		}
		if !(a.RopeTheta > 0) || math.IsInf(a.RopeTheta, 0) {
			return a, sdk.InvalidArgument("model.rope_theta", "must be positive and finite, got %v", a.RopeTheta)
		}
		if a.RopeScale == 0 {
			a.RopeScale = 1
		}
		if !(a.RopeScale >= 1) || math.IsInf(a.RopeScale, 0) {
			return a, sdk.InvalidArgument("model.rope_scale", "must be ≥ 1, got %v", a.RopeScale)
		}
	default:
		return a, sdk.InvalidArgument("model.pos_encoding", "unsupported %v", m.PosEncoding)
	}
	switch m.MlpType {
	case pb.MLPType_MLP_TYPE_GELU:
	case pb.MLPType_MLP_TYPE_SWIGLU:
		a.SwiGLU = true
	default:
		return a, sdk.InvalidArgument("model.mlp_type", "unsupported %v", m.MlpType)
	}
	switch m.NormType {
	case pb.NormType_NORM_TYPE_LAYERNORM:
		a.LayerNorm = true
	case pb.NormType_NORM_TYPE_RMSNORM:
	default:
		return a, sdk.InvalidArgument("model.norm_type", "unsupported %v", m.NormType)
	}
	if !(a.NormEps > 0) || math.IsInf(a.NormEps, 0) {
		return a, sdk.InvalidArgument("model.norm_eps", "must be positive, got %v", a.NormEps)
	}
	if !(a.Dropout >= 0 && a.Dropout < 1) {
		return a, sdk.InvalidArgument("model.dropout", "must be in [0,1), got %v", a.Dropout)
	}
	if !(a.NeftuneAlpha >= 0) || math.IsInf(a.NeftuneAlpha, 0) {
		return a, sdk.InvalidArgument("model.neftune_alpha", "must be ≥ 0, got %v", a.NeftuneAlpha)
	}
	return a, nil
}

// Positions writes each token's position of a [b,t] batch into pos (length b·t): its index
// in the row, restarting at 0 at every segment change when the batch is packed (segs, also
// b·t, non-nil) and SegmentPositionReset is set — MyPT's packed-sequence positions.
func (a Arch) Positions(pos, segs []int32, b, t int) {
	reset := segs != nil && a.SegmentPositionReset
	for r := 0; r < b; r++ {
		start := 0
		for i := 0; i < t; i++ {
			if reset && i > 0 && segs[r*t+i] != segs[r*t+i-1] {
				start = i
			}
			pos[r*t+i] = int32(i - start)
		}
	}
}

// RopeTables returns RoPE's cos and sin tables, [BlockSize][HeadDim/2] row-major, in
// float64 for a backend to round to its dtype: MyPT's inv_freq_i = 1/θ^(2i/hd) and angle
// (t/rope_scale)·inv_freq_i for position t.
func (a Arch) RopeTables() (cos, sin []float64) {
	half := a.HeadDim / 2
	cos, sin = make([]float64, a.BlockSize*half), make([]float64, a.BlockSize*half)
	for t := 0; t < a.BlockSize; t++ {
		for i := 0; i < half; i++ {
			freq := 1 / math.Pow(a.RopeTheta, float64(2*i)/float64(a.HeadDim))
			ang := float64(t) / a.RopeScale * freq
			cos[t*half+i], sin[t*half+i] = math.Cos(ang), math.Sin(ang)
		}
	}
	return cos, sin
}

// Tensor is one parameter tensor an architecture needs.
type Tensor struct {
	Name  string
	Shape []int64
}

// Tensors lists the parameters of the architecture with MyPT's state_dict names (each
// block's norms first here; NewLayout matches the host's list by name, in the host's order). With tied weights lm_head.weight is not a separate tensor. LayerNorm
// always has a bias (MyPT's nn.LayerNorm); Bias switches only the attention qkv/proj
// biases. GELU MLP and lm_head biases are always present.
func (a Arch) Tensors() []Tensor {
	var d []Tensor
	add := func(name string, shape ...int) {
		s := make([]int64, len(shape))
		for i, v := range shape {
			s[i] = int64(v)
		}
		d = append(d, Tensor{name, s})
	}
	C, H := a.NEmbd, a.MLPHidden
	norm := func(name string) {
		add(name+".weight", C)
		if a.LayerNorm {
			add(name+".bias", C)
		}
	}
	add("token_embedding_table.weight", a.VocabSize, C)
	if a.LearnedPos {
		add("position_embedding_table.weight", a.BlockSize, C)
	}
	for l := 0; l < a.NLayer; l++ {
		p := fmt.Sprintf("blocks.%d.", l)
		norm(p + "ln1")
		add(p+"sa.qkv.weight", 3*C, C)
		if a.Bias {
			add(p+"sa.qkv.bias", 3*C)
		}
		add(p+"sa.proj.weight", C, C)
		if a.Bias {
			add(p+"sa.proj.bias", C)
		}
		norm(p + "ln2")
		if a.SwiGLU {
			add(p+"fwd.w_gate.weight", H, C)
			add(p+"fwd.w_up.weight", H, C)
			add(p+"fwd.w_down.weight", C, H)
		} else {
			add(p+"fwd.net.0.weight", H, C)
			add(p+"fwd.net.0.bias", H)
			add(p+"fwd.net.2.weight", C, H)
			add(p+"fwd.net.2.bias", C)
		}
	}
	norm("ln_f")
	if !a.TieWeights {
		add("lm_head.weight", a.VocabSize, C)
	}
	add("lm_head.bias", a.VocabSize)
	return d
}

// Spec returns the ModelSpec describing a — Validate's inverse, so Validate(a.Spec(…))
// gives a back — with a's Tensors as its parameter list (F32 master weights, none
// frozen). decay says which tensors get weight decay; nil means none. It lets a tool
// that holds only an Arch (a test, the conformance suite) build a spec a backend accepts.
func (a Arch) Spec(decay func(Tensor) bool) *pb.ModelSpec {
	m := &pb.ModelSpec{VocabSize: uint32(a.VocabSize), BlockSize: uint32(a.BlockSize), NLayer: uint32(a.NLayer),
		NHead: uint32(a.NHead), NEmbd: uint32(a.NEmbd), MlpHidden: uint32(a.MLPHidden), Bias: a.Bias,
		TieWeights: a.TieWeights, SegmentPositionReset: a.SegmentPositionReset, RopeTheta: a.RopeTheta,
		RopeScale: a.RopeScale, NormEps: a.NormEps, Dropout: a.Dropout, NeftuneAlpha: a.NeftuneAlpha,
		PosEncoding: pb.PosEncoding_POS_ENCODING_ROPE, MlpType: pb.MLPType_MLP_TYPE_GELU,
		NormType: pb.NormType_NORM_TYPE_RMSNORM}
	if a.LearnedPos {
		m.PosEncoding = pb.PosEncoding_POS_ENCODING_LEARNED
	}
	if a.SwiGLU {
		m.MlpType = pb.MLPType_MLP_TYPE_SWIGLU
	}
	if a.LayerNorm {
		m.NormType = pb.NormType_NORM_TYPE_LAYERNORM
	}
	for _, t := range a.Tensors() {
		m.Params = append(m.Params, &pb.ParamSpec{Name: t.Name, Shape: t.Shape, Dtype: pb.DType_DTYPE_F32,
			WeightDecay: decay != nil && decay(t)})
	}
	return m
}

// Param is one tensor of the host's parameter list and where it lives in a flat buffer
// holding every parameter (as the CPU and CUDA backends keep parameters, gradients and
// both Adam moments).
type Param struct {
	Name  string
	Shape []int64
	// Offset is the index of the tensor's first element in the flat buffer; Size is
	// its element count.
	Offset, Size int
	// Decay says whether AdamW applies weight decay to the tensor.
	Decay bool
	// Frozen says the tensor is not trained (ParamSpec.frozen): no AdamW update, no
	// weight decay, not part of the gradient norm.
	Frozen bool
}

// Layout is the host's parameter list, checked against an architecture.
type Layout struct {
	// Params are in the host's ParamSpec order.
	Params []Param
	// Total is the element count of all parameters: the flat buffer's length.
	Total int
	// AnyFrozen says whether some parameter is Frozen.
	AnyFrozen bool
	index     map[string]int
}

// Index returns the position in Params of the tensor called name.
func (l *Layout) Index(name string) (int, bool) {
	i, ok := l.index[name]
	return i, ok
}

// NewLayout checks the host's parameter list against the architecture (every tensor
// exactly once, with the architecture's shape and F32 master weights) and lays it out.
// Errors are sdk.InvalidArgument naming the parameter ("model.params[3].shape", …).
func NewLayout(a Arch, params []*pb.ParamSpec) (*Layout, error) {
	tensors := a.Tensors()
	want := map[string][]int64{}
	for _, d := range tensors {
		want[d.Name] = d.Shape
	}
	lay := &Layout{index: map[string]int{}}
	for i, p := range params {
		field := fmt.Sprintf("model.params[%d]", i)
		shape, ok := want[p.GetName()]
		if !ok {
			if p.GetName() == "lm_head.weight" && a.TieWeights {
				return nil, sdk.InvalidArgument(field, "lm_head.weight must not be listed with tie_weights (it is token_embedding_table.weight)")
			}
			return nil, sdk.InvalidArgument(field, "tensor %q is not part of this architecture", p.GetName())
		}
		if _, dup := lay.index[p.Name]; dup {
			return nil, sdk.InvalidArgument(field, "tensor %q listed twice", p.Name)
		}
		if !slices.Equal(p.Shape, shape) {
			return nil, sdk.InvalidArgument(field+".shape", "tensor %q has shape %v, the architecture needs %v", p.Name, p.Shape, shape)
		}
		if p.Dtype != pb.DType_DTYPE_UNSPECIFIED && p.Dtype != pb.DType_DTYPE_F32 {
			return nil, sdk.InvalidArgument(field+".dtype", "tensor %q: only F32 master weights are supported, got %v", p.Name, p.Dtype)
		}
		n := 1
		for _, s := range shape {
			n *= int(s)
		}
		lay.index[p.Name] = len(lay.Params)
		lay.Params = append(lay.Params, Param{Name: p.Name, Shape: slices.Clone(p.Shape), Offset: lay.Total, Size: n, Decay: p.WeightDecay, Frozen: p.Frozen})
		lay.Total += n
		lay.AnyFrozen = lay.AnyFrozen || p.Frozen
	}
	for _, d := range tensors {
		if _, ok := lay.index[d.Name]; !ok {
			return nil, sdk.InvalidArgument("model.params", "missing tensor %q with shape %v", d.Name, d.Shape)
		}
	}
	return lay, nil
}

// CheckFrozen is the check every backend makes on ParamSpec.frozen: a backend that does
// not declare FEATURE_FROZEN_PARAMS (supported false) must refuse a parameter list with a
// frozen tensor rather than silently train it. The error is sdk.Unimplemented naming
// the first frozen tensor's field ("model.params[3].frozen") and name.
func CheckFrozen(params []*pb.ParamSpec, supported bool) error {
	if supported {
		return nil
	}
	for i, p := range params {
		if p.GetFrozen() {
			return sdk.Unimplemented(fmt.Sprintf("frozen parameters (FEATURE_FROZEN_PARAMS; model.params[%d].frozen, tensor %q)", i, p.GetName()))
		}
	}
	return nil
}

// Weights are views of a model's parameters by their role in the network, of whatever
// type a backend addresses a tensor by (a slice of a flat buffer, a device pointer, …).
// A tensor the architecture does not have is T's zero value.
type Weights[T any] struct {
	Wte, Wpe   T // token_embedding_table.weight, position_embedding_table.weight
	LnfW, LnfB T // ln_f.weight, ln_f.bias
	LmW, LmB   T // lm_head.weight (Wte with tied weights), lm_head.bias
	Layers     []LayerWeights[T]
}

// LayerWeights are the views of one transformer block's parameters (blocks.<l>.…).
type LayerWeights[T any] struct {
	Ln1W, Ln1B   T // ln1.weight, ln1.bias
	QkvW, QkvB   T // sa.qkv.weight, sa.qkv.bias
	ProjW, ProjB T // sa.proj.weight, sa.proj.bias
	Ln2W, Ln2B   T // ln2.weight, ln2.bias
	// The GELU MLP: fwd.net.0.weight, fwd.net.0.bias, fwd.net.2.weight, fwd.net.2.bias.
	Fc1W, Fc1B, Fc2W, Fc2B T
	// The SwiGLU MLP: fwd.w_gate.weight, fwd.w_up.weight, fwd.w_down.weight.
	GateW, UpW, DownW T
}

// ViewWeights returns view(p) for every parameter p of lay, by role.
func ViewWeights[T any](a Arch, lay *Layout, view func(p Param) T) Weights[T] {
	get := func(name string) T {
		i, ok := lay.Index(name)
		if !ok {
			var zero T
			return zero
		}
		return view(lay.Params[i])
	}
	w := Weights[T]{Wte: get("token_embedding_table.weight"), Wpe: get("position_embedding_table.weight"),
		LnfW: get("ln_f.weight"), LnfB: get("ln_f.bias"), LmW: get("lm_head.weight"), LmB: get("lm_head.bias")}
	if a.TieWeights {
		w.LmW = w.Wte
	}
	for l := 0; l < a.NLayer; l++ {
		p := fmt.Sprintf("blocks.%d.", l)
		w.Layers = append(w.Layers, LayerWeights[T]{
			Ln1W: get(p + "ln1.weight"), Ln1B: get(p + "ln1.bias"),
			QkvW: get(p + "sa.qkv.weight"), QkvB: get(p + "sa.qkv.bias"),
			ProjW: get(p + "sa.proj.weight"), ProjB: get(p + "sa.proj.bias"),
			Ln2W: get(p + "ln2.weight"), Ln2B: get(p + "ln2.bias"),
			Fc1W: get(p + "fwd.net.0.weight"), Fc1B: get(p + "fwd.net.0.bias"),
			Fc2W: get(p + "fwd.net.2.weight"), Fc2B: get(p + "fwd.net.2.bias"),
			GateW: get(p + "fwd.w_gate.weight"), UpW: get(p + "fwd.w_up.weight"), DownW: get(p + "fwd.w_down.weight"),
		})
	}
	return w
}

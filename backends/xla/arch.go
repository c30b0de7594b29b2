// This file mirrors backends/cpu/arch.go: both backends must accept exactly the same
// ModelSpecs and parameter lists.

package xla

import (
	"fmt"
	"math"
	"slices"

	"github.com/mypt/mypt/sdk"
	pb "github.com/mypt/mypt/sdk/proto/backendv1"
)

// arch is the network shape a ModelSpec describes, validated.
type arch struct {
	V, block, L, nh, C, hd, H     int
	learnedPos, layerNorm, swiglu bool
	bias, tied, segReset          bool
	ropeTheta, ropeScale, eps     float64
	dropout, neftune              float64
}

func archFromSpec(m *pb.ModelSpec) (arch, error) {
	if m == nil {
		return arch{}, sdk.InvalidArgument("model", "missing")
	}
	a := arch{V: int(m.VocabSize), block: int(m.BlockSize), L: int(m.NLayer), nh: int(m.NHead),
		C: int(m.NEmbd), H: int(m.MlpHidden), bias: m.Bias, tied: m.TieWeights,
		segReset: m.SegmentPositionReset, ropeTheta: m.RopeTheta, ropeScale: m.RopeScale,
		eps: m.NormEps, dropout: m.Dropout, neftune: m.NeftuneAlpha}
	pos := func(name string, v int) error {
		if v <= 0 {
			return sdk.InvalidArgument("model."+name, "must be positive, got %d", v)
		}
		return nil
	}
	for _, f := range []struct {
		n string
		v int
	}{{"vocab_size", a.V}, {"block_size", a.block}, {"n_layer", a.L}, {"n_head", a.nh}, {"n_embd", a.C}, {"mlp_hidden", a.H}} {
		if err := pos(f.n, f.v); err != nil {
			return a, err
		}
	}
	if a.C%a.nh != 0 {
		return a, sdk.InvalidArgument("model.n_head", "n_embd %d is not divisible by n_head %d", a.C, a.nh)
	}
	a.hd = a.C / a.nh
	switch m.PosEncoding {
	case pb.PosEncoding_POS_ENCODING_LEARNED:
		a.learnedPos = true
	case pb.PosEncoding_POS_ENCODING_ROPE:
		if a.hd%2 != 0 {
			return a, sdk.InvalidArgument("model.n_head", "RoPE needs an even head dim, got %d", a.hd)
		}
		if !(a.ropeTheta > 0) || math.IsInf(a.ropeTheta, 0) {
			return a, sdk.InvalidArgument("model.rope_theta", "must be positive and finite, got %v", a.ropeTheta)
		}
		if a.ropeScale == 0 {
			a.ropeScale = 1
		}
		if !(a.ropeScale >= 1) || math.IsInf(a.ropeScale, 0) {
			return a, sdk.InvalidArgument("model.rope_scale", "must be ≥ 1, got %v", a.ropeScale)
		}
	default:
		return a, sdk.InvalidArgument("model.pos_encoding", "unsupported %v", m.PosEncoding)
	}
	switch m.MlpType {
	case pb.MLPType_MLP_TYPE_GELU:
	case pb.MLPType_MLP_TYPE_SWIGLU:
		a.swiglu = true
	default:
		return a, sdk.InvalidArgument("model.mlp_type", "unsupported %v", m.MlpType)
	}
	switch m.NormType {
	case pb.NormType_NORM_TYPE_LAYERNORM:
		a.layerNorm = true
	case pb.NormType_NORM_TYPE_RMSNORM:
	default:
		return a, sdk.InvalidArgument("model.norm_type", "unsupported %v", m.NormType)
	}
	if !(a.eps > 0) || math.IsInf(a.eps, 0) {
		return a, sdk.InvalidArgument("model.norm_eps", "must be positive, got %v", a.eps)
	}
	if !(a.dropout >= 0 && a.dropout < 1) {
		return a, sdk.InvalidArgument("model.dropout", "must be in [0,1), got %v", a.dropout)
	}
	if !(a.neftune >= 0) || math.IsInf(a.neftune, 0) {
		return a, sdk.InvalidArgument("model.neftune_alpha", "must be ≥ 0, got %v", a.neftune)
	}
	return a, nil
}

// tensorDef is one parameter tensor the architecture needs.
type tensorDef struct {
	name  string
	shape []int
}

// tensorDefs lists the parameters of the architecture with MyPT's state_dict names. With
// tied weights lm_head.weight is not a separate tensor. LayerNorm always has a bias (MyPT's
// nn.LayerNorm); `bias` switches only the attention qkv/proj biases. GELU MLP and lm_head
// biases are always present.
func (a arch) tensorDefs() []tensorDef {
	var d []tensorDef
	add := func(name string, shape ...int) { d = append(d, tensorDef{name, shape}) }
	norm := func(name string) {
		add(name+".weight", a.C)
		if a.layerNorm {
			add(name+".bias", a.C)
		}
	}
	add("token_embedding_table.weight", a.V, a.C)
	if a.learnedPos {
		add("position_embedding_table.weight", a.block, a.C)
	}
	for l := 0; l < a.L; l++ {
		p := fmt.Sprintf("blocks.%d.", l)
		norm(p + "ln1")
		add(p+"sa.qkv.weight", 3*a.C, a.C)
		if a.bias {
			add(p+"sa.qkv.bias", 3*a.C)
		}
		add(p+"sa.proj.weight", a.C, a.C)
		if a.bias {
			add(p+"sa.proj.bias", a.C)
		}
		norm(p + "ln2")
		if a.swiglu {
			add(p+"fwd.w_gate.weight", a.H, a.C)
			add(p+"fwd.w_up.weight", a.H, a.C)
			add(p+"fwd.w_down.weight", a.C, a.H)
		} else {
			add(p+"fwd.net.0.weight", a.H, a.C)
			add(p+"fwd.net.0.bias", a.H)
			add(p+"fwd.net.2.weight", a.C, a.H)
			add(p+"fwd.net.2.bias", a.C)
		}
	}
	norm("ln_f")
	if !a.tied {
		add("lm_head.weight", a.V, a.C)
	}
	add("lm_head.bias", a.V)
	return d
}

// slot is where one named tensor lives in the flat parameter buffer.
type slot struct {
	name   string
	shape  []int64
	off, n int
	decay  bool
}

// layout maps every parameter to a range of one flat buffer (params, grads and both Adam
// moments share it).
type layout struct {
	slots  []slot // in the host's ParamSpec order
	byName map[string]int
	total  int
}

// layoutFromSpec checks the host's parameter list against the architecture and lays it out.
func layoutFromSpec(a arch, params []*pb.ParamSpec) (*layout, error) {
	want := map[string][]int{}
	for _, d := range a.tensorDefs() {
		want[d.name] = d.shape
	}
	lay := &layout{byName: map[string]int{}}
	for i, p := range params {
		field := fmt.Sprintf("model.params[%d]", i)
		shape, ok := want[p.GetName()]
		if !ok {
			if p.GetName() == "lm_head.weight" && a.tied {
				return nil, sdk.InvalidArgument(field, "lm_head.weight must not be listed with tie_weights (it is token_embedding_table.weight)")
			}
			return nil, sdk.InvalidArgument(field, "tensor %q is not part of this architecture", p.GetName())
		}
		if _, dup := lay.byName[p.Name]; dup {
			return nil, sdk.InvalidArgument(field, "tensor %q listed twice", p.Name)
		}
		if !slices.Equal(toInts(p.Shape), shape) {
			return nil, sdk.InvalidArgument(field+".shape", "tensor %q has shape %v, the architecture needs %v", p.Name, p.Shape, shape)
		}
		if p.Dtype != pb.DType_DTYPE_UNSPECIFIED && p.Dtype != pb.DType_DTYPE_F32 {
			return nil, sdk.InvalidArgument(field+".dtype", "tensor %q: only F32 master weights are supported, got %v", p.Name, p.Dtype)
		}
		n := 1
		for _, s := range shape {
			n *= s
		}
		lay.byName[p.Name] = len(lay.slots)
		lay.slots = append(lay.slots, slot{name: p.Name, shape: slices.Clone(p.Shape), off: lay.total, n: n, decay: p.WeightDecay})
		lay.total += n
	}
	for _, d := range a.tensorDefs() {
		if _, ok := lay.byName[d.name]; !ok {
			return nil, sdk.InvalidArgument("model.params", "missing tensor %q with shape %v", d.name, d.shape)
		}
	}
	return lay, nil
}

func toInts(s []int64) []int {
	out := make([]int, len(s))
	for i, v := range s {
		out[i] = int(v)
	}
	return out
}

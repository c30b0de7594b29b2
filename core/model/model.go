// Package model describes the network the core trains, independent of any
// backend: every parameter's MyPT state_dict name and shape, which ones get
// weight decay, the parameter count, and the deterministic initialisation
// that makes every backend start from the same weights, bit for bit.
package model

import (
	"fmt"
	"hash/fnv"
	"io"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"

	"github.com/mypt/mypt/core/config"
	"github.com/mypt/mypt/sdk"
	pb "github.com/mypt/mypt/sdk/proto/backendv1"
)

// Init says how a parameter starts.
type Init int

const (
	InitNormal Init = iota // N(0, Std)
	InitZeros
	InitOnes
)

// Param is one trainable tensor.
type Param struct {
	Name  string
	Shape []int64
	Decay bool // decoupled weight decay applies
	// Frozen: not trained (MyPT's requires_grad=False); see Spec.Freeze.
	Frozen bool
	Init   Init
	Std    float64 // for InitNormal
}

// Numel returns the number of scalars in p.
func (p Param) Numel() int64 {
	n := int64(1)
	for _, d := range p.Shape {
		n *= d
	}
	return n
}

// Spec is a model architecture with its parameter list.
type Spec struct {
	VocabSize, BlockSize, NLayer, NHead, NEmbd, MLPHidden int
	PosEncoding, MLPType, NormType                        string
	Bias, TieWeights, SegmentPositionReset                bool
	RopeTheta, RopeScale, NormEps, Dropout, NeftuneAlpha  float64
	Params                                                []Param
}

// MLPHidden returns the feed-forward width: 4·C for GELU, and for SwiGLU
// MyPT's ceil64(int(8·C/3)).
func MLPHidden(mlpType string, nEmbd int) int {
	if mlpType == "swiglu" {
		h := 8 * nEmbd / 3
		return (h + 63) / 64 * 64
	}
	return 4 * nEmbd
}

// NewSpec derives the architecture and parameter list from a config
// (docs/MYPT.md §11 model architecture, §12 initialisation).
func NewSpec(cfg config.Config) Spec {
	c, v, l := int64(cfg.NEmbd), int64(cfg.VocabSize), cfg.NLayer
	s := Spec{
		VocabSize: cfg.VocabSize, BlockSize: cfg.BlockSize, NLayer: l, NHead: cfg.NHead, NEmbd: cfg.NEmbd,
		MLPHidden: MLPHidden(cfg.MLPType, cfg.NEmbd), PosEncoding: cfg.PosEncoding, MLPType: cfg.MLPType,
		NormType: cfg.NormType, Bias: cfg.Bias, TieWeights: cfg.TieWeights,
		SegmentPositionReset: cfg.SegmentPositionReset, RopeTheta: cfg.RopeTheta, RopeScale: cfg.RopeScale,
		Dropout: cfg.Dropout, NeftuneAlpha: cfg.NeftuneAlpha, NormEps: 1e-5,
	}
	if cfg.NormType == "rmsnorm" {
		s.NormEps = 1e-6
	}
	h := int64(s.MLPHidden)
	const std = 0.02
	// GPT-2's scaled init for the projections that write into the residual
	// stream. MyPT means to do this but matches "attn.proj.weight", which its
	// attention module (named "sa") never has; we scale sa.proj too.
	residualStd := std / math.Sqrt(2*float64(l))

	weight := func(name string, shape ...int64) Param {
		return Param{Name: name, Shape: shape, Init: InitNormal, Std: std}
	}
	zeros := func(name string, n int64) Param { return Param{Name: name, Shape: []int64{n}, Init: InitZeros} }
	ones := func(name string, n int64) Param { return Param{Name: name, Shape: []int64{n}, Init: InitOnes} }
	norm := func(prefix string) []Param {
		if cfg.NormType == "rmsnorm" {
			return []Param{ones(prefix+".weight", c)}
		}
		return []Param{ones(prefix+".weight", c), zeros(prefix+".bias", c)} // LayerNorm always has a bias
	}

	ps := []Param{weight("token_embedding_table.weight", v, c)}
	if cfg.PosEncoding == "learned" {
		ps = append(ps, weight("position_embedding_table.weight", int64(cfg.BlockSize), c))
	}
	for i := range l {
		b := fmt.Sprintf("blocks.%d.", i)
		ps = append(ps, weight(b+"sa.qkv.weight", 3*c, c))
		if cfg.Bias {
			ps = append(ps, zeros(b+"sa.qkv.bias", 3*c))
		}
		proj := weight(b+"sa.proj.weight", c, c)
		proj.Std = residualStd
		ps = append(ps, proj)
		if cfg.Bias {
			ps = append(ps, zeros(b+"sa.proj.bias", c))
		}
		if cfg.MLPType == "swiglu" {
			down := weight(b+"fwd.w_down.weight", c, h)
			down.Std = residualStd
			ps = append(ps, weight(b+"fwd.w_gate.weight", h, c), weight(b+"fwd.w_up.weight", h, c), down)
		} else {
			out := weight(b+"fwd.net.2.weight", c, h)
			out.Std = residualStd
			// The GELU MLP's linears always have biases (MyPT ignores `bias` there).
			ps = append(ps, weight(b+"fwd.net.0.weight", h, c), zeros(b+"fwd.net.0.bias", h), out, zeros(b+"fwd.net.2.bias", c))
		}
		ps = append(ps, norm(b+"ln1")...)
		ps = append(ps, norm(b+"ln2")...)
	}
	ps = append(ps, norm("ln_f")...)
	if !cfg.TieWeights {
		ps = append(ps, weight("lm_head.weight", v, c))
	}
	ps = append(ps, zeros("lm_head.bias", v)) // lm_head always has a bias in MyPT

	for i := range ps {
		ps[i].Decay = decays(ps[i])
	}
	s.Params = ps
	return s
}

// decays is MyPT's grouping (docs/MYPT.md §14): no decay for 1-D tensors
// (biases, norms) or names containing "embedding" or "ln"; decay for
// everything else.
func decays(p Param) bool {
	if len(p.Shape) == 1 {
		return false
	}
	return !strings.Contains(p.Name, "embedding") && !strings.Contains(p.Name, "ln")
}

// NumParams counts scalars, tied tensors once.
func (s Spec) NumParams() (total, decay int64) {
	for _, p := range s.Params {
		total += p.Numel()
		if p.Decay {
			decay += p.Numel()
		}
	}
	return total, decay
}

// Freeze returns s with MyPT's freeze_layers and freeze_embeddings applied: the tensors of
// the first layers transformer blocks ("blocks.<l>." with l < layers) and, with embeddings,
// token_embedding_table.weight and position_embedding_table.weight are Frozen; every other
// tensor is not. MyPT sets requires_grad=False on them, so they get no gradient-norm share,
// no AdamW update and no weight decay. With tied weights lm_head.weight is
// token_embedding_table.weight, so freezing the embeddings freezes the output projection
// too (as in MyPT, where they are one Parameter); lm_head.bias stays trainable.
func (s Spec) Freeze(layers int, embeddings bool) Spec {
	ps := slices.Clone(s.Params)
	for i := range ps {
		ps[i].Frozen = frozen(ps[i].Name, layers, embeddings)
	}
	s.Params = ps
	return s
}

func frozen(name string, layers int, embeddings bool) bool {
	if name == "token_embedding_table.weight" || name == "position_embedding_table.weight" {
		return embeddings
	}
	rest, ok := strings.CutPrefix(name, "blocks.")
	if !ok {
		return false
	}
	idx, _, _ := strings.Cut(rest, ".")
	l, err := strconv.Atoi(idx)
	return err == nil && l < layers
}

// FrozenParams counts the scalars of Frozen tensors.
func (s Spec) FrozenParams() int64 {
	var n int64
	for _, p := range s.Params {
		if p.Frozen {
			n += p.Numel()
		}
	}
	return n
}

// Proto returns the ModelSpec sent to backends.
func (s Spec) Proto() *pb.ModelSpec {
	m := &pb.ModelSpec{
		VocabSize: uint32(s.VocabSize), BlockSize: uint32(s.BlockSize), NLayer: uint32(s.NLayer),
		NHead: uint32(s.NHead), NEmbd: uint32(s.NEmbd), MlpHidden: uint32(s.MLPHidden),
		Bias: s.Bias, TieWeights: s.TieWeights, RopeTheta: s.RopeTheta, RopeScale: s.RopeScale,
		NormEps: s.NormEps, Dropout: s.Dropout, NeftuneAlpha: s.NeftuneAlpha,
		SegmentPositionReset: s.SegmentPositionReset,
		PosEncoding:          pb.PosEncoding_POS_ENCODING_LEARNED,
		MlpType:              pb.MLPType_MLP_TYPE_GELU,
		NormType:             pb.NormType_NORM_TYPE_LAYERNORM,
	}
	if s.PosEncoding == "rope" {
		m.PosEncoding = pb.PosEncoding_POS_ENCODING_ROPE
	}
	if s.MLPType == "swiglu" {
		m.MlpType = pb.MLPType_MLP_TYPE_SWIGLU
	}
	if s.NormType == "rmsnorm" {
		m.NormType = pb.NormType_NORM_TYPE_RMSNORM
	}
	for _, p := range s.Params {
		m.Params = append(m.Params, &pb.ParamSpec{Name: p.Name, Shape: p.Shape, Dtype: pb.DType_DTYPE_F32, WeightDecay: p.Decay, Frozen: p.Frozen})
	}
	return m
}

// InitTensor returns parameter p's initial values for a run seed. Each
// parameter draws from its own stream, keyed by (seed, name), so values do
// not depend on the order or the set of other parameters.
func InitTensor(p Param, seed int64) []float32 {
	out := make([]float32, p.Numel())
	switch p.Init {
	case InitOnes:
		for i := range out {
			out[i] = 1
		}
	case InitNormal:
		h := fnv.New64a()
		h.Write([]byte(p.Name))
		rng := rand.New(rand.NewPCG(uint64(seed), h.Sum64()))
		for i := range out {
			out[i] = float32(rng.NormFloat64() * p.Std)
		}
	}
	return out
}

// InitState returns a StateReader over freshly initialised parameters.
func (s Spec) InitState(seed int64) sdk.StateReader {
	return &initReader{spec: s, seed: seed}
}

// initReader produces initial parameters one at a time, so a large model's
// initial state is never all in memory at once.
type initReader struct {
	spec Spec
	seed int64
	next int
}

func (r *initReader) Header() *pb.StateHeader {
	return &pb.StateHeader{TensorCount: uint32(len(r.spec.Params))}
}

func (r *initReader) Next() (*sdk.Tensor, error) {
	if r.next >= len(r.spec.Params) {
		return nil, io.EOF
	}
	p := r.spec.Params[r.next]
	r.next++
	return sdk.F32Tensor(p.Name, pb.TensorRole_TENSOR_ROLE_PARAM, p.Shape, InitTensor(p, r.seed)), nil
}

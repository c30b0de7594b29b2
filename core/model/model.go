// Package model is the network the core trains, on the model contract of sdk/modelspec:
// the architecture a config describes (a modelspec.Arch, whose Tensors are MyPT's
// state_dict names and shapes) and what the core decides for each tensor — which ones
// get weight decay, which are frozen, and the deterministic initialisation that makes
// every backend start from the same weights, bit for bit.
package model

import (
	"hash/fnv"
	"io"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"

	"github.com/mypt/mypt/core/config"
	"github.com/mypt/mypt/sdk"
	"github.com/mypt/mypt/sdk/modelspec"
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

// Spec is a model architecture with its parameter list: every tensor of Arch.Tensors, in
// that order, with the core's decisions about it.
type Spec struct {
	modelspec.Arch
	Params []Param
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

// ArchOf is the architecture a config describes: MyPT's model (docs/MYPT.md §11), whose
// norms use eps 1e-5 (LayerNorm) or 1e-6 (RMSNorm) and whose lm_head has a bias.
func ArchOf(cfg config.Config) modelspec.Arch {
	a := modelspec.Arch{
		VocabSize: cfg.VocabSize, BlockSize: cfg.BlockSize, NLayer: cfg.NLayer, NHead: cfg.NHead, NKVHead: cfg.NHead,
		NEmbd: cfg.NEmbd, MLPHidden: MLPHidden(cfg.MLPType, cfg.NEmbd),
		LearnedPos: cfg.PosEncoding != "rope", LayerNorm: cfg.NormType != "rmsnorm", SwiGLU: cfg.MLPType == "swiglu",
		Bias: cfg.Bias, TieWeights: cfg.TieWeights, LMHeadBias: true, SegmentPositionReset: cfg.SegmentPositionReset,
		RopeTheta: cfg.RopeTheta, RopeScale: cfg.RopeScale, NormEps: 1e-5, Dropout: cfg.Dropout, NeftuneAlpha: cfg.NeftuneAlpha,
	}
	if a.NHead > 0 {
		a.HeadDim = a.NEmbd / a.NHead
	}
	if !a.LayerNorm {
		a.NormEps = 1e-6
	}
	return a
}

// NewSpec derives the architecture and parameter list from a config.
func NewSpec(cfg config.Config) Spec {
	return SpecOf(ArchOf(cfg))
}

// SpecOf gives every tensor of a its MyPT initialisation and weight-decay group:
// biases start at zero, norm weights at one, every matrix N(0, 0.02) — except the
// projections that write into the residual stream, N(0, 0.02/√(2·n_layer)) as GPT-2
// does. MyPT means to scale those too but matches "attn.proj.weight", which its
// attention module (named "sa") never has (docs/MYPT.md §12); mypt scales sa.proj as well.
func SpecOf(a modelspec.Arch) Spec {
	const std = 0.02
	residualStd := std / math.Sqrt(2*float64(a.NLayer))
	s := Spec{Arch: a}
	for _, t := range a.Tensors() {
		p := Param{Name: t.Name, Shape: t.Shape}
		switch {
		case strings.HasSuffix(t.Name, ".bias"):
			p.Init = InitZeros
		case len(t.Shape) == 1: // norm weights
			p.Init = InitOnes
		default:
			p.Init, p.Std = InitNormal, std
			if strings.HasSuffix(t.Name, "sa.proj.weight") || strings.HasSuffix(t.Name, "fwd.w_down.weight") ||
				strings.HasSuffix(t.Name, "fwd.net.2.weight") {
				p.Std = residualStd
			}
		}
		p.Decay = decays(p)
		s.Params = append(s.Params, p)
	}
	return s
}

// decays is MyPT's grouping: no decay for 1-D tensors (biases, norms) or
// names containing "embedding" or "ln"; decay for everything else.
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
	m := s.Arch.Spec(nil)
	m.Params = m.Params[:0]
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

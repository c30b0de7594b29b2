package conformance

import (
	"fmt"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"strings"

	"github.com/mypt/mypt/conformance/golden"
	"github.com/mypt/mypt/sdk"
	"github.com/mypt/mypt/sdk/modelspec"
	pb "github.com/mypt/mypt/sdk/proto/backendv1"
)

// The models of the checks that need other sizes than the golden cases':
// built from sdk/modelspec, which gives MyPT's canonical tensor names and
// shapes, so the suite needs no trainer code to describe a model.

// modelSize is the shape of such a model; the architecture family comes
// from a golden case.
type modelSize struct {
	vocab, block, layers, heads, embd int
	untied                            bool // an lm_head.weight of its own
}

// archLike is golden case g's architecture (position encoding, MLP, norm,
// eps, RoPE base, position reset) at the given size, with attention biases
// and no dropout.
func archLike(g *golden.Case, size modelSize) (modelspec.Arch, error) {
	a, err := modelspec.Validate(g.Spec())
	if err != nil {
		return a, fmt.Errorf("golden case %s: %w", g.Case, err)
	}
	a.VocabSize, a.BlockSize, a.NLayer, a.NHead, a.NKVHead, a.NEmbd = size.vocab, size.block, size.layers, size.heads, size.heads, size.embd
	a.HeadDim = size.embd / size.heads
	a.MLPHidden = mlpHidden(a.SwiGLU, size.embd)
	a.Bias, a.TieWeights, a.Dropout, a.NeftuneAlpha = true, !size.untied, 0, 0
	return a, nil
}

// specLike is archLike's ModelSpec, with MyPT's weight-decay grouping.
func (c *chk) specLike(g *golden.Case, size modelSize) *pb.ModelSpec {
	c.Helper()
	a, err := archLike(g, size)
	c.must(err, "model spec")
	return a.Spec(myptDecays)
}

// mlpHidden is MyPT's feed-forward width: 4·C for GELU, ceil64(8·C/3) for SwiGLU.
func mlpHidden(swiglu bool, embd int) int {
	if swiglu {
		return (8*embd/3 + 63) / 64 * 64
	}
	return 4 * embd
}

// myptDecays is MyPT's weight-decay grouping: no decay for 1-D tensors
// (biases, norms) or embeddings and norms by name; decay for the rest.
func myptDecays(t modelspec.Tensor) bool {
	return len(t.Shape) > 1 && !strings.Contains(t.Name, "embedding") && !strings.Contains(t.Name, "ln")
}

// initStd is GPT-2's (and MyPT's) initial weight scale.
const initStd = 0.02

// initState is a deterministic MyPT-style initialisation of spec's
// parameters: norm weights 1, biases 0, matrices normal with std 0.02 (the
// projections into the residual stream 0.02/√(2·n_layer), GPT-2's scaled
// init). Each tensor draws from its own stream keyed by (seed, name), so its
// values do not depend on the other tensors.
func initState(spec *pb.ModelSpec, seed uint64) *sdk.TensorList {
	residual := initStd / math.Sqrt(2*float64(spec.GetNLayer()))
	var ts []*sdk.Tensor
	for _, p := range spec.GetParams() {
		ts = append(ts, sdk.F32Tensor(p.Name, pb.TensorRole_TENSOR_ROLE_PARAM, p.Shape, initTensor(p, seed, residual)))
	}
	return sdk.NewTensorList(0, ts...)
}

func initTensor(p *pb.ParamSpec, seed uint64, residualStd float64) []float32 {
	n := 1
	for _, d := range p.Shape {
		n *= int(d)
	}
	v := make([]float32, n)
	switch {
	case len(p.Shape) == 1 && strings.HasSuffix(p.Name, ".weight"): // a norm's gain
		for i := range v {
			v[i] = 1
		}
	case len(p.Shape) == 1: // a bias
	default:
		std := initStd
		if strings.HasSuffix(p.Name, "sa.proj.weight") || strings.HasSuffix(p.Name, "fwd.net.2.weight") ||
			strings.HasSuffix(p.Name, "fwd.w_down.weight") {
			std = residualStd
		}
		h := fnv.New64a()
		h.Write([]byte(p.Name))
		rng := rand.New(rand.NewPCG(seed, h.Sum64()))
		for i := range v {
			v[i] = float32(rng.NormFloat64() * std)
		}
	}
	return v
}

package xla

import (
	"github.com/mypt/mypt/sdk/modelspec"
	pb "github.com/mypt/mypt/sdk/proto/backendv1"
)

// The ModelSpec is validated and the parameter list laid out by sdk/modelspec, as in the
// other backends, so all accept exactly the same specs. arch and layout carry the result
// under the short names the graph code (model.go, programs.go) uses.

// arch is a validated modelspec.Arch in the graph code's names.
type arch struct {
	V, block, L, nh, C, hd, H     int
	learnedPos, layerNorm, swiglu bool
	bias, tied, segReset          bool
	ropeTheta, ropeScale, eps     float64
	dropout, neftune              float64

	spec modelspec.Arch
}

func archFromSpec(m *pb.ModelSpec) (arch, error) {
	s, err := modelspec.Validate(m)
	if err != nil {
		return arch{}, err
	}
	return arch{V: s.VocabSize, block: s.BlockSize, L: s.NLayer, nh: s.NHead, C: s.NEmbd, hd: s.HeadDim, H: s.MLPHidden,
		learnedPos: s.LearnedPos, layerNorm: s.LayerNorm, swiglu: s.SwiGLU,
		bias: s.Bias, tied: s.TieWeights, segReset: s.SegmentPositionReset,
		ropeTheta: s.RopeTheta, ropeScale: s.RopeScale, eps: s.NormEps,
		dropout: s.Dropout, neftune: s.NeftuneAlpha, spec: s}, nil
}

// slot is one parameter of the layout (a modelspec.Param).
type slot struct {
	name  string
	shape []int64
	n     int
	decay bool
}

// layout is the host's parameter list: slots in its ParamSpec order.
type layout struct {
	slots []slot
	total int
	spec  *modelspec.Layout
}

// layoutFromSpec checks the host's parameter list against the architecture and lays it out.
func layoutFromSpec(a arch, params []*pb.ParamSpec) (*layout, error) {
	l, err := modelspec.NewLayout(a.spec, params)
	if err != nil {
		return nil, err
	}
	lay := &layout{total: l.Total, spec: l}
	for _, p := range l.Params {
		lay.slots = append(lay.slots, slot{name: p.Name, shape: p.Shape, n: p.Size, decay: p.Decay})
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

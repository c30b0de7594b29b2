package gpt

import (
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"testing"

	"github.com/mypt/mypt/sdk/modelspec"
	pb "github.com/mypt/mypt/sdk/proto/backendv1"
)

// tinySpec is a small model of one architecture with every parameter list variant the
// flags choose.
func tinySpec(llama, tied, bias, lmBias bool) *pb.ModelSpec {
	s := &pb.ModelSpec{VocabSize: 11, BlockSize: 8, NLayer: 2, NHead: 2, NEmbd: 8, Bias: bias, TieWeights: tied,
		NoLmHeadBias: !lmBias, NormEps: 1e-5, SegmentPositionReset: true, RopeTheta: 100, RopeScale: 1.5,
		PosEncoding: pb.PosEncoding_POS_ENCODING_LEARNED, MlpType: pb.MLPType_MLP_TYPE_GELU,
		NormType: pb.NormType_NORM_TYPE_LAYERNORM, MlpHidden: 16}
	if llama {
		s.PosEncoding, s.MlpType, s.NormType, s.MlpHidden = pb.PosEncoding_POS_ENCODING_ROPE, pb.MLPType_MLP_TYPE_SWIGLU, pb.NormType_NORM_TYPE_RMSNORM, 12
	}
	a, err := modelspec.Validate(s)
	if err != nil {
		panic(err)
	}
	for _, d := range a.Tensors() {
		s.Params = append(s.Params, &pb.ParamSpec{Name: d.Name, Shape: d.Shape})
	}
	return s
}

// tinyModel is the model of spec with random parameters.
func tinyModel(t *testing.T, spec *pb.ModelSpec, seed uint64) *model {
	t.Helper()
	a, err := modelspec.Validate(spec)
	if err != nil {
		t.Fatal(err)
	}
	lay, err := modelspec.NewLayout(a, spec.Params)
	if err != nil {
		t.Fatal(err)
	}
	m := newModel(a, lay)
	r := rand.New(rand.NewPCG(seed, 1))
	for i := range m.params {
		m.params[i] = 0.3 * r.NormFloat64()
	}
	return m
}

// packedBatch is two rows of 7 tokens packing 5 segments, with loss weights 0, ½, 1 and 2.
func packedBatch(a modelspec.Arch) (ps pass, targets []int32, weights []float32) {
	ps = pass{b: 2, t: 7,
		tokens: []int32{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 0, 1, 2, 3},
		segs:   []int32{1, 1, 1, 2, 2, 2, 0, 1, 1, 1, 1, 2, 2, 2}}
	ps.pos = make([]int32, ps.b*ps.t)
	a.Positions(ps.pos, ps.segs, ps.b, ps.t)
	targets = []int32{2, 3, 4, 5, 6, 7, 8, 9, 10, 0, 1, 2, 3, 4}
	weights = []float32{1, 1, 0, 2, 1, 1, 0, 1, 0.5, 1, 1, 1, 1, 1}
	return ps, targets, weights
}

// TestGradients compares every parameter's gradient, element by element, with central
// differences (L(θ+h) − L(θ−h))/2h of the weighted loss, in float64, for both
// architectures with tied and untied weights and biases on and off, on two packed rows
// with non-uniform loss weights (zeros included).
func TestGradients(t *testing.T) {
	const h, tol = 1e-5, 1e-6
	for _, llama := range []bool{false, true} {
		for _, variant := range []bool{false, true} {
			name := fmt.Sprintf("llama=%v/tied=%v,bias=%v,lm_head_bias=%v", llama, variant, !variant, !variant)
			t.Run(name, func(t *testing.T) {
				m := tinyModel(t, tinySpec(llama, variant, !variant, !variant), 3)
				ps, targets, weights := packedBatch(m.a)
				loss := func() float64 {
					tot, _ := crossEntropy(m.forward(ps, nil).logits, targets, weights, m.a.VocabSize, 0)
					return tot.LossSum
				}
				x := m.forward(ps, nil)
				_, dlogits := crossEntropy(x.logits, targets, weights, m.a.VocabSize, 1)
				m.backward(x, dlogits)
				worst := 0.0
				for _, p := range m.lay.Params {
					for i := p.Offset; i < p.Offset+p.Size; i++ {
						old := m.params[i]
						m.params[i] = old + h
						up := loss()
						m.params[i] = old - h
						down := loss()
						m.params[i] = old
						num := (up - down) / (2 * h)
						err := math.Abs(num-m.grads[i]) / math.Max(1, math.Abs(num))
						worst = max(worst, err)
						if err > tol {
							t.Fatalf("%s[%d]: backward %.10g, finite difference %.10g", p.Name, i-p.Offset, m.grads[i], num)
						}
					}
				}
				t.Logf("%d parameters: worst error %.2g", m.lay.Total, worst)
			})
		}
	}
}

// TestDeterministicAcrossCores backs FEATURE_DETERMINISTIC: the logits and gradients of
// a pass are the same bits on 1 core as on 3.
func TestDeterministicAcrossCores(t *testing.T) {
	run := func(procs int) (logits, grads []float64) {
		defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(procs))
		m := tinyModel(t, tinySpec(true, false, true, true), 5)
		ps, targets, weights := packedBatch(m.a)
		x := m.forward(ps, nil)
		_, dlogits := crossEntropy(x.logits, targets, weights, m.a.VocabSize, 1)
		m.backward(x, dlogits)
		return x.logits, m.grads
	}
	l1, g1 := run(1)
	l3, g3 := run(3)
	for _, c := range []struct {
		what      string
		one, many []float64
	}{{"logits", l1, l3}, {"gradients", g1, g3}} {
		for i := range c.one {
			if math.Float64bits(c.one[i]) != math.Float64bits(c.many[i]) {
				t.Fatalf("%s[%d]: %v on 1 core, %v on 3", c.what, i, c.one[i], c.many[i])
			}
		}
	}
}

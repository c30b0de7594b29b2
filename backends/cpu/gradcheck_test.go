package cpu

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/mypt/mypt/backends/cpu/gemm"
	"github.com/mypt/mypt/sdk/modelspec"
	pb "github.com/mypt/mypt/sdk/proto/backendv1"
)

// Float64 finite-difference checks of every layer's backward pass, and of the whole
// network (dropout, NEFTune, packed segments included: their masks are a function of the
// seed, so the perturbed forward passes see the same masks).

const fdStep, fdTol = 1e-6, 1e-6

func randVec(r *rand.Rand, n int, scale float64) []float64 {
	v := make([]float64, n)
	for i := range v {
		v[i] = scale * r.NormFloat64()
	}
	return v
}

// checkGrad compares analytic ∂f/∂x[i] with central differences of f on a sample of i.
func checkGrad(t *testing.T, what string, x, analytic []float64, f func() float64) {
	t.Helper()
	idx := rand.New(rand.NewPCG(7, uint64(len(x))))
	n := min(len(x), 24)
	worst := 0.0
	for s := 0; s < n; s++ {
		i := s
		if len(x) > n {
			i = idx.IntN(len(x))
		}
		old := x[i]
		x[i] = old + fdStep
		fp := f()
		x[i] = old - fdStep
		fm := f()
		x[i] = old
		num := (fp - fm) / (2 * fdStep)
		err := math.Abs(num-analytic[i]) / math.Max(1, math.Abs(num))
		worst = max(worst, err)
		if err > fdTol {
			t.Errorf("%s[%d]: analytic %.10g, numeric %.10g", what, i, analytic[i], num)
			return
		}
	}
	t.Logf("%s: worst relative error %.2g", what, worst)
}

func dot(a, b []float64) float64 {
	var s float64
	for i := range a {
		s += a[i] * b[i]
	}
	return s
}

func TestLayerGradients(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	p := newPool(2)
	defer p.close()
	mm := gemmFunc[float64](gemm.ReferenceOf[float64])
	n, c, oc := 6, 8, 5

	t.Run("linear", func(t *testing.T) {
		in, w, b := randVec(r, n*c, 1), randVec(r, oc*c, 1), randVec(r, oc, 1)
		R := randVec(r, n*oc, 1)
		out := make([]float64, n*oc)
		f := func() float64 { linearForward(mm, p, out, in, w, b, n, c, oc); return dot(out, R) }
		din, dw, db := make([]float64, n*c), make([]float64, oc*c), make([]float64, oc)
		linearBackward(mm, p, din, dw, db, R, in, w, n, c, oc, false)
		checkGrad(t, "din", in, din, f)
		checkGrad(t, "dw", w, dw, f)
		checkGrad(t, "db", b, db, f)
	})
	for _, ln := range []bool{true, false} {
		t.Run(fmt.Sprintf("norm layerNorm=%v", ln), func(t *testing.T) {
			in, w, b := randVec(r, n*c, 1), randVec(r, c, 1), randVec(r, c, 1)
			if !ln {
				b = nil
			}
			R := randVec(r, n*c, 1)
			out, mean, rstd := make([]float64, n*c), make([]float64, n), make([]float64, n)
			f := func() float64 { normForward(p, ln, out, mean, rstd, in, w, b, n, c, 1e-5); return dot(out, R) }
			f()
			din, dw := make([]float64, n*c), make([]float64, c)
			var db []float64
			if ln {
				db = make([]float64, c)
			}
			normBackward(p, ln, din, dw, db, R, in, mean, rstd, w, n, c)
			checkGrad(t, "din", in, din, f)
			checkGrad(t, "dw", w, dw, f)
			if ln {
				checkGrad(t, "db", b, db, f)
			}
		})
	}
	t.Run("gelu", func(t *testing.T) {
		in, R := randVec(r, 40, 2), randVec(r, 40, 1)
		out, din := make([]float64, 40), make([]float64, 40)
		f := func() float64 { geluForward(p, out, in); return dot(out, R) }
		geluBackward(p, din, R, in)
		checkGrad(t, "din", in, din, f)
	})
	t.Run("swiglu", func(t *testing.T) {
		g, u, R := randVec(r, 40, 2), randVec(r, 40, 1), randVec(r, 40, 1)
		out, dg, du := make([]float64, 40), make([]float64, 40), make([]float64, 40)
		f := func() float64 { swigluForward(p, out, g, u); return dot(out, R) }
		swigluBackward(p, dg, du, R, g, u)
		checkGrad(t, "dgate", g, dg, f)
		checkGrad(t, "dup", u, du, f)
	})
	t.Run("rope", func(t *testing.T) {
		nh, cc := 2, 8
		a := modelspec.Arch{NEmbd: cc, NHead: nh, HeadDim: cc / nh, BlockSize: n, RopeTheta: 100, RopeScale: 2, NLayer: 0, LearnedPos: false}
		m := newModel[float64](a, &modelspec.Layout{}, p, mm, nil)
		pos := []int32{0, 1, 2, 0, 1, 5}
		x, R := randVec(r, n*3*cc, 1), randVec(r, n*3*cc, 1)
		y := make([]float64, len(x))
		f := func() float64 {
			copy(y, x)
			ropeApply(p, y, pos, m.ropeCos, m.ropeSin, n, cc, nh, false)
			return dot(y, R)
		}
		d := append([]float64{}, R...)
		ropeApply(p, d, pos, m.ropeCos, m.ropeSin, n, cc, nh, true)
		checkGrad(t, "dx", x, d, f)
	})
	t.Run("attention", func(t *testing.T) {
		s := attnShape{b: 2, t: 5, s: 5, c: 8, nh: 2, qkv: 24}
		rows := s.b * s.t
		seg := []int32{1, 1, 2, 2, 2, 0, 3, 3, 3, 3}
		qkv, R := randVec(r, rows*3*s.c, 1), randVec(r, rows*s.c, 1)
		drop := make([]float64, s.b*s.nh*s.t*s.t)
		for i := range drop {
			drop[i] = float64(r.IntN(2)) * 2 // dropout p=0.5
		}
		mms := []gemmFunc[float64]{mm, mm}
		scratch := [][]float64{make([]float64, 2*s.t*s.t), make([]float64, 2*s.t*s.t)}
		y, att := make([]float64, rows*s.c), make([]float64, len(drop))
		f := func() float64 {
			attentionForward(p, mms, scratch, y, att, drop, qkv, batchKeys(qkv, s.c, s.qkv), seg, s)
			return dot(y, R)
		}
		f()
		dqkv := make([]float64, len(qkv))
		attentionBackward(p, mms, scratch, dqkv, R, att, drop, qkv, seg, s)
		checkGrad(t, "dqkv", qkv, dqkv, f)
	})
	t.Run("cross-entropy", func(t *testing.T) {
		v := 7
		logits := randVec(r, n*v, 2)
		targets := []int32{0, 3, 6, 2, 2, 5}
		weights := []float32{1, 0, 2, 0.5, 1, 1}
		acc := make([]lossTotals, 2)
		f := func() float64 {
			tmp := append([]float64{}, logits...)
			return crossEntropy(p, tmp, targets, weights, n, v, 0, false, acc).LossSum
		}
		d := append([]float64{}, logits...)
		crossEntropy(p, d, targets, weights, n, v, 1, true, acc)
		checkGrad(t, "dlogits", logits, d, f)
	})
}

// fdSpec is a small model exercising every option at once.
func fdSpec(llama bool) *pb.ModelSpec {
	s := &pb.ModelSpec{VocabSize: 11, BlockSize: 8, NLayer: 2, NHead: 2, NEmbd: 8, Bias: true,
		NormEps: 1e-5, Dropout: 0.2, NeftuneAlpha: 5, SegmentPositionReset: true, RopeTheta: 100, RopeScale: 1.5}
	if llama {
		s.PosEncoding, s.MlpType, s.NormType, s.MlpHidden, s.TieWeights = pb.PosEncoding_POS_ENCODING_ROPE, pb.MLPType_MLP_TYPE_SWIGLU, pb.NormType_NORM_TYPE_RMSNORM, 12, true
	} else {
		s.PosEncoding, s.MlpType, s.NormType, s.MlpHidden = pb.PosEncoding_POS_ENCODING_LEARNED, pb.MLPType_MLP_TYPE_GELU, pb.NormType_NORM_TYPE_LAYERNORM, 32
	}
	a, _ := modelspec.Validate(s)
	for _, d := range a.Tensors() {
		s.Params = append(s.Params, &pb.ParamSpec{Name: d.Name, Shape: d.Shape})
	}
	return s
}

func TestModelGradients(t *testing.T) {
	for _, llama := range []bool{false, true} {
		t.Run(fmt.Sprintf("llama=%v", llama), func(t *testing.T) {
			spec := fdSpec(llama)
			a, err := modelspec.Validate(spec)
			if err != nil {
				t.Fatal(err)
			}
			lay, err := modelspec.NewLayout(a, spec.Params)
			if err != nil {
				t.Fatal(err)
			}
			p := newPool(2)
			defer p.close()
			mm := gemmFunc[float64](gemm.ReferenceOf[float64])
			m := newModel(a, lay, p, mm, []gemmFunc[float64]{mm, mm})
			r := rand.New(rand.NewPCG(3, 4))
			copy(m.params, randVec(r, len(m.params), 0.3))
			ps := pass{b: 2, t: 7, train: true, seed: 42,
				tokens: []int32{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 0, 1, 2, 3},
				segs:   []int32{1, 1, 1, 2, 2, 2, 0, 1, 1, 1, 1, 2, 2, 2}}
			ps.pos = make([]int32, ps.b*ps.t)
			a.Positions(ps.pos, ps.segs, ps.b, ps.t)
			targets := []int32{2, 3, 4, 5, 6, 7, 8, 9, 10, 0, 1, 2, 3, 4}
			weights := []float32{1, 1, 0, 2, 1, 1, 0, 1, 0.5, 1, 1, 1, 1, 1}
			m.forwardBackward(ps, targets, weights, 1)
			grads := append([]float64{}, m.grads...)
			loss := func() float64 {
				m.forward(ps, nil)
				return m.lossAndGrad(ps.b*ps.t, targets, weights, 0, false).LossSum
			}
			for _, s := range lay.Params {
				checkGrad(t, s.Name, m.params[s.Offset:s.Offset+s.Size], grads[s.Offset:s.Offset+s.Size], loss)
			}
		})
	}
}

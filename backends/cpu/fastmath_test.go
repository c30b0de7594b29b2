package cpu

import (
	"math"
	"testing"
)

func TestFastMath(t *testing.T) {
	worstExp, worstGelu, worstDGelu := 0.0, 0.0, 0.0
	for x := -30.0; x <= 30; x += 0.001 {
		got := float64(exp32(float32(x)))
		want := math.Exp(float64(float32(x)))
		worstExp = max(worstExp, math.Abs(got-want)/want)
		var e [1]float32
		expShiftSum32(e[:], []float32{float32(x)}, 0)
		if float64(e[0]) != got {
			t.Fatalf("expShiftSum32(%v) = %v, exp32 = %v", x, e[0], got)
		}
		xf := float64(float32(x))
		y, dy := gelu32(float32(x))
		cdf := 0.5 * (1 + math.Erf(xf/math.Sqrt2))
		worstGelu = max(worstGelu, math.Abs(float64(y)-xf*cdf)/math.Max(1, math.Abs(xf)))
		worstDGelu = max(worstDGelu, math.Abs(float64(dy)-(cdf+xf*math.Exp(-xf*xf/2)/math.Sqrt(2*math.Pi))))
	}
	t.Logf("exp32 max rel err %.2g, gelu max err %.2g, gelu' max err %.2g", worstExp, worstGelu, worstDGelu)
	if worstExp > 3e-7 || worstGelu > 3e-7 || worstDGelu > 5e-7 {
		t.Fatalf("fast math too inaccurate: exp %.2g gelu %.2g gelu' %.2g", worstExp, worstGelu, worstDGelu)
	}
}

func BenchmarkExpShiftSum32(b *testing.B) {
	src := make([]float32, 50304)
	for i := range src {
		src[i] = float32(i%100) * -0.1
	}
	dst := make([]float32, len(src))
	for b.Loop() {
		expShiftSum32(dst, src, 0)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(src)), "ns/exp")
}

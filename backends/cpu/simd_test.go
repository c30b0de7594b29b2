package cpu

import (
	"math"
	"math/rand/v2"
	"testing"
)

// The assembly loops against math and against their Go reference loops, over lengths that
// exercise both the 8-wide body and the Go tails.

func TestSIMDExp(t *testing.T) {
	if !useAVX2 {
		t.Skip("no AVX2 assembly in this build")
	}
	// every float32 step of 1e-3 in [−100, 100], which covers both clamps
	var src []float32
	for x := -100.0; x <= 100; x += 0.001 {
		src = append(src, float32(x))
	}
	dst := make([]float32, len(src))
	n8 := len(src) &^ 7
	expShiftSumAVX2(&dst[0], &src[0], n8, 0.5)
	worst := 0.0
	for i, x := range src[:n8] {
		ref := float64(exp32(x - 0.5)) // exp32 clamps like the assembly
		w := math.Exp(min(max(float64(x-0.5), expMin), expMax))
		worst = max(worst, math.Abs(float64(dst[i])-w)/w)
		if math.Abs(float64(dst[i])-ref) > 4e-7*ref {
			t.Fatalf("exp(%v): asm %v, exp32 %v", x-0.5, dst[i], ref)
		}
	}
	t.Logf("AVX2 exp max rel err %.2g", worst)
	if worst > 3e-7 {
		t.Fatalf("AVX2 exp max rel err %.2g > 3e-7", worst)
	}
	// the sum, with a shift that keeps it finite in float32
	sum := expShiftSumAVX2(&dst[0], &src[0], n8, 90)
	want := 0.0
	for _, v := range dst[:n8] {
		want += float64(v)
	}
	if math.Abs(float64(sum)-want) > 1e-5*want {
		t.Fatalf("sum %v, want %v", sum, want)
	}
	if s2 := expShiftSumAVX2(nil, &src[0], n8, 90); s2 != sum {
		t.Fatalf("sum-only %v != %v", s2, sum)
	}
}

func TestSIMDWrappers(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for n := 1; n <= 70; n++ {
		x := make([]float32, n)
		for i := range x {
			x[i] = float32(rng.NormFloat64() * 3)
		}
		// exp-sum, with and without storing
		d := make([]float32, n)
		s := expShiftSum32(d, x, 1)
		var ws float64
		for i, v := range x {
			w := float64(exp32(v - 1))
			ws += w
			if math.Abs(float64(d[i])-w) > 4e-7*w {
				t.Fatalf("n=%d exp[%d] %v want %v", n, i, d[i], w)
			}
		}
		if math.Abs(float64(s)-ws) > 1e-6*ws || expShiftSum32(nil, x, 1) != s {
			t.Fatalf("n=%d sum %v want %v", n, s, ws)
		}
		// GELU forward / backward against the scalar gelu32 (itself tested against math.Erf)
		dy := make([]float32, n)
		for i := range dy {
			dy[i] = float32(rng.NormFloat64())
		}
		y, dx := make([]float32, n), make([]float32, n)
		geluForward32(y, x)
		geluBackward32(dx, dy, x)
		for i, v := range x {
			wy, wd := gelu32(v)
			if math.Abs(float64(y[i]-wy)) > 2e-7*max(1, math.Abs(float64(v))) || math.Abs(float64(dx[i]-dy[i]*wd)) > 3e-7*max(1, math.Abs(float64(dy[i]))) {
				t.Fatalf("n=%d gelu(%v): %v %v, want %v %v", n, v, y[i], dx[i], wy, dy[i]*wd)
			}
		}
		var wss float64
		for _, v := range x {
			wss += float64(v) * float64(v)
		}
		if got := sumSquares32(x); math.Abs(got-wss) > 1e-14*wss {
			t.Fatalf("n=%d sum of squares %v want %v", n, got, wss)
		}
		// max, scale, add: exact
		wm := x[0]
		for _, v := range x {
			wm = max(wm, v)
		}
		if got := max32(x); got != wm {
			t.Fatalf("n=%d max %v want %v", n, got, wm)
		}
		for i, v := range x {
			want := 0
			for x[want] != v {
				want++
			}
			if got := index32(x, v); got != want {
				t.Fatalf("n=%d index32(x[%d]) = %d want %d", n, i, got, want)
			}
		}
		if got := index32(x, 1e30); got != n {
			t.Fatalf("n=%d index32(absent) = %d", n, got)
		}
		sc := append([]float32(nil), x...)
		scale32(sc, 0.37)
		ad := append([]float32(nil), x...)
		add32(ad, dy)
		for i := range x {
			if sc[i] != x[i]*0.37 || ad[i] != x[i]+dy[i] {
				t.Fatalf("n=%d scale/add [%d]", n, i)
			}
		}
	}
}

func TestSIMDAdamW(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	c := adamConsts{gscale: 0.7, b1: 0.9, c1: 0.1, b2: 0.95, c2: 0.05, bc2Sqrt: 0.3, eps: 1e-8, decay: 0.999, stepSize: 1e-3}
	for _, n := range []int{1, 7, 8, 9, 64, 1001} {
		mk := func(s float64, pos bool) []float32 {
			x := make([]float32, n)
			for i := range x {
				x[i] = float32(rng.NormFloat64() * s)
				if pos {
					x[i] = x[i] * x[i]
				}
			}
			return x
		}
		p, g, m, v := mk(1, false), mk(0.1, false), mk(0.01, false), mk(0.01, true)
		p2, g2, m2, v2 := append([]float32(nil), p...), append([]float32(nil), g...), append([]float32(nil), m...), append([]float32(nil), v...)
		adamw32(p, g, m, v, &c)
		adamwGo(p2, g2, m2, v2, &c)
		for i := range p {
			// same float32 operations in the same order; allow one rounding of slack
			if !close32(p[i], p2[i]) || !close32(m[i], m2[i]) || !close32(v[i], v2[i]) || g[i] != 0 {
				t.Fatalf("n=%d [%d]: p %v/%v m %v/%v v %v/%v g %v", n, i, p[i], p2[i], m[i], m2[i], v[i], v2[i], g[i])
			}
		}
	}
}

func close32(a, b float32) bool {
	return math.Abs(float64(a-b)) <= 2.4e-7*math.Max(math.Abs(float64(a)), math.Abs(float64(b)))
}

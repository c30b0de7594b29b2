package cpu

import "math"

// Float32 elementwise math for the hot loops (GELU, softmax, cross-entropy). math.Exp and
// math.Erf work in float64 and cost most of a training step; these are accurate to a few
// float32 ulps (exp) and 1.5e-7 absolute (erf), below the float32 tolerances the golden
// tests hold the backend to. The float64 instantiations (tests) keep the math package.

const (
	log2e  = 1.44269504088896340736
	ln2Hi  = 0.693359375
	ln2Lo  = -2.12194440e-4
	expMax = 88.0
	expMin = -87.0
)

// exp32 is e^x: x = k·ln2 + r with |r| ≤ ln2/2, e^r by its degree-6 Taylor polynomial
// (relative error < 2e-8 on that range), times 2^k built in the exponent bits. Inputs are
// clamped to [−87, 88] (the float32 normal range), so exp32(−∞) is e^−87 ≈ 1.6e-38, not 0.
func exp32(x float32) float32 {
	x = min(max(x, expMin), expMax)
	// the +128 offset keeps the argument positive, so truncation is floor
	k := int32(x*log2e+128.5) - 128
	kf := float32(k)
	r := x - kf*ln2Hi - kf*ln2Lo
	p := 1 + r*(1+r*(0.5+r*(1.0/6+r*(1.0/24+r*(1.0/120+r*(1.0/720))))))
	return p * math.Float32frombits(uint32(k+127)<<23)
}

// erfFromExp is erf(x) given e = exp(−x²) (Abramowitz & Stegun 7.1.26, |error| ≤ 1.5e-7).
func erfFromExp(x, e float32) float32 {
	ax := x
	if ax < 0 {
		ax = -ax
	}
	t := 1 / (1 + 0.3275911*ax)
	y := 1 - t*(0.254829592+t*(-0.284496736+t*(1.421413741+t*(-1.453152027+t*1.061405429))))*e
	if x < 0 {
		return -y
	}
	return y
}

// gelu32 returns GELU(x) and its derivative Φ(x) + x·φ(x).
func gelu32(x float32) (y, dy float32) {
	e := exp32(-0.5 * x * x) // exp(−(x/√2)²)
	cdf := 0.5 * (1 + erfFromExp(x*invSqrt2, e))
	return x * cdf, cdf + x*invSqrt2Pi*e
}

// The wrappers below run the AVX2 assembly (simd_amd64.s) on the largest multiple of 8
// elements and the Go loop, which is also their reference in the tests, on the rest.

// expShiftSum32 writes dst[j] = e^(src[j]−shift) (dst may be src, or nil to only sum) and
// returns the sum.
func expShiftSum32(dst, src []float32, shift float32) float32 {
	n8 := vecLen(len(src))
	if n8 == 0 {
		return expShiftSumGo(dst, src, shift)
	}
	var d *float32
	if dst != nil {
		_ = dst[len(src)-1]
		d = &dst[0]
		dst = dst[n8:]
	}
	return expShiftSumAVX2(d, &src[0], n8, shift) + expShiftSumGo(dst, src[n8:], shift)
}

// vecLen is how many of n elements the assembly handles (0 without it).
func vecLen(n int) int {
	if !useAVX2 {
		return 0
	}
	return n &^ 7
}

// geluForward32: out[i] = GELU(in[i]).
func geluForward32(out, in []float32) {
	out = out[:len(in)]
	n8 := vecLen(len(in))
	if n8 > 0 {
		geluFwdAVX2(&out[0], &in[0], n8)
	}
	for i := n8; i < len(in); i++ {
		out[i], _ = gelu32(in[i])
	}
}

// geluBackward32: din[i] = dout[i]·GELU′(in[i]).
func geluBackward32(din, dout, in []float32) {
	din, dout = din[:len(in)], dout[:len(in)]
	n8 := vecLen(len(in))
	if n8 > 0 {
		geluBwdAVX2(&din[0], &dout[0], &in[0], n8)
	}
	for i := n8; i < len(in); i++ {
		_, d := gelu32(in[i])
		din[i] = dout[i] * d
	}
}

// max32 is the largest element of a non-empty x (NaNs are not handled).
func max32(x []float32) float32 {
	m := x[0]
	n8 := vecLen(len(x))
	if n8 > 0 {
		m = maxAVX2(&x[0], n8)
	}
	for _, v := range x[n8:] {
		m = max(m, v)
	}
	return m
}

// index32 is the first i with x[i] == v, or len(x).
func index32(x []float32, v float32) int {
	n8 := vecLen(len(x))
	if n8 > 0 {
		if i := indexAVX2(&x[0], n8, v); i < n8 {
			return i
		}
	}
	for i := n8; i < len(x); i++ {
		if x[i] == v {
			return i
		}
	}
	return len(x)
}

// scale32: x[i] *= f.
func scale32(x []float32, f float32) {
	n8 := vecLen(len(x))
	if n8 > 0 {
		scaleAVX2(&x[0], n8, f)
	}
	for i := n8; i < len(x); i++ {
		x[i] *= f
	}
}

// add32: dst[i] += src[i].
func add32(dst, src []float32) {
	dst = dst[:len(src)]
	n8 := vecLen(len(src))
	if n8 > 0 {
		addAVX2(&dst[0], &src[0], n8)
	}
	for i := n8; i < len(src); i++ {
		dst[i] += src[i]
	}
}

// expShiftSumGo is expShiftSum32's Go loop: exp32 written out so the loop has no calls.
func expShiftSumGo(dst, src []float32, shift float32) float32 {
	var sum float32
	for j, x := range src {
		x -= shift
		if x < expMin {
			x = expMin
		} else if x > expMax {
			x = expMax
		}
		k := int32(x*log2e+128.5) - 128
		kf := float32(k)
		r := x - kf*ln2Hi - kf*ln2Lo
		p := 1 + r*(1+r*(0.5+r*(1.0/6+r*(1.0/24+r*(1.0/120+r*(1.0/720))))))
		e := p * math.Float32frombits(uint32(k+127)<<23)
		sum += e
		if dst != nil {
			dst[j] = e
		}
	}
	return sum
}

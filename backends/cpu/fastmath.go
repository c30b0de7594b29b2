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

// expShiftSum32 writes dst[j] = e^(src[j]−shift) (dst may be src, or nil to only sum) and
// returns the sum; exp32 written out so the loop has no calls.
func expShiftSum32(dst, src []float32, shift float32) float32 {
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

package cpu

import (
	"math"

	"github.com/mypt/mypt/sdk/backendkit"
	"github.com/mypt/mypt/sdk/modelspec"
)

// optimizer is AdamW as torch.optim.AdamW computes it, over the flat parameter buffer.
type optimizer struct {
	beta1, beta2, eps float64
	m, v              []float32
}

// gradNorm is the global L2 norm of g, accumulated in float64.
func gradNorm(p *pool, g []float32, partial []float64) float64 {
	clear(partial)
	p.run(len(g), 1<<14, func(w, lo, hi int) {
		partial[w] += sumSquares32(g[lo:hi])
	})
	var s float64
	for _, x := range partial {
		s += x
	}
	return math.Sqrt(s)
}

// step clips the gradients to st.ClipNorm (0: no clipping) like
// torch.nn.utils.clip_grad_norm_, applies AdamW step st.Number with decoupled weight decay
// on the slots marked for decay, and zeroes the gradients. Frozen slots (requires_grad=False in
// MyPT) take no part: their gradients are zeroed first, so they are not in the norm, and
// their parameters and moments are left as they are. It returns the norm before clipping.
func (o *optimizer) step(p *pool, lay *modelspec.Layout, params, grads []float32, st backendkit.Step, partial []float64) float64 {
	lr, wd := st.LearningRate, st.WeightDecay
	if lay.AnyFrozen {
		for _, s := range lay.Params {
			if s.Frozen {
				clear(grads[s.Offset : s.Offset+s.Size])
			}
		}
	}
	norm := gradNorm(p, grads, partial)
	gscale := float32(1)
	if st.ClipNorm > 0 {
		if coef := st.ClipNorm / (norm + 1e-6); coef < 1 {
			gscale = float32(coef)
		}
	}
	bc1 := 1 - math.Pow(o.beta1, float64(st.Number))
	bc2 := 1 - math.Pow(o.beta2, float64(st.Number))
	stepSize := float32(lr / bc1)
	bc2Sqrt := float32(math.Sqrt(bc2))
	b1, b2, eps := float32(o.beta1), float32(o.beta2), float32(o.eps)
	c := adamConsts{gscale: gscale, b1: b1, c1: 1 - b1, b2: b2, c2: 1 - b2, bc2Sqrt: bc2Sqrt, eps: eps, stepSize: stepSize}
	for _, s := range lay.Params {
		if s.Frozen {
			continue
		}
		c.decay = 1
		if s.Decay {
			c.decay = float32(1 - lr*wd)
		}
		pw, gw := params[s.Offset:s.Offset+s.Size], grads[s.Offset:s.Offset+s.Size]
		mw, vw := o.m[s.Offset:s.Offset+s.Size], o.v[s.Offset:s.Offset+s.Size]
		p.run(s.Size, 1<<14, func(_, lo, hi int) {
			adamw32(pw[lo:hi], gw[lo:hi], mw[lo:hi], vw[lo:hi], &c)
		})
	}
	return norm
}

// adamConsts are one slot's AdamW coefficients, laid out for adamwAVX2.
type adamConsts struct {
	gscale, b1, c1, b2, c2, bc2Sqrt, eps, decay, stepSize float32
}

// adamw32 is one AdamW step over aligned slices, zeroing g: assembly on the multiple-of-8
// prefix, adamwGo (its reference) on the rest.
func adamw32(p, g, m, v []float32, c *adamConsts) {
	n := len(p)
	g, m, v = g[:n], m[:n], v[:n]
	n8 := vecLen(n)
	if n8 > 0 {
		adamwAVX2(&p[0], &g[0], &m[0], &v[0], n8, c)
	}
	adamwGo(p[n8:], g[n8:], m[n8:], v[n8:], c)
}

// adamwGo is torch.optim.AdamW's update in float32: m, v moving averages of the clipped
// gradient, θ ← θ·(1−lr·wd) − (lr/bc1)·m/(√v/√bc2 + eps).
func adamwGo(p, g, m, v []float32, c *adamConsts) {
	for i := range p {
		gi := g[i] * c.gscale
		m[i] = c.b1*m[i] + c.c1*gi
		v[i] = c.b2*v[i] + c.c2*gi*gi
		denom := float32(math.Sqrt(float64(v[i])))/c.bc2Sqrt + c.eps
		p[i] = p[i]*c.decay - c.stepSize*m[i]/denom
		g[i] = 0
	}
}

// sumSquares32 is Σ x², accumulated in float64 (assembly on the multiple-of-8 prefix).
func sumSquares32(x []float32) float64 {
	var s float64
	n8 := vecLen(len(x))
	if n8 > 0 {
		s = sumSquaresAVX2(&x[0], n8)
	}
	for _, v := range x[n8:] {
		s += float64(v) * float64(v)
	}
	return s
}

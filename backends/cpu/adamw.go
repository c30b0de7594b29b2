package cpu

import "math"

// optimizer is AdamW as torch.optim.AdamW computes it, over the flat parameter buffer.
type optimizer struct {
	beta1, beta2, eps float64
	m, v              []float32
	steps             uint64
}

// gradNorm is the global L2 norm of g, accumulated in float64.
func gradNorm(p *pool, g []float32, partial []float64) float64 {
	clear(partial)
	p.run(len(g), 1<<14, func(w, lo, hi int) {
		var s float64
		for _, x := range g[lo:hi] {
			s += float64(x) * float64(x)
		}
		partial[w] += s
	})
	var s float64
	for _, x := range partial {
		s += x
	}
	return math.Sqrt(s)
}

// step clips the gradients to clipNorm (≤ 0: no clipping) like
// torch.nn.utils.clip_grad_norm_, applies one AdamW step with decoupled weight decay on the
// slots marked for decay, and zeroes the gradients. It returns the norm before clipping.
func (o *optimizer) step(p *pool, lay *layout, params, grads []float32, lr, wd, clipNorm float64, partial []float64) float64 {
	norm := gradNorm(p, grads, partial)
	gscale := float32(1)
	if clipNorm > 0 {
		if coef := clipNorm / (norm + 1e-6); coef < 1 {
			gscale = float32(coef)
		}
	}
	o.steps++
	bc1 := 1 - math.Pow(o.beta1, float64(o.steps))
	bc2 := 1 - math.Pow(o.beta2, float64(o.steps))
	stepSize := float32(lr / bc1)
	bc2Sqrt := float32(math.Sqrt(bc2))
	b1, b2, eps := float32(o.beta1), float32(o.beta2), float32(o.eps)
	for _, s := range lay.slots {
		decay := float32(1)
		if s.decay {
			decay = float32(1 - lr*wd)
		}
		pw, gw := params[s.off:s.off+s.n], grads[s.off:s.off+s.n]
		mw, vw := o.m[s.off:s.off+s.n], o.v[s.off:s.off+s.n]
		p.run(s.n, 4096, func(_, lo, hi int) {
			for i := lo; i < hi; i++ {
				g := gw[i] * gscale
				mw[i] = b1*mw[i] + (1-b1)*g
				vw[i] = b2*vw[i] + (1-b2)*g*g
				denom := float32(math.Sqrt(float64(vw[i])))/bc2Sqrt + eps
				pw[i] = pw[i]*decay - stepSize*mw[i]/denom
				gw[i] = 0
			}
		})
	}
	return norm
}

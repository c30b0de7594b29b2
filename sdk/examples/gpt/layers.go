package gpt

import (
	"math"
	"runtime"
	"sync"
)

// parallel runs body over [0, n) split into one contiguous range per core. Callers
// split over outputs, so every number is computed by one goroutine in a fixed order and
// results do not depend on the number of cores.
func parallel(n int, body func(lo, hi int)) {
	k := min(runtime.GOMAXPROCS(0), n)
	if k <= 1 {
		body(0, n)
		return
	}
	var wg sync.WaitGroup
	for i := range k {
		wg.Go(func() { body(i*n/k, (i+1)*n/k) })
	}
	wg.Wait()
}

// addTo: dst += src.
func addTo(dst, src []float64) {
	for i, v := range src {
		dst[i] += v
	}
}

// axpy: y += a·x.
func axpy(y []float64, a float64, x []float64) {
	for i, v := range x {
		y[i] += a * v
	}
}

// dot is Σ a·b.
func dot(a, b []float64) float64 {
	var s float64
	for i := range a {
		s += a[i] * b[i]
	}
	return s
}

// ---------------------------------------------------------------------------------------
// Linear: out[N,OC] = in[N,IC] · W[OC,IC]ᵀ + b (b nil: no bias).

func linear(in, w, b []float64, n, ic, oc int) []float64 {
	out := make([]float64, n*oc)
	parallel(oc, func(lo, hi int) { // over output columns: each weight row is read once
		for o := lo; o < hi; o++ {
			wo := w[o*ic : (o+1)*ic]
			for r := range n {
				s := dot(in[r*ic:(r+1)*ic], wo)
				if b != nil {
					s += b[o]
				}
				out[r*oc+o] = s
			}
		}
	})
	return out
}

// linearBackward adds doutᵀ·in to dw and Σ_rows dout to db (when not nil), and returns
// din = dout·W.
func linearBackward(dw, db, dout, in, w []float64, n, ic, oc int) []float64 {
	parallel(oc, func(lo, hi int) {
		for o := lo; o < hi; o++ {
			dwo := dw[o*ic : (o+1)*ic]
			for r := range n {
				d := dout[r*oc+o]
				axpy(dwo, d, in[r*ic:(r+1)*ic])
				if db != nil {
					db[o] += d
				}
			}
		}
	})
	din := make([]float64, n*ic)
	parallel(n, func(lo, hi int) {
		for r := lo; r < hi; r++ {
			dr := din[r*ic : (r+1)*ic]
			for o, d := range dout[r*oc : (r+1)*oc] {
				axpy(dr, d, w[o*ic:(o+1)*ic])
			}
		}
	})
	return din
}

// ---------------------------------------------------------------------------------------
// Normalisation over rows of width C: LayerNorm y = (x−mean)·rstd·w + b, or RMSNorm
// y = x·rstd·w, with rstd = 1/√(mean((x−mean)²) + eps) (mean = 0 for RMSNorm).

func (m *model) norm(x, w, b []float64) normed {
	C := m.a.NEmbd
	n := len(x) / C
	out := normed{y: make([]float64, len(x)), mean: make([]float64, n), rstd: make([]float64, n)}
	for r := range n {
		xr, yr := x[r*C:(r+1)*C], out.y[r*C:(r+1)*C]
		var mean, ss float64
		if m.a.LayerNorm {
			for _, v := range xr {
				mean += v
			}
			mean /= float64(C)
		}
		for _, v := range xr {
			ss += (v - mean) * (v - mean)
		}
		rstd := 1 / math.Sqrt(ss/float64(C)+m.a.NormEps)
		for j, v := range xr {
			yr[j] = (v - mean) * rstd * w[j]
			if b != nil {
				yr[j] += b[j]
			}
		}
		out.mean[r], out.rstd[r] = mean, rstd
	}
	return out
}

// normBackward adds ∂/∂x to dx, Σ dy·x̂ to dw and Σ dy to db (when not nil), with
// x̂ = (x−mean)·rstd:  dx = rstd·(dy·w − mean(dy·w) − x̂·mean(dy·w·x̂)), the mean(dy·w) term
// for LayerNorm only.
func normBackward(dx, dw, db, dy, x []float64, st normed, w []float64, layerNorm bool) {
	C := len(w)
	for r := range len(st.rstd) {
		xr, dyr, dxr := x[r*C:(r+1)*C], dy[r*C:(r+1)*C], dx[r*C:(r+1)*C]
		mean, rstd := st.mean[r], st.rstd[r]
		var sumD, sumDX float64
		for j := range xr {
			xhat := (xr[j] - mean) * rstd
			sumD += dyr[j] * w[j]
			sumDX += dyr[j] * w[j] * xhat
			dw[j] += dyr[j] * xhat
			if db != nil {
				db[j] += dyr[j]
			}
		}
		sumD, sumDX = sumD/float64(C), sumDX/float64(C)
		if !layerNorm {
			sumD = 0
		}
		for j := range xr {
			xhat := (xr[j] - mean) * rstd
			dxr[j] += rstd * (dyr[j]*w[j] - sumD - xhat*sumDX)
		}
	}
}

// ---------------------------------------------------------------------------------------
// Activations: exact GELU 0.5·x·(1+erf(x/√2)); SwiGLU silu(gate)·up.

func gelu(x []float64) []float64 {
	out := make([]float64, len(x))
	for i, v := range x {
		out[i] = 0.5 * v * (1 + math.Erf(v/math.Sqrt2))
	}
	return out
}

// geluBackward returns dout·(Φ(x) + x·φ(x)).
func geluBackward(dout, x []float64) []float64 {
	din := make([]float64, len(x))
	for i, v := range x {
		cdf := 0.5 * (1 + math.Erf(v/math.Sqrt2))
		pdf := math.Exp(-0.5*v*v) / math.Sqrt(2*math.Pi)
		din[i] = dout[i] * (cdf + v*pdf)
	}
	return din
}

func swiglu(gate, up []float64) []float64 {
	out := make([]float64, len(gate))
	for i, g := range gate {
		out[i] = g / (1 + math.Exp(-g)) * up[i]
	}
	return out
}

// swigluBackward returns ∂/∂gate = dout·up·σ(g)·(1+g·(1−σ(g))) and ∂/∂up = dout·silu(g).
func swigluBackward(dout, gate, up []float64) (dgate, dup []float64) {
	dgate, dup = make([]float64, len(gate)), make([]float64, len(gate))
	for i, g := range gate {
		s := 1 / (1 + math.Exp(-g))
		dgate[i] = dout[i] * up[i] * s * (1 + g*(1-s))
		dup[i] = dout[i] * g * s
	}
	return dgate, dup
}

// ---------------------------------------------------------------------------------------
// RoPE, split-half: in every head of q and k, the pair (x[i], x[i+hd/2]) is rotated by
// the angle of row r's position. inverse rotates back: the backward pass (a rotation's
// transpose is its inverse).

func (m *model) rope(qkv []float64, pos []int32, inverse bool) {
	C, hd := m.a.NEmbd, m.a.HeadDim
	half := hd / 2
	for r := range len(pos) {
		cos := m.ropeCos[int(pos[r])*half : (int(pos[r])+1)*half]
		sin := m.ropeSin[int(pos[r])*half : (int(pos[r])+1)*half]
		for h := range 2 * m.a.NHead { // the heads of q, then those of k
			x := qkv[r*3*C+h*hd : r*3*C+(h+1)*hd]
			for i := range half {
				s := sin[i]
				if inverse {
					s = -s
				}
				x1, x2 := x[i], x[i+half]
				x[i], x[i+half] = x1*cos[i]-x2*s, x2*cos[i]+x1*s
			}
		}
	}
}

// ---------------------------------------------------------------------------------------
// Causal self-attention, per (batch row, head), scale 1/√hd. The queries are the t rows
// of qkv; the keys and values are s per batch row (row stride ld): the batch's own
// (s = t) or a KV cache's, the queries being the last t of them. Query i sees the keys
// up to its own position and, in a packed row, only those of its own segment.

func sameSegment(ps pass, b, i, j int) bool {
	return ps.segs == nil || ps.segs[b*ps.t+i] == ps.segs[b*ps.t+j]
}

// attention returns y [N, C] and the softmax probabilities att [B, NH, T, S].
func (m *model) attention(qkv, k, v []float64, ld, s int, ps pass) (y, att []float64) {
	C, NH, hd, T := m.a.NEmbd, m.a.NHead, m.a.HeadDim, ps.t
	scale := 1 / math.Sqrt(float64(hd))
	y, att = make([]float64, ps.b*T*C), make([]float64, ps.b*NH*T*s)
	parallel(ps.b*NH, func(lo, hi int) {
		for bh := lo; bh < hi; bh++ {
			b, h := bh/NH, bh%NH
			key := func(j int) []float64 { return k[(b*s+j)*ld+h*hd : (b*s+j)*ld+(h+1)*hd] }
			val := func(j int) []float64 { return v[(b*s+j)*ld+h*hd : (b*s+j)*ld+(h+1)*hd] }
			for i := range T {
				q := qkv[(b*T+i)*3*C+h*hd : (b*T+i)*3*C+(h+1)*hd]
				p := att[(bh*T+i)*s : (bh*T+i+1)*s]
				last := s - T + i // query i's own position among the keys
				mx := math.Inf(-1)
				for j := range last + 1 {
					if sameSegment(ps, b, i, j) {
						p[j] = dot(q, key(j)) * scale
						mx = max(mx, p[j])
					}
				}
				var sum float64
				for j := range last + 1 {
					if sameSegment(ps, b, i, j) {
						p[j] = math.Exp(p[j] - mx)
						sum += p[j]
					}
				}
				yi := y[(b*T+i)*C+h*hd : (b*T+i)*C+(h+1)*hd]
				for j := range last + 1 {
					p[j] /= sum
					axpy(yi, p[j], val(j))
				}
			}
		}
	})
	return y, att
}

// attentionBackward returns ∂loss/∂qkv [N, 3C] given dy = ∂loss/∂y (no cache: s = t).
func (m *model) attentionBackward(dy []float64, la *layerActs, ps pass) []float64 {
	C, NH, hd, T := m.a.NEmbd, m.a.NHead, m.a.HeadDim, ps.t
	scale := 1 / math.Sqrt(float64(hd))
	dqkv := make([]float64, ps.b*T*3*C)
	parallel(ps.b*NH, func(lo, hi int) {
		dp := make([]float64, T)
		for bh := lo; bh < hi; bh++ {
			b, h := bh/NH, bh%NH
			// head returns the head's slice of q, k or v (part 0, 1, 2) of row i
			head := func(buf []float64, part, i int) []float64 {
				at := (b*T+i)*3*C + part*C + h*hd
				return buf[at : at+hd]
			}
			for i := range T {
				p := la.att[(bh*T+i)*T : (bh*T+i+1)*T]
				dyi := dy[(b*T+i)*C+h*hd : (b*T+i)*C+(h+1)*hd]
				// y_i = Σ_j p_ij·v_j  (p_ij = 0 for the keys i does not see)
				var pdp float64
				for j := range i + 1 {
					dp[j] = dot(dyi, head(la.qkv, 2, j))
					pdp += p[j] * dp[j]
					axpy(head(dqkv, 2, j), p[j], dyi)
				}
				// softmax: ∂/∂score_ij = p_ij·(dp_ij − Σ_k p_ik·dp_ik); score_ij = scale·q_i·k_j
				for j := range i + 1 {
					ds := p[j] * (dp[j] - pdp) * scale
					axpy(head(dqkv, 0, i), ds, head(la.qkv, 1, j))
					axpy(head(dqkv, 1, j), ds, head(la.qkv, 0, i))
				}
			}
		}
	})
	return dqkv
}

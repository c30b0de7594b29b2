package device

import (
	"math"

	"github.com/mypt/mypt/backends/cuda/kernels"
)

// Go twins of kernels.cu. Each is called once per block (k.bid) and runs the block's
// threads as loops over t = threadIdx.x, one loop per stretch between __syncthreads(), with
// __shared__ arrays as Go slices and per-thread registers as per-thread slices. The
// arithmetic is float32 where the CUDA code's is (math functions through float64 and
// rounded, within the CUDA functions' ulp bounds).

type kctx struct {
	dev         *Fake
	grid, block Dim3
	bid         Dim3
	args        []any
}

func (k *kctx) pf(i int) []float32 { return k.dev.f32(k.args[i].(Ptr)) }
func (k *kctx) pi(i int) []int32   { return k.dev.i32(k.args[i].(Ptr)) }
func (k *kctx) pd(i int) []float64 { return k.dev.f64(k.args[i].(Ptr)) }
func (k *kctx) ph(i int) []uint16  { return k.dev.u16(k.args[i].(Ptr)) }
func (k *kctx) i(i int) int        { return int(k.args[i].(int32)) }
func (k *kctx) l(i int) int        { return int(k.args[i].(int64)) }
func (k *kctx) f(i int) float32    { return k.args[i].(float32) }
func (k *kctx) d(i int) float64    { return k.args[i].(float64) }
func (k *kctx) u(i int) uint64     { return k.args[i].(uint64) }

// threads runs body for every thread of the block (one barrier-free stretch).
func (k *kctx) threads(body func(t int)) {
	for t := 0; t < k.block.X; t++ {
		body(t)
	}
}

// elementwise runs body(i) for the global index i = blockIdx.x·blockDim.x + threadIdx.x < n.
func (k *kctx) elementwise(n int, body func(i int)) {
	k.threads(func(t int) {
		if i := k.bid.X*k.block.X + t; i < n {
			body(i)
		}
	})
}

func expf(x float32) float32   { return float32(math.Exp(float64(x))) }
func erff(x float32) float32   { return float32(math.Erf(float64(x))) }
func logf(x float32) float32   { return float32(math.Log(float64(x))) }
func rsqrtf(x float32) float32 { return float32(1 / math.Sqrt(float64(x))) }

// splitmix and hash53 are kernels.cu's counter-based hash (the CPU backend's).
func splitmix(x uint64) uint64 {
	x += 0x9E3779B97F4A7C15
	x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9
	x = (x ^ (x >> 27)) * 0x94D049BB133111EB
	return x ^ (x >> 31)
}

func hash53(seed, site, i uint64) uint64 { return splitmix(seed^splitmix(site<<48^i)) >> 11 }

func dropScale(seed, site, i, thr uint64, keep float32) float32 {
	if hash53(seed, site, i) < thr {
		return 0
	}
	return keep
}

// blockSum is kernels.cu's shared-memory tree reduction over red (one entry per thread).
func blockSum(red []float32) float32 {
	for s := len(red) / 2; s > 0; s >>= 1 {
		for t := 0; t < s; t++ {
			red[t] += red[t+s]
		}
	}
	return red[0]
}

var twins = map[string]func(k *kctx){
	"embed_fwd": func(k *kctx) {
		out, wte, wpe, tok, pos, n, C := k.pf(0), k.pf(1), k.pf(2), k.pi(3), k.pi(4), k.i(5), k.i(6)
		r := k.bid.X
		if r >= n {
			return
		}
		k.threads(func(t int) {
			for j := t; j < C; j += k.block.X {
				v := wte[int(tok[r])*C+j]
				if wpe != nil {
					v += wpe[int(pos[r])*C+j]
				}
				out[r*C+j] = v
			}
		})
	},
	"neftune": func(k *kctx) {
		x, n, seed, amp := k.pf(0), k.l(1), k.u(2), k.d(3)
		k.elementwise(n, func(i int) {
			u := float64(hash53(seed, 0, uint64(i))) * (1.0 / 9007199254740992.0)
			x[i] += float32(amp * (2*u - 1))
		})
	},
	"embed_bwd": func(k *kctx) {
		table, d, rows, offs, ids, C := k.pf(0), k.pf(1), k.pi(2), k.pi(3), k.pi(4), k.i(5)
		g := k.bid.X
		dst := table[int(ids[g])*C:]
		k.threads(func(t int) {
			for j := t; j < C; j += k.block.X {
				var s float32
				for q := offs[g]; q < offs[g+1]; q++ {
					s += d[int(rows[q])*C+j]
				}
				dst[j] += s
			}
		})
	},
	"norm_fwd": func(k *kctx) {
		out, mean, rstd, in, w, b := k.pf(0), k.pf(1), k.pf(2), k.pf(3), k.pf(4), k.pf(5)
		C, eps, ln := k.i(7), k.f(8), k.i(9) != 0
		r, bd := k.bid.X, k.block.X
		x := in[r*C : (r+1)*C]
		red := make([]float32, bd)
		var m float32
		if ln {
			k.threads(func(t int) {
				var s float32
				for j := t; j < C; j += bd {
					s += x[j]
				}
				red[t] = s
			})
			m = blockSum(red) / float32(C)
		}
		k.threads(func(t int) {
			var ss float32
			for j := t; j < C; j += bd {
				d := x[j] - m
				ss += d * d
			}
			red[t] = ss
		})
		rs := rsqrtf(blockSum(red)/float32(C) + eps)
		if ln {
			mean[r] = m
		}
		rstd[r] = rs
		o := out[r*C : (r+1)*C]
		k.threads(func(t int) {
			for j := t; j < C; j += bd {
				v := (x[j] - m) * rs * w[j]
				if b != nil {
					v += b[j]
				}
				o[j] = v
			}
		})
	},
	"norm_bwd_dx": func(k *kctx) {
		din, dout, in, mean, rstd, w := k.pf(0), k.pf(1), k.pf(2), k.pf(3), k.pf(4), k.pf(5)
		C, ln := k.i(7), k.i(8) != 0
		r, bd := k.bid.X, k.block.X
		x, dy, dx := in[r*C:(r+1)*C], dout[r*C:(r+1)*C], din[r*C:(r+1)*C]
		var m float32
		if ln {
			m = mean[r]
		}
		rs := rstd[r]
		red1, red2 := make([]float32, bd), make([]float32, bd)
		k.threads(func(t int) {
			var sd, sdx float32
			for j := t; j < C; j += bd {
				d := dy[j] * w[j]
				sd += d
				sdx += d * (x[j] - m) * rs
			}
			red1[t], red2[t] = sd, sdx
		})
		var sd float32
		if ln {
			sd = blockSum(red1) / float32(C)
		}
		sdx := blockSum(red2) / float32(C)
		k.threads(func(t int) {
			for j := t; j < C; j += bd {
				xh := (x[j] - m) * rs
				dx[j] += rs * (dy[j]*w[j] - sd - xh*sdx)
			}
		})
	},
	"norm_bwd_dw": func(k *kctx) {
		dw, db, dout, in, mean, rstd := k.pf(0), k.pf(1), k.pf(2), k.pf(3), k.pf(4), k.pf(5)
		n, C, ln := k.i(6), k.i(7), k.i(8) != 0
		k.elementwise(C, func(j int) {
			var sw, sb float32
			for r := 0; r < n; r++ {
				var m float32
				if ln {
					m = mean[r]
				}
				dy := dout[r*C+j]
				sw += dy * (in[r*C+j] - m) * rstd[r]
				sb += dy
			}
			dw[j] += sw
			if db != nil {
				db[j] += sb
			}
		})
	},
	"fill_rows": func(k *kctx) {
		out, b, total, oc := k.pf(0), k.pf(1), k.l(2), k.i(3)
		k.elementwise(total, func(i int) { out[i] = b[i%oc] })
	},
	"col_sum_add": func(k *kctx) {
		db, d, n, oc := k.pf(0), k.pf(1), k.i(2), k.i(3)
		k.elementwise(oc, func(j int) {
			var s float32
			for r := 0; r < n; r++ {
				s += d[r*oc+j]
			}
			db[j] += s
		})
	},
	"cast_bf16": func(k *kctx) {
		dst, src, n := k.ph(0), k.pf(1), k.l(2)
		k.elementwise(n, func(i int) { dst[i] = BF16Bits(src[i]) })
	},
	"residual_add": func(k *kctx) {
		br, skip, n, seed, site, thr, keep := k.pf(0), k.pf(1), k.l(2), k.u(3), k.u(4), k.u(5), k.f(6)
		k.elementwise(n, func(i int) {
			m := float32(1)
			if thr != 0 {
				m = dropScale(seed, site, uint64(i), thr, keep)
			}
			br[i] = skip[i] + br[i]*m
		})
	},
	"mask_mul": func(k *kctx) {
		dst, src, n, seed, site, thr, keep := k.pf(0), k.pf(1), k.l(2), k.u(3), k.u(4), k.u(5), k.f(6)
		k.elementwise(n, func(i int) { dst[i] = src[i] * dropScale(seed, site, uint64(i), thr, keep) })
	},
	"gelu_fwd": func(k *kctx) {
		out, in, n := k.pf(0), k.pf(1), k.l(2)
		k.elementwise(n, func(i int) {
			x := in[i]
			out[i] = 0.5 * x * (1 + erff(x*0.70710678118654752440))
		})
	},
	"gelu_bwd": func(k *kctx) {
		din, dout, in, n := k.pf(0), k.pf(1), k.pf(2), k.l(3)
		k.elementwise(n, func(i int) {
			x := in[i]
			cdf := 0.5 * (1 + erff(x*0.70710678118654752440))
			pdf := 0.39894228040143267794 * expf(-0.5*x*x)
			din[i] = dout[i] * (cdf + x*pdf)
		})
	},
	"swiglu_fwd": func(k *kctx) {
		out, gate, up, n := k.pf(0), k.pf(1), k.pf(2), k.l(3)
		k.elementwise(n, func(i int) {
			g := gate[i]
			s := 1 / (1 + expf(-g))
			out[i] = (g * s) * up[i]
		})
	},
	"swiglu_bwd": func(k *kctx) {
		dgate, dup, dout, gate, up, n := k.pf(0), k.pf(1), k.pf(2), k.pf(3), k.pf(4), k.l(5)
		k.elementwise(n, func(i int) {
			g := gate[i]
			s := 1 / (1 + expf(-g))
			dgate[i] = dout[i] * up[i] * (s * (1 + g*(1-s)))
			dup[i] = dout[i] * (g * s)
		})
	},
	"rope": func(k *kctx) {
		qkv, pos, cosT, sinT := k.pf(0), k.pi(1), k.pf(2), k.pf(3)
		n, C, nh, inv := k.i(4), k.i(5), k.i(6), k.i(7) != 0
		hd := C / nh
		half := hd / 2
		k.elementwise(n*nh*half, func(t int) {
			i, h, r := t%half, (t/half)%nh, t/(half*nh)
			c, s := cosT[int(pos[r])*half+i], sinT[int(pos[r])*half+i]
			if inv {
				s = -s
			}
			for part := 0; part < 2; part++ {
				x := qkv[r*3*C+part*C+h*hd:]
				x1, x2 := x[i], x[i+half]
				x[i] = x1*c - x2*s
				x[i+half] = x2*c + x1*s
			}
		})
	},
	"attn_fwd":     attnFwd,
	"attn_bwd_pre": attnBwdPre,
	"attn_bwd_dq":  attnBwdDQ,
	"attn_bwd_dkv": attnBwdDKV,
	"kv_append": func(k *kctx) {
		kc, vc, qkv, n, C, pos0 := k.pf(0), k.pf(1), k.pf(2), k.i(3), k.i(4), k.i(5)
		k.elementwise(n*C, func(t int) {
			i, c := t/C, t%C
			kc[(pos0+i)*C+c] = qkv[i*3*C+C+c]
			vc[(pos0+i)*C+c] = qkv[i*3*C+2*C+c]
		})
	},
	"xent": xentTwin,
	"adamw": func(k *kctx) {
		p, g, m, v, n := k.pf(0), k.pf(1), k.pf(2), k.pf(3), k.l(4)
		gscale, b1, c1, b2, c2, bc2, eps, decay, step := k.f(5), k.f(6), k.f(7), k.f(8), k.f(9), k.f(10), k.f(11), k.f(12), k.f(13)
		k.elementwise(n, func(i int) {
			gi := g[i] * gscale
			mi := b1*m[i] + c1*gi
			vi := b2*v[i] + c2*gi*gi
			m[i], v[i] = mi, vi
			denom := float32(math.Sqrt(float64(vi)))/bc2 + eps
			p[i] = p[i]*decay - step*mi/denom
			g[i] = 0
		})
	},
	"sumsq": func(k *kctx) {
		partial, g, n := k.pd(0), k.pf(1), k.l(2)
		bd := k.block.X
		red := make([]float64, bd)
		k.threads(func(t int) {
			var s float64
			for i := k.bid.X*bd + t; i < n; i += k.grid.X * bd {
				x := float64(g[i])
				s += x * x
			}
			red[t] = s
		})
		for s := bd / 2; s > 0; s >>= 1 {
			for t := 0; t < s; t++ {
				red[t] += red[t+s]
			}
		}
		partial[k.bid.X] = red[0]
	},
}

// attAllowed is kernels.cu's mask: causal from position r+qoff, within equal segments.
func attAllowed(seg []int32, b, tq, tk, r, j, qoff int) bool {
	return j <= r+qoff && (seg == nil || seg[b*tq+r] == seg[b*tk+j])
}

const maxHD, attBQ, attBK = kernels.MaxHeadDim, kernels.AttBQ, kernels.AttBK

func attnFwd(k *kctx) {
	y, lse, q, kk, v, seg := k.pf(0), k.pf(1), k.pf(2), k.pf(3), k.pf(4), k.pi(5)
	tq, tk, qoff, nh, hd, sq, skv, sy := k.i(6), k.i(7), k.i(8), k.i(9), k.i(10), k.i(11), k.i(12), k.i(13)
	seed, site, thr, keep := k.u(14), k.u(15), k.u(16), k.f(17)
	var ks, vs [attBK][maxHD]float32
	bh := k.bid.Y
	b, h := bh/nh, bh%nh
	scale := rsqrtf(float32(hd))
	nt := k.block.X
	qr, acc := make([][]float32, nt), make([][]float32, nt)
	m, l := make([]float32, nt), make([]float32, nt)
	row := func(t int) int { return k.bid.X*attBQ + t }
	k.threads(func(t int) {
		m[t] = float32(math.Inf(-1))
		if r := row(t); r < tq {
			qr[t] = append([]float32(nil), q[(b*tq+r)*sq+h*hd:][:hd]...)
			acc[t] = make([]float32, hd)
		}
	})
	lastQ := min(tq-1, k.bid.X*attBQ+attBQ-1) + qoff
	for j0 := 0; j0 <= lastQ && j0 < tk; j0 += attBK {
		k.threads(func(t int) {
			if jt := j0 + t; jt < tk {
				copy(ks[t][:hd], kk[(b*tk+jt)*skv+h*hd:])
				copy(vs[t][:hd], v[(b*tk+jt)*skv+h*hd:])
			}
		})
		k.threads(func(t int) {
			r := row(t)
			if r >= tq {
				return
			}
			for jj := 0; jj < attBK && j0+jj < tk; jj++ {
				j := j0 + jj
				if !attAllowed(seg, b, tq, tk, r, j, qoff) {
					continue
				}
				var s float32
				for d := 0; d < hd; d++ {
					s += qr[t][d] * ks[jj][d]
				}
				s *= scale
				mn := max(m[t], s)
				corr := expf(m[t] - mn)
				p := expf(s - mn)
				l[t] = l[t]*corr + p
				pd := p
				if thr != 0 {
					pd = p * dropScale(seed, site, uint64(bh*tq+r)*uint64(tk)+uint64(j), thr, keep)
				}
				for d := 0; d < hd; d++ {
					acc[t][d] = acc[t][d]*corr + pd*vs[jj][d]
				}
				m[t] = mn
			}
		})
	}
	k.threads(func(t int) {
		r := row(t)
		if r >= tq {
			return
		}
		yp := y[(b*tq+r)*sy+h*hd:]
		inv := 1 / l[t]
		for d := 0; d < hd; d++ {
			yp[d] = acc[t][d] * inv
		}
		if lse != nil {
			lse[bh*tq+r] = m[t] + logf(l[t])
		}
	})
}

func attnBwdPre(k *kctx) {
	D, dy, y := k.pf(0), k.pf(1), k.pf(2)
	B, T, nh, hd, sy := k.i(3), k.i(4), k.i(5), k.i(6), k.i(7)
	k.elementwise(B*nh*T, func(t int) {
		r, bh := t%T, t/T
		b, h := bh/nh, bh%nh
		off := (b*T+r)*sy + h*hd
		var s float32
		for d := 0; d < hd; d++ {
			s += dy[off+d] * y[off+d]
		}
		D[t] = s
	})
}

func attnBwdDQ(k *kctx) {
	dq, q, kk, v, dy, lse, D, seg := k.pf(0), k.pf(1), k.pf(2), k.pf(3), k.pf(4), k.pf(5), k.pf(6), k.pi(7)
	T, nh, hd, sq, sy := k.i(8), k.i(9), k.i(10), k.i(11), k.i(12)
	seed, site, thr, keep := k.u(13), k.u(14), k.u(15), k.f(16)
	var ks, vs [attBK][maxHD]float32
	bh := k.bid.Y
	b, h := bh/nh, bh%nh
	scale := rsqrtf(float32(hd))
	nt := k.block.X
	qr, dyr, acc := make([][]float32, nt), make([][]float32, nt), make([][]float32, nt)
	L, Dr := make([]float32, nt), make([]float32, nt)
	row := func(t int) int { return k.bid.X*attBQ + t }
	k.threads(func(t int) {
		if r := row(t); r < T {
			qr[t] = append([]float32(nil), q[(b*T+r)*sq+h*hd:][:hd]...)
			dyr[t] = append([]float32(nil), dy[(b*T+r)*sy+h*hd:][:hd]...)
			acc[t] = make([]float32, hd)
			L[t], Dr[t] = lse[bh*T+r], D[bh*T+r]
		}
	})
	lastQ := min(T-1, k.bid.X*attBQ+attBQ-1)
	for j0 := 0; j0 <= lastQ; j0 += attBK {
		k.threads(func(t int) {
			if jt := j0 + t; jt < T {
				copy(ks[t][:hd], kk[(b*T+jt)*sq+h*hd:])
				copy(vs[t][:hd], v[(b*T+jt)*sq+h*hd:])
			}
		})
		k.threads(func(t int) {
			r := row(t)
			if r >= T {
				return
			}
			for jj := 0; jj < attBK && j0+jj < T; jj++ {
				j := j0 + jj
				if !attAllowed(seg, b, T, T, r, j, 0) {
					continue
				}
				var s, dpv float32
				for d := 0; d < hd; d++ {
					s += qr[t][d] * ks[jj][d]
					dpv += dyr[t][d] * vs[jj][d]
				}
				p := expf(s*scale - L[t])
				if thr != 0 {
					dpv *= dropScale(seed, site, uint64(bh*T+r)*uint64(T)+uint64(j), thr, keep)
				}
				ds := p * (dpv - Dr[t])
				for d := 0; d < hd; d++ {
					acc[t][d] += ds * ks[jj][d]
				}
			}
		})
	}
	k.threads(func(t int) {
		if r := row(t); r < T {
			o := dq[(b*T+r)*sq+h*hd:]
			for d := 0; d < hd; d++ {
				o[d] = acc[t][d] * scale
			}
		}
	})
}

func attnBwdDKV(k *kctx) {
	dk, dv, q, kk, v, dy, lse, D, seg := k.pf(0), k.pf(1), k.pf(2), k.pf(3), k.pf(4), k.pf(5), k.pf(6), k.pf(7), k.pi(8)
	T, nh, hd, sq, sy := k.i(9), k.i(10), k.i(11), k.i(12), k.i(13)
	seed, site, thr, keep := k.u(14), k.u(15), k.u(16), k.f(17)
	var qs, dys [attBQ][maxHD]float32
	var ls, ds [attBQ]float32
	bh := k.bid.Y
	b, h := bh/nh, bh%nh
	scale := rsqrtf(float32(hd))
	nt := k.block.X
	kr, vr, dka, dva := make([][]float32, nt), make([][]float32, nt), make([][]float32, nt), make([][]float32, nt)
	col := func(t int) int { return k.bid.X*attBK + t }
	k.threads(func(t int) {
		if j := col(t); j < T {
			kr[t] = append([]float32(nil), kk[(b*T+j)*sq+h*hd:][:hd]...)
			vr[t] = append([]float32(nil), v[(b*T+j)*sq+h*hd:][:hd]...)
			dka[t], dva[t] = make([]float32, hd), make([]float32, hd)
		}
	})
	for i0 := k.bid.X * attBK; i0 < T; i0 += attBQ {
		k.threads(func(t int) {
			if it := i0 + t; it < T {
				copy(qs[t][:hd], q[(b*T+it)*sq+h*hd:])
				copy(dys[t][:hd], dy[(b*T+it)*sy+h*hd:])
				ls[t], ds[t] = lse[bh*T+it], D[bh*T+it]
			}
		})
		k.threads(func(t int) {
			j := col(t)
			if j >= T {
				return
			}
			for ii := 0; ii < attBQ && i0+ii < T; ii++ {
				i := i0 + ii
				if !attAllowed(seg, b, T, T, i, j, 0) {
					continue
				}
				var s, dpv float32
				for d := 0; d < hd; d++ {
					s += qs[ii][d] * kr[t][d]
					dpv += dys[ii][d] * vr[t][d]
				}
				p := expf(s*scale - ls[ii])
				mk := float32(1)
				if thr != 0 {
					mk = dropScale(seed, site, uint64(bh*T+i)*uint64(T)+uint64(j), thr, keep)
				}
				dsv := p * (dpv*mk - ds[ii])
				pm := p * mk
				for d := 0; d < hd; d++ {
					dva[t][d] += pm * dys[ii][d]
					dka[t][d] += dsv * qs[ii][d]
				}
			}
		})
	}
	k.threads(func(t int) {
		if j := col(t); j < T {
			ko, vo := dk[(b*T+j)*sq+h*hd:], dv[(b*T+j)*sq+h*hd:]
			for d := 0; d < hd; d++ {
				ko[d] = dka[t][d] * scale
				vo[d] = dva[t][d]
			}
		}
	})
}

func xentTwin(k *kctx) {
	logits, targets, weights, rowLoss, correct := k.pf(0), k.pi(1), k.pf(2), k.pd(3), k.pi(4)
	V, scale, grad := k.i(6), k.d(7), k.i(8) != 0
	r, bd := k.bid.X, k.block.X
	x := logits[r*V : (r+1)*V]
	rv, ri := make([]float32, bd), make([]int, bd)
	k.threads(func(t int) {
		mx, arg := float32(math.Inf(-1)), math.MaxInt32
		for j := t; j < V; j += bd {
			if x[j] > mx {
				mx, arg = x[j], j
			}
		}
		rv[t], ri[t] = mx, arg
	})
	for s := bd / 2; s > 0; s >>= 1 {
		for t := 0; t < s; t++ {
			if rv[t+s] > rv[t] || (rv[t+s] == rv[t] && ri[t+s] < ri[t]) {
				rv[t], ri[t] = rv[t+s], ri[t+s]
			}
		}
	}
	mx, arg := rv[0], ri[0]
	k.threads(func(t int) {
		var se float32
		for j := t; j < V; j += bd {
			se += expf(x[j] - mx)
		}
		rv[t] = se
	})
	sum := blockSum(rv)
	w := float64(weights[r])
	tg := int(targets[r])
	if w > 0 {
		lse := float64(mx) + math.Log(float64(sum))
		rowLoss[r] = w * (lse - float64(x[tg]))
		correct[r] = 0
		if arg == tg {
			correct[r] = 1
		}
	} else {
		rowLoss[r], correct[r] = 0, 0
	}
	if !grad {
		return
	}
	live := w != 0 && scale != 0
	var f float32
	if live {
		f = float32(scale * w / float64(sum))
	}
	k.threads(func(t int) {
		for j := t; j < V; j += bd {
			if live {
				x[j] = f * expf(x[j]-mx)
			} else {
				x[j] = 0
			}
		}
	})
	if live {
		x[tg] -= float32(scale * w)
	}
}

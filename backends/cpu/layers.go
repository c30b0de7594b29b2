package cpu

import (
	"math"

	"github.com/mypt/mypt/sdk/backendkit"
)

// Float is the element type the layers are written for: float32 in the backend, float64 in
// the finite-difference tests (the same code, instantiated twice).
type Float interface{ ~float32 | ~float64 }

// gemmFunc is BLAS sgemm with row-major storage: C = alpha·op(A)·op(B) + beta·C.
type gemmFunc[F Float] func(transA, transB bool, m, n, k int, alpha F, a []F, lda int,
	b []F, ldb int, beta F, c []F, ldc int)

// ---------------------------------------------------------------------------------------
// Linear: out[N,OC] = in[N,IC] · W[OC,IC]ᵀ + b

func linearForward[F Float](mm gemmFunc[F], p *pool, out, in, w, b []F, n, ic, oc int) {
	if b == nil {
		mm(false, true, n, oc, ic, 1, in, ic, w, ic, 0, out, oc)
		return
	}
	// C starts as the bias rows and the product adds onto it (beta = 1): the same sum
	// acc + b as adding afterwards, without another pass over the output.
	p.run(n, max(1, 8192/oc), func(_, lo, hi int) {
		for r := lo; r < hi; r++ {
			copy(out[r*oc:(r+1)*oc], b[:oc])
		}
	})
	mm(false, true, n, oc, ic, 1, in, ic, w, ic, 1, out, oc)
}

// linearBackward: din (=, or += when accumulate) dout·W; dW += doutᵀ·in; db += Σ_rows dout.
// din may be nil when the input needs no gradient.
func linearBackward[F Float](mm gemmFunc[F], p *pool, din, dw, db, dout, in, w []F, n, ic, oc int, accumulate bool) {
	if din != nil {
		beta := F(0)
		if accumulate {
			beta = 1
		}
		mm(false, false, n, ic, oc, 1, dout, oc, w, ic, beta, din, ic)
	}
	mm(true, false, oc, ic, n, 1, dout, oc, in, ic, 1, dw, ic)
	if db != nil {
		colSumAdd(p, db, dout, n, oc)
	}
}

// colSumAdd: dst[j] += Σ_r src[r,j], parallel over column ranges.
func colSumAdd[F Float](p *pool, dst, src []F, n, cols int) {
	if d32, ok := any(dst).([]float32); ok {
		s32 := any(src).([]float32)
		p.run(cols, 4096, func(_, lo, hi int) {
			for r := 0; r < n; r++ {
				add32(d32[lo:hi], s32[r*cols+lo:r*cols+hi])
			}
		})
		return
	}
	p.run(cols, 256, func(_, lo, hi int) {
		for r := 0; r < n; r++ {
			row := src[r*cols+lo : r*cols+hi]
			d := dst[lo:hi]
			for j, v := range row {
				d[j] += v
			}
		}
	})
}

// ---------------------------------------------------------------------------------------
// LayerNorm / RMSNorm over rows of width c. bias == nil means no bias; layerNorm false
// means RMSNorm (no mean subtraction). mean is unused for RMSNorm.

func normForward[F Float](p *pool, layerNorm bool, out, mean, rstd, in, w, b []F, n, c int, eps float64) {
	p.run(n, 16, func(_, lo, hi int) {
		for r := lo; r < hi; r++ {
			x := in[r*c : (r+1)*c]
			var m float64
			if layerNorm {
				for _, v := range x {
					m += float64(v)
				}
				m /= float64(c)
			}
			var ss float64
			for _, v := range x {
				d := float64(v) - m
				ss += d * d
			}
			rs := 1 / math.Sqrt(ss/float64(c)+eps)
			mean[r], rstd[r] = F(m), F(rs)
			o := out[r*c : (r+1)*c]
			mf, rf := F(m), F(rs)
			for j, v := range x {
				o[j] = (v - mf) * rf * w[j]
			}
			if b != nil {
				for j := range o {
					o[j] += b[j]
				}
			}
		}
	})
}

// normBackward: din += ∂/∂in, dw += Σ dout·x̂, db += Σ dout.
func normBackward[F Float](p *pool, layerNorm bool, din, dw, db, dout, in, mean, rstd, w []F, n, c int) {
	p.run(n, 16, func(_, lo, hi int) {
		for r := lo; r < hi; r++ {
			x, dy, dx := in[r*c:(r+1)*c], dout[r*c:(r+1)*c], din[r*c:(r+1)*c]
			m, rs := mean[r], rstd[r]
			if !layerNorm {
				m = 0
			}
			// mean(dnorm) and mean(dnorm·x̂), with dnorm = dy·w
			var sumD, sumDX F
			for j := range x {
				xh := (x[j] - m) * rs
				d := dy[j] * w[j]
				sumD += d
				sumDX += d * xh
			}
			sumD /= F(c)
			sumDX /= F(c)
			if !layerNorm {
				sumD = 0
			}
			for j := range x {
				xh := (x[j] - m) * rs
				dx[j] += rs * (dy[j]*w[j] - sumD - xh*sumDX)
			}
		}
	})
	// parameter gradients: reduce over rows, parallel over columns
	p.run(c, 16, func(_, lo, hi int) {
		for r := 0; r < n; r++ {
			m, rs := mean[r], rstd[r]
			if !layerNorm {
				m = 0
			}
			x, dy := in[r*c:(r+1)*c], dout[r*c:(r+1)*c]
			for j := lo; j < hi; j++ {
				dw[j] += dy[j] * (x[j] - m) * rs
				if db != nil {
					db[j] += dy[j]
				}
			}
		}
	})
}

// ---------------------------------------------------------------------------------------
// Activations

const invSqrt2 = 0.70710678118654752440
const invSqrt2Pi = 0.39894228040143267794

// geluForward: exact erf GELU, out = 0.5·x·(1+erf(x/√2)).
func geluForward[F Float](p *pool, out, in []F) {
	if o32, ok := any(out).([]float32); ok {
		i32 := any(in).([]float32)
		p.run(len(in), 1<<14, func(_, lo, hi int) {
			geluForward32(o32[lo:hi], i32[lo:hi])
		})
		return
	}
	p.run(len(in), 1024, func(_, lo, hi int) {
		for i := lo; i < hi; i++ {
			x := float64(in[i])
			out[i] = F(0.5 * x * (1 + erf(x*invSqrt2)))
		}
	})
}

// geluBackward: din = dout·(Φ(x) + x·φ(x)).
func geluBackward[F Float](p *pool, din, dout, in []F) {
	if di32, ok := any(din).([]float32); ok {
		do32, i32 := any(dout).([]float32), any(in).([]float32)
		p.run(len(in), 1<<14, func(_, lo, hi int) {
			geluBackward32(di32[lo:hi], do32[lo:hi], i32[lo:hi])
		})
		return
	}
	p.run(len(in), 1024, func(_, lo, hi int) {
		for i := lo; i < hi; i++ {
			x := float64(in[i])
			cdf := 0.5 * (1 + erf(x*invSqrt2))
			pdf := invSqrt2Pi * math.Exp(-0.5*x*x)
			din[i] = dout[i] * F(cdf+x*pdf)
		}
	})
}

// swigluForward: out = silu(gate)·up.
func swigluForward[F Float](p *pool, out, gate, up []F) {
	p.run(len(gate), 1024, func(_, lo, hi int) {
		for i := lo; i < hi; i++ {
			g := float64(gate[i])
			s := 1 / (1 + math.Exp(-g))
			out[i] = F(g*s) * up[i]
		}
	})
}

// swigluBackward: dgate = dout·up·silu'(gate), dup = dout·silu(gate).
func swigluBackward[F Float](p *pool, dgate, dup, dout, gate, up []F) {
	p.run(len(gate), 1024, func(_, lo, hi int) {
		for i := lo; i < hi; i++ {
			g := float64(gate[i])
			s := 1 / (1 + math.Exp(-g))
			dgate[i] = dout[i] * up[i] * F(s*(1+g*(1-s)))
			dup[i] = dout[i] * F(g*s)
		}
	})
}

// ---------------------------------------------------------------------------------------
// RoPE, split-half convention, in place on the q and k parts of qkv rows [N,3C].
// cos/sin are [maxPos, hd/2]; pos[r] is row r's position.

func ropeApply[F Float](p *pool, qkv []F, pos []int32, cos, sin []F, n, c, nh int, inverse bool) {
	hd := c / nh
	half := hd / 2
	p.run(n, 16, func(_, lo, hi int) {
		for r := lo; r < hi; r++ {
			cs := cos[int(pos[r])*half : int(pos[r]+1)*half]
			sn := sin[int(pos[r])*half : int(pos[r]+1)*half]
			for part := 0; part < 2; part++ { // q, then k
				base := r*3*c + part*c
				for h := 0; h < nh; h++ {
					x := qkv[base+h*hd : base+(h+1)*hd]
					for i := 0; i < half; i++ {
						x1, x2 := x[i], x[i+half]
						s := sn[i]
						if inverse { // the transpose of the rotation: the backward pass
							s = -s
						}
						x[i] = x1*cs[i] - x2*s
						x[i+half] = x2*cs[i] + x1*s
					}
				}
			}
		}
	})
}

// ---------------------------------------------------------------------------------------
// Causal self-attention with segment isolation, per (batch row, head).
//
// qkv is [B·T, QKV] (q|k|v, heads are contiguous hd slices). The keys and values attention
// reads are the batch's own (batchKeys) or a KV cache's (generation): S per row, the T
// queries sitting at the last T of those S positions. att holds the softmax probabilities
// [B,nh,T,S] (zero where masked), drop the dropout scale factors of the same shape (nil
// when dropout is off). y is [B·T, C].

// attnShape: b rows of t queries attending to s keys each (s = t, or a cached length);
// c the model width, nh the heads, qkv the row stride of the qkv buffer.
type attnShape struct{ b, t, s, c, nh, qkv int }

// keyView is where attention reads keys and values: rows of stride ld, s of them per
// batch row.
type keyView[F Float] struct {
	k, v []F
	ld   int
}

// batchKeys are the keys and values in a batch's own qkv rows.
func batchKeys[F Float](qkv []F, c, stride int) keyView[F] {
	return keyView[F]{k: qkv[c:], v: qkv[2*c:], ld: stride}
}

// allowed reports whether query i (at key position qoff+i) may attend key j of one row.
func allowed(seg []int32, i, j, qoff int) bool {
	return j <= qoff+i && (seg == nil || seg[i] == seg[j])
}

func attentionForward[F Float](p *pool, mms []gemmFunc[F], scratch [][]F, y, att, drop, qkv []F, kv keyView[F], seg []int32, s attnShape) {
	hd := s.c / s.nh
	ts := s.t * s.s
	qoff := s.s - s.t
	scale := F(1 / math.Sqrt(float64(hd)))
	att32, _ := any(att).([]float32) // float32 without segments: the vector softmax
	p.run(s.b*s.nh, 1, func(w, lo, hi int) {
		mm := mms[w]
		for bh := lo; bh < hi; bh++ {
			b, h := bh/s.nh, bh%s.nh
			q := qkv[b*s.t*s.qkv+h*hd:]
			k := kv.k[b*s.s*kv.ld+h*hd:]
			v := kv.v[b*s.s*kv.ld+h*hd:]
			var sg []int32
			if seg != nil {
				sg = seg[b*s.t : (b+1)*s.t]
			}
			P := att[bh*ts : (bh+1)*ts]
			mm(false, true, s.t, s.s, hd, scale, q, s.qkv, k, kv.ld, 0, P, s.s)
			for i := 0; i < s.t; i++ {
				row := P[i*s.s : (i+1)*s.s]
				last := qoff + i // the last key query i sees
				if att32 != nil && sg == nil {
					r := att32[bh*ts+i*s.s : bh*ts+(i+1)*s.s]
					mx := max32(r[:last+1])
					scale32(r[:last+1], 1/expShiftSum32(r[:last+1], r[:last+1], mx))
					clear(r[last+1:])
					continue
				}
				mx := F(math.Inf(-1))
				for j := 0; j <= last; j++ {
					if allowed(sg, i, j, qoff) && row[j] > mx {
						mx = row[j]
					}
				}
				var sum float64
				for j := range row {
					if allowed(sg, i, j, qoff) {
						e := math.Exp(float64(row[j] - mx))
						row[j] = F(e)
						sum += e
					} else {
						row[j] = 0
					}
				}
				inv := F(1 / sum)
				for j := 0; j <= last; j++ {
					row[j] *= inv
				}
			}
			Pd := P
			if drop != nil {
				Pd = scratch[w][:ts]
				for i, dv := range drop[bh*ts : (bh+1)*ts] {
					Pd[i] = P[i] * dv
				}
			}
			mm(false, false, s.t, hd, s.s, 1, Pd, s.s, v, kv.ld, 0, y[b*s.t*s.c+h*hd:], s.c)
		}
	})
}

// attentionBackward writes dqkv (all of it) from dy.
func attentionBackward[F Float](p *pool, mms []gemmFunc[F], scratch [][]F, dqkv, dy, att, drop, qkv []F, seg []int32, s attnShape) {
	hd := s.c / s.nh
	tt := s.t * s.t
	scale := F(1 / math.Sqrt(float64(hd)))
	p.run(s.b*s.nh, 1, func(w, lo, hi int) {
		mm := mms[w]
		dP := scratch[w][:tt]
		Pd := scratch[w][tt : 2*tt]
		for bh := lo; bh < hi; bh++ {
			b, h := bh/s.nh, bh%s.nh
			off := b*s.t*s.qkv + h*hd
			q, k, v := qkv[off:], qkv[off+s.c:], qkv[off+2*s.c:]
			dq, dk, dv := dqkv[off:], dqkv[off+s.c:], dqkv[off+2*s.c:]
			dyh := dy[b*s.t*s.c+h*hd:]
			P := att[bh*tt : (bh+1)*tt]
			var dm []F
			if drop != nil {
				dm = drop[bh*tt : (bh+1)*tt]
				for i := range Pd {
					Pd[i] = P[i] * dm[i]
				}
			} else {
				copy(Pd, P)
			}
			// y = Pd·V: dPd = dy·Vᵀ, dV = Pdᵀ·dy
			mm(false, true, s.t, s.t, hd, 1, dyh, s.c, v, s.qkv, 0, dP, s.t)
			mm(true, false, s.t, hd, s.t, 1, Pd, s.t, dyh, s.c, 0, dv, s.qkv)
			// through dropout and softmax: dS = P ⊙ (dP − Σ_j P·dP)
			for i := 0; i < s.t; i++ {
				pr, dr := P[i*s.t:(i+1)*s.t], dP[i*s.t:(i+1)*s.t]
				if dm != nil {
					for j, m := range dm[i*s.t : (i+1)*s.t] {
						dr[j] *= m
					}
				}
				var dot F
				for j := 0; j <= i; j++ {
					dot += pr[j] * dr[j]
				}
				for j := range dr {
					if j <= i {
						dr[j] = pr[j] * (dr[j] - dot)
					} else {
						dr[j] = 0
					}
				}
			}
			// S = scale·Q·Kᵀ
			mm(false, false, s.t, hd, s.t, scale, dP, s.t, k, s.qkv, 0, dq, s.qkv)
			mm(true, false, s.t, hd, s.t, scale, dP, s.t, q, s.qkv, 0, dk, s.qkv)
		}
	})
}

// ---------------------------------------------------------------------------------------
// Cross-entropy over logits rows [N,V]: returns Σ w·CE and counts argmax hits on rows with
// w > 0. When dlogits is true the logits are overwritten with scale·w·(softmax − onehot).

// lossTotals are backendkit's Totals: Σ w·CE, Σ w, argmax hits, positions counted.
type lossTotals = backendkit.Totals

func crossEntropy[F Float](p *pool, logits []F, targets []int32, weights []float32, n, v int, scale float64, dlogits bool, perWorker []lossTotals) lossTotals {
	for i := range perWorker {
		perWorker[i] = lossTotals{}
	}
	if l32, ok := any(logits).([]float32); ok {
		crossEntropy32(p, l32, targets, weights, n, v, scale, dlogits, perWorker)
	} else {
		p.run(n, 4, func(w, lo, hi int) {
			crossEntropyRows(logits, targets, weights, v, scale, dlogits, &perWorker[w], lo, hi)
		})
	}
	var t lossTotals
	for _, a := range perWorker {
		t.LossSum += a.LossSum
		t.WeightSum += a.WeightSum
		t.Correct += a.Correct
		t.Counted += a.Counted
	}
	return t
}

// crossEntropyRows is the plain version (float64 in tests).
func crossEntropyRows[F Float](logits []F, targets []int32, weights []float32, v int, scale float64, dlogits bool, acc *lossTotals, lo, hi int) {
	{
		for r := lo; r < hi; r++ {
			row := logits[r*v : (r+1)*v]
			wt := float64(weights[r])
			mx, arg := row[0], 0
			for j, x := range row {
				if x > mx {
					mx, arg = x, j
				}
			}
			var sum float64
			for _, x := range row {
				sum += math.Exp(float64(x - mx))
			}
			if wt > 0 {
				tg := int(targets[r])
				lse := float64(mx) + math.Log(sum)
				acc.LossSum += wt * (lse - float64(row[tg]))
				acc.WeightSum += wt
				acc.Counted++
				if arg == tg {
					acc.Correct++
				}
			}
			if !dlogits {
				continue
			}
			if wt == 0 || scale == 0 {
				clear(row)
				continue
			}
			f := scale * wt / sum
			for j, x := range row {
				row[j] = F(f * math.Exp(float64(x-mx)))
			}
			row[targets[r]] -= F(scale * wt)
		}
	}
}

// crossEntropy32 is crossEntropy for float32 with the fast exp, computing each row's
// exponentials once (and storing them when the gradient is wanted).
func crossEntropy32(p *pool, logits []float32, targets []int32, weights []float32, n, v int, scale float64, dlogits bool, perWorker []lossTotals) {
	p.run(n, 4, func(w, lo, hi int) {
		acc := &perWorker[w]
		for r := lo; r < hi; r++ {
			row := logits[r*v : (r+1)*v]
			wt := float64(weights[r])
			mx := max32(row)
			arg := min(index32(row, mx), len(row)-1) // the first maximum, as the plain loop finds it
			tg := int(targets[r])
			var target float32
			if wt > 0 {
				target = row[tg]
			}
			grad := dlogits && wt != 0 && scale != 0
			var sum float32
			if grad {
				sum = expShiftSum32(row, row, mx)
			} else {
				sum = expShiftSum32(nil, row, mx)
			}
			if wt > 0 {
				lse := float64(mx) + math.Log(float64(sum))
				acc.LossSum += wt * (lse - float64(target))
				acc.WeightSum += wt
				acc.Counted++
				if arg == tg {
					acc.Correct++
				}
			}
			if !dlogits {
				continue
			}
			if !grad {
				clear(row)
				continue
			}
			scale32(row, float32(scale*wt/float64(sum)))
			row[tg] -= float32(scale * wt)
		}
	})
}

package cpu

import (
	"math"
)

// weights are typed views of the named tensors inside one flat buffer (parameters or
// gradients). Absent tensors (e.g. qkv bias with bias=false) are nil.
type weights[F Float] struct {
	wte, wpe, lnfW, lnfB, lmW, lmB []F
	layers                         []layerWeights[F]
}

type layerWeights[F Float] struct {
	ln1W, ln1B, qkvW, qkvB, projW, projB, ln2W, ln2B []F
	fc1W, fc1B, fc2W, fc2B                           []F // GELU MLP
	gateW, upW, downW                                []F // SwiGLU MLP
}

func viewWeights[F Float](a arch, lay *layout, buf []F) weights[F] {
	get := func(name string) []F {
		i, ok := lay.byName[name]
		if !ok {
			return nil
		}
		s := lay.slots[i]
		return buf[s.off : s.off+s.n : s.off+s.n]
	}
	w := weights[F]{wte: get("token_embedding_table.weight"), wpe: get("position_embedding_table.weight"),
		lnfW: get("ln_f.weight"), lnfB: get("ln_f.bias"), lmW: get("lm_head.weight"), lmB: get("lm_head.bias")}
	if a.tied {
		w.lmW = w.wte
	}
	for l := 0; l < a.L; l++ {
		p := "blocks." + itoa(l) + "."
		w.layers = append(w.layers, layerWeights[F]{
			ln1W: get(p + "ln1.weight"), ln1B: get(p + "ln1.bias"),
			qkvW: get(p + "sa.qkv.weight"), qkvB: get(p + "sa.qkv.bias"),
			projW: get(p + "sa.proj.weight"), projB: get(p + "sa.proj.bias"),
			ln2W: get(p + "ln2.weight"), ln2B: get(p + "ln2.bias"),
			fc1W: get(p + "fwd.net.0.weight"), fc1B: get(p + "fwd.net.0.bias"),
			fc2W: get(p + "fwd.net.2.weight"), fc2B: get(p + "fwd.net.2.bias"),
			gateW: get(p + "fwd.w_gate.weight"), upW: get(p + "fwd.w_up.weight"), downW: get(p + "fwd.w_down.weight"),
		})
	}
	return w
}

func itoa(i int) string {
	if i < 10 {
		return string(rune('0' + i))
	}
	return itoa(i/10) + string(rune('0'+i%10))
}

// layerActs are the activations of one block kept for the backward pass.
type layerActs[F Float] struct {
	ln1, ln1Mean, ln1Rstd []F
	qkv                   []F // after RoPE
	att, attDrop          []F // softmax probabilities and their dropout scales [B,nh,T,T]
	y                     []F // attention output before proj
	projDrop              []F
	mid                   []F // residual stream after attention
	ln2, ln2Mean, ln2Rstd []F
	h, up, act            []F // MLP: pre-activation (GELU input / SwiGLU gate), SwiGLU up, activation
	mlpDrop               []F
}

// acts is every buffer one forward/backward pass needs, sized for capRows = B·T rows and
// capTT = B·T·T attention entries; they grow on demand and are reused across calls.
type acts[F Float] struct {
	capRows, capBTT, capT int
	dropout               bool
	pos, seg              []int32
	res                   [][]F // res[l] is block l's input; res[L] feeds ln_f
	layers                []layerActs[F]
	lnf, lnfMean, lnfRstd []F
	logits                []F
	// backward scratch
	dres, dtmp, dln, dqkv, dy, dh, dup, dact []F
	scratch                                  [][]F // per worker, 2·T·T
	loss                                     []lossTotals
}

// model is the network with its parameters, gradients and activation buffers.
type model[F Float] struct {
	a        arch
	lay      *layout
	params   []F
	grads    []F
	w, g     weights[F]
	pool     *pool
	mm       gemmFunc[F]   // for whole-batch products (may use every core)
	workerMM []gemmFunc[F] // one single-threaded product per pool worker
	ropeCos  []F
	ropeSin  []F
	x        acts[F]
}

func newModel[F Float](a arch, lay *layout, p *pool, mm gemmFunc[F], workerMM []gemmFunc[F]) *model[F] {
	m := &model[F]{a: a, lay: lay, pool: p, mm: mm, workerMM: workerMM,
		params: make([]F, lay.total), grads: make([]F, lay.total)}
	m.w = viewWeights(a, lay, m.params)
	m.g = viewWeights(a, lay, m.grads)
	if !a.learnedPos {
		half := a.hd / 2
		m.ropeCos = make([]F, a.block*half)
		m.ropeSin = make([]F, a.block*half)
		for t := 0; t < a.block; t++ {
			for i := 0; i < half; i++ {
				// inv_freq = 1/θ^(2i/hd); angle = (t/scale)·inv_freq
				freq := 1 / math.Pow(a.ropeTheta, float64(2*i)/float64(a.hd))
				ang := float64(t) / a.ropeScale * freq
				m.ropeCos[t*half+i] = F(math.Cos(ang))
				m.ropeSin[t*half+i] = F(math.Sin(ang))
			}
		}
	}
	return m
}

// ensure sizes the activation buffers for a batch of b rows of t tokens.
func (m *model[F]) ensure(b, t int, dropout bool) {
	x := &m.x
	rows, btt := b*t, b*m.a.nh*t*t
	if rows <= x.capRows && btt <= x.capBTT && t <= x.capT && (!dropout || x.dropout) {
		return
	}
	rows, btt, t = max(rows, x.capRows), max(btt, x.capBTT), max(t, x.capT)
	dropout = dropout || x.dropout
	a := m.a
	C, H, V := a.C, a.H, a.V
	mk := func(n int) []F { return make([]F, n) }
	maybe := func(n int) []F {
		if dropout {
			return mk(n)
		}
		return nil
	}
	*x = acts[F]{capRows: rows, capBTT: btt, capT: t, dropout: dropout}
	x.pos = make([]int32, rows)
	x.seg = make([]int32, rows)
	x.res = make([][]F, a.L+1)
	for l := range x.res {
		x.res[l] = mk(rows * C)
	}
	x.layers = make([]layerActs[F], a.L)
	for l := range x.layers {
		la := &x.layers[l]
		la.ln1, la.ln1Mean, la.ln1Rstd = mk(rows*C), mk(rows), mk(rows)
		la.qkv = mk(rows * 3 * C)
		la.att, la.attDrop = mk(btt), maybe(btt)
		la.y, la.projDrop, la.mid = mk(rows*C), maybe(rows*C), mk(rows*C)
		la.ln2, la.ln2Mean, la.ln2Rstd = mk(rows*C), mk(rows), mk(rows)
		la.h, la.act, la.mlpDrop = mk(rows*H), mk(rows*H), maybe(rows*C)
		if a.swiglu {
			la.up = mk(rows * H)
		}
	}
	x.lnf, x.lnfMean, x.lnfRstd = mk(rows*C), mk(rows), mk(rows)
	x.logits = mk(rows * V)
	x.dres, x.dtmp, x.dln, x.dy = mk(rows*C), mk(rows*C), mk(rows*C), mk(rows*C)
	x.dqkv = mk(rows * 3 * C)
	x.dh, x.dact = mk(rows*H), mk(rows*H)
	if a.swiglu {
		x.dup = mk(rows * H)
	}
	x.scratch = make([][]F, m.pool.workers)
	for i := range x.scratch {
		x.scratch[i] = mk(2 * t * t)
	}
	x.loss = make([]lossTotals, m.pool.workers)
}

// pass describes one forward pass.
type pass struct {
	b, t   int
	tokens []int32
	segs   []int32 // nil: every row is one segment
	train  bool    // dropout and NEFTune on
	seed   uint64  // dropout / NEFTune masks
}

// Dropout / noise sites: a counter-based hash of (seed, site, index) makes every mask a pure
// function of the request's dropout_seed, independent of thread count.
const (
	siteNEFTune = iota
	siteAttn
	siteProj
	siteMLP
	sitesPerLayer = 3
)

func siteOf(layer, kind int) uint64 { return uint64(1 + layer*sitesPerLayer + kind - siteAttn) }

func splitmix(x uint64) uint64 {
	x += 0x9E3779B97F4A7C15
	x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9
	x = (x ^ (x >> 27)) * 0x94D049BB133111EB
	return x ^ (x >> 31)
}

// uniform returns a number in [0,1) determined by (seed, site, i).
func uniform(seed, site, i uint64) float64 {
	h := splitmix(seed ^ splitmix(site<<48^i))
	return float64(h>>11) / (1 << 53)
}

func (m *model[F]) fillDropout(mask []F, seed, site uint64) {
	p := m.a.dropout
	keep := F(1 / (1 - p))
	m.pool.run(len(mask), 4096, func(_, lo, hi int) {
		for i := lo; i < hi; i++ {
			if uniform(seed, site, uint64(i)) < p {
				mask[i] = 0
			} else {
				mask[i] = keep
			}
		}
	})
}

// forward runs the network up to the logits (left in m.x.logits[:b·t·V]).
func (m *model[F]) forward(ps pass) {
	a := m.a
	b, t := ps.b, ps.t
	n := b * t
	drop := ps.train && a.dropout > 0
	m.ensure(b, t, drop)
	x := &m.x
	C, H := a.C, a.H

	// positions (restarting at every segment change when asked) and segment ids
	var seg []int32
	if ps.segs != nil {
		seg = x.seg[:n]
		copy(seg, ps.segs)
	}
	pos := x.pos[:n]
	for r := 0; r < b; r++ {
		start := 0
		for i := 0; i < t; i++ {
			if seg != nil && a.segReset && i > 0 && seg[r*t+i] != seg[r*t+i-1] {
				start = i
			}
			pos[r*t+i] = int32(i - start)
		}
	}

	// embeddings (+ learned positions) (+ NEFTune noise in training)
	res0 := x.res[0][:n*C]
	for r := 0; r < n; r++ {
		dst := res0[r*C : (r+1)*C]
		copy(dst, m.w.wte[int(ps.tokens[r])*C:])
		if a.learnedPos {
			for j, v := range m.w.wpe[int(pos[r])*C : int(pos[r]+1)*C] {
				dst[j] += v
			}
		}
	}
	if ps.train && a.neftune > 0 {
		amp := a.neftune / math.Sqrt(float64(t*C))
		m.pool.run(n*C, 4096, func(_, lo, hi int) {
			for i := lo; i < hi; i++ {
				res0[i] += F(amp * (2*uniform(ps.seed, siteNEFTune, uint64(i)) - 1))
			}
		})
	}

	shape := attnShape{b: b, t: t, c: C, nh: a.nh}
	for l := 0; l < a.L; l++ {
		w, la := &m.w.layers[l], &x.layers[l]
		in, out := x.res[l][:n*C], x.res[l+1][:n*C]
		ln1, qkv, y, mid := la.ln1[:n*C], la.qkv[:n*3*C], la.y[:n*C], la.mid[:n*C]
		var attDrop, projDrop, mlpDrop []F
		if drop {
			attDrop, projDrop, mlpDrop = la.attDrop[:b*a.nh*t*t], la.projDrop[:n*C], la.mlpDrop[:n*C]
			m.fillDropout(attDrop, ps.seed, siteOf(l, siteAttn))
			m.fillDropout(projDrop, ps.seed, siteOf(l, siteProj))
			m.fillDropout(mlpDrop, ps.seed, siteOf(l, siteMLP))
		}

		// attention sub-block: mid = in + dropout(proj(attn(norm1(in))))
		normForward(m.pool, a.layerNorm, ln1, la.ln1Mean, la.ln1Rstd, in, w.ln1W, w.ln1B, n, C, a.eps)
		linearForward(m.mm, m.pool, qkv, ln1, w.qkvW, w.qkvB, n, C, 3*C)
		if !a.learnedPos {
			ropeApply(m.pool, qkv, pos, m.ropeCos, m.ropeSin, n, C, a.nh, false)
		}
		attentionForward(m.pool, m.workerMM, x.scratch, y, la.att[:b*a.nh*t*t], attDrop, qkv, seg, shape)
		linearForward(m.mm, m.pool, mid, y, w.projW, w.projB, n, C, C)
		residualAdd(m.pool, mid, in, projDrop)

		// MLP sub-block: out = mid + dropout(mlp(norm2(mid)))
		ln2, h, act := la.ln2[:n*C], la.h[:n*H], la.act[:n*H]
		normForward(m.pool, a.layerNorm, ln2, la.ln2Mean, la.ln2Rstd, mid, w.ln2W, w.ln2B, n, C, a.eps)
		if a.swiglu {
			up := la.up[:n*H]
			linearForward(m.mm, m.pool, h, ln2, w.gateW, nil, n, C, H)
			linearForward(m.mm, m.pool, up, ln2, w.upW, nil, n, C, H)
			swigluForward(m.pool, act, h, up)
			linearForward(m.mm, m.pool, out, act, w.downW, nil, n, H, C)
		} else {
			linearForward(m.mm, m.pool, h, ln2, w.fc1W, w.fc1B, n, C, H)
			geluForward(m.pool, act, h)
			linearForward(m.mm, m.pool, out, act, w.fc2W, w.fc2B, n, H, C)
		}
		residualAdd(m.pool, out, mid, mlpDrop)
	}

	lnf := x.lnf[:n*C]
	normForward(m.pool, a.layerNorm, lnf, x.lnfMean, x.lnfRstd, x.res[a.L][:n*C], m.w.lnfW, m.w.lnfB, n, C, a.eps)
	linearForward(m.mm, m.pool, x.logits[:n*a.V], lnf, m.w.lmW, m.w.lmB, n, C, a.V)
}

// residualAdd: branch = skip + branch·mask (mask nil = no dropout), in place in branch.
func residualAdd[F Float](p *pool, branch, skip, mask []F) {
	p.run(len(branch), 4096, func(_, lo, hi int) {
		if mask == nil {
			for i := lo; i < hi; i++ {
				branch[i] += skip[i]
			}
			return
		}
		for i := lo; i < hi; i++ {
			branch[i] = skip[i] + branch[i]*mask[i]
		}
	})
}

// applyMask: dst = src·mask, or src itself when mask is nil.
func applyMask[F Float](p *pool, dst, src, mask []F) []F {
	if mask == nil {
		return src
	}
	p.run(len(src), 4096, func(_, lo, hi int) {
		for i := lo; i < hi; i++ {
			dst[i] = src[i] * mask[i]
		}
	})
	return dst
}

// backward adds the parameter gradients of the last forward pass, whose logits buffer has
// been overwritten with ∂loss/∂logits (crossEntropy with dlogits), to m.grads.
func (m *model[F]) backward(ps pass) {
	a := m.a
	b, t := ps.b, ps.t
	n := b * t
	x := &m.x
	C, H, V := a.C, a.H, a.V
	drop := ps.train && a.dropout > 0
	var seg []int32
	if ps.segs != nil {
		seg = x.seg[:n]
	}
	pos := x.pos[:n]
	dres, dtmp, dln, dy, dqkv := x.dres[:n*C], x.dtmp[:n*C], x.dln[:n*C], x.dy[:n*C], x.dqkv[:n*3*C]
	dh, dact := x.dh[:n*H], x.dact[:n*H]

	// lm_head and ln_f
	linearBackward(m.mm, m.pool, dln, m.g.lmW, m.g.lmB, x.logits[:n*V], x.lnf[:n*C], m.w.lmW, n, C, V, false)
	clear(dres)
	normBackward(m.pool, a.layerNorm, dres, m.g.lnfW, m.g.lnfB, dln, x.res[a.L][:n*C], x.lnfMean, x.lnfRstd, m.w.lnfW, n, C)

	shape := attnShape{b: b, t: t, c: C, nh: a.nh}
	for l := a.L - 1; l >= 0; l-- {
		w, g, la := &m.w.layers[l], &m.g.layers[l], &x.layers[l]
		in, ln1, qkv, y, mid := x.res[l][:n*C], la.ln1[:n*C], la.qkv[:n*3*C], la.y[:n*C], la.mid[:n*C]
		ln2, h, act := la.ln2[:n*C], la.h[:n*H], la.act[:n*H]
		var attDrop, projDrop, mlpDrop []F
		if drop {
			attDrop, projDrop, mlpDrop = la.attDrop[:b*a.nh*t*t], la.projDrop[:n*C], la.mlpDrop[:n*C]
		}

		// MLP sub-block; dres is ∂/∂out and becomes ∂/∂mid
		dm := applyMask(m.pool, dtmp, dres, mlpDrop)
		if a.swiglu {
			up, dup := la.up[:n*H], x.dup[:n*H]
			linearBackward(m.mm, m.pool, dact, g.downW, nil, dm, act, w.downW, n, H, C, false)
			swigluBackward(m.pool, dh, dup, dact, h, up)
			linearBackward(m.mm, m.pool, dln, g.gateW, nil, dh, ln2, w.gateW, n, C, H, false)
			linearBackward(m.mm, m.pool, dln, g.upW, nil, dup, ln2, w.upW, n, C, H, true)
		} else {
			linearBackward(m.mm, m.pool, dact, g.fc2W, g.fc2B, dm, act, w.fc2W, n, H, C, false)
			geluBackward(m.pool, dh, dact, h)
			linearBackward(m.mm, m.pool, dln, g.fc1W, g.fc1B, dh, ln2, w.fc1W, n, C, H, false)
		}
		normBackward(m.pool, a.layerNorm, dres, g.ln2W, g.ln2B, dln, mid, la.ln2Mean, la.ln2Rstd, w.ln2W, n, C)

		// attention sub-block; dres becomes ∂/∂in
		dp := applyMask(m.pool, dtmp, dres, projDrop)
		linearBackward(m.mm, m.pool, dy, g.projW, g.projB, dp, y, w.projW, n, C, C, false)
		attentionBackward(m.pool, m.workerMM, x.scratch, dqkv, dy, la.att[:b*a.nh*t*t], attDrop, qkv, seg, shape)
		if !a.learnedPos {
			ropeApply(m.pool, dqkv, pos, m.ropeCos, m.ropeSin, n, C, a.nh, true)
		}
		linearBackward(m.mm, m.pool, dln, g.qkvW, g.qkvB, dqkv, ln1, w.qkvW, n, C, 3*C, false)
		normBackward(m.pool, a.layerNorm, dres, g.ln1W, g.ln1B, dln, in, la.ln1Mean, la.ln1Rstd, w.ln1W, n, C)
	}

	// embeddings: scatter-add (serial: rows may share a token or position)
	for r := 0; r < n; r++ {
		d := dres[r*C : (r+1)*C]
		gw := m.g.wte[int(ps.tokens[r])*C:]
		for j, v := range d {
			gw[j] += v
		}
		if a.learnedPos {
			gp := m.g.wpe[int(pos[r])*C:]
			for j, v := range d {
				gp[j] += v
			}
		}
	}
}

// lossAndGrad computes Σw·CE over the logits of the last forward pass; with grad it
// replaces the logits by scale·∂(Σw·CE)/∂logits.
func (m *model[F]) lossAndGrad(n int, targets []int32, weights []float32, scale float64, grad bool) lossTotals {
	return crossEntropy(m.pool, m.x.logits[:n*m.a.V], targets, weights, n, m.a.V, scale, grad, m.x.loss)
}

// forwardBackward is one training micro-batch: forward, loss, backward into m.grads.
func (m *model[F]) forwardBackward(ps pass, targets []int32, weights []float32, scale float64) lossTotals {
	m.forward(ps)
	tot := m.lossAndGrad(ps.b*ps.t, targets, weights, scale, true)
	m.backward(ps)
	return tot
}

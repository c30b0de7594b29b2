package cpu

import (
	"math"

	"github.com/mypt/mypt/sdk/modelspec"
)

// viewWeights are the named tensors of one flat buffer (parameters or gradients) as
// slices of it. Absent tensors (e.g. qkv bias with bias=false) are nil.
func viewWeights[F Float](a modelspec.Arch, lay *modelspec.Layout, buf []F) modelspec.Weights[[]F] {
	return modelspec.ViewWeights(a, lay, func(p modelspec.Param) []F { return buf[p.Offset : p.Offset+p.Size : p.Offset+p.Size] })
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
// capAtt = B·nh·T·S attention entries (S keys per query: T, or the cached sequence's
// length); they grow on demand and are reused across calls.
type acts[F Float] struct {
	capRows, capAtt, capTS int
	dropout                bool
	res                    [][]F // res[l] is block l's input; res[L] feeds ln_f
	layers                 []layerActs[F]
	lnf, lnfMean, lnfRstd  []F
	logits                 []F
	// backward scratch
	dres, dtmp, dln, dqkv, dy, dh, dup, dact []F
	scratch                                  [][]F // per worker, 2·T·S
	loss                                     []lossTotals
}

// model is the network with its parameters, gradients and activation buffers.
type model[F Float] struct {
	a        modelspec.Arch
	lay      *modelspec.Layout
	params   []F
	grads    []F
	w, g     modelspec.Weights[[]F]
	pool     *pool
	mm       gemmFunc[F]   // for whole-batch products (may use every core)
	workerMM []gemmFunc[F] // one single-threaded product per pool worker
	ropeCos  []F
	ropeSin  []F
	x        acts[F]
}

func newModel[F Float](a modelspec.Arch, lay *modelspec.Layout, p *pool, mm gemmFunc[F], workerMM []gemmFunc[F]) *model[F] {
	m := &model[F]{a: a, lay: lay, pool: p, mm: mm, workerMM: workerMM,
		params: make([]F, lay.Total), grads: make([]F, lay.Total)}
	m.w = viewWeights(a, lay, m.params)
	m.g = viewWeights(a, lay, m.grads)
	if !a.LearnedPos {
		cos, sin := a.RopeTables()
		m.ropeCos, m.ropeSin = make([]F, len(cos)), make([]F, len(sin))
		for i := range cos {
			m.ropeCos[i], m.ropeSin[i] = F(cos[i]), F(sin[i])
		}
	}
	return m
}

// ensure sizes the activation buffers for a batch of b rows of t tokens attending to s
// keys each (s = t, or the length of a cached sequence).
func (m *model[F]) ensure(b, t, s int, dropout bool) {
	x := &m.x
	rows, att, ts := b*t, b*m.a.NHead*t*s, t*s
	if rows <= x.capRows && att <= x.capAtt && ts <= x.capTS && (!dropout || x.dropout) {
		return
	}
	rows, att, ts = max(rows, x.capRows), max(att, x.capAtt), max(ts, x.capTS)
	dropout = dropout || x.dropout
	a := m.a
	C, H, V := a.NEmbd, a.MLPHidden, a.VocabSize
	mk := func(n int) []F { return make([]F, n) }
	maybe := func(n int) []F {
		if dropout {
			return mk(n)
		}
		return nil
	}
	*x = acts[F]{capRows: rows, capAtt: att, capTS: ts, dropout: dropout}
	x.res = make([][]F, a.NLayer+1)
	for l := range x.res {
		x.res[l] = mk(rows * C)
	}
	x.layers = make([]layerActs[F], a.NLayer)
	for l := range x.layers {
		la := &x.layers[l]
		la.ln1, la.ln1Mean, la.ln1Rstd = mk(rows*C), mk(rows), mk(rows)
		la.qkv = mk(rows * a.QKVDim())
		la.att, la.attDrop = mk(att), maybe(att)
		la.y, la.projDrop, la.mid = mk(rows*C), maybe(rows*C), mk(rows*C)
		la.ln2, la.ln2Mean, la.ln2Rstd = mk(rows*C), mk(rows), mk(rows)
		la.h, la.act, la.mlpDrop = mk(rows*H), mk(rows*H), maybe(rows*C)
		if a.SwiGLU {
			la.up = mk(rows * H)
		}
	}
	x.lnf, x.lnfMean, x.lnfRstd = mk(rows*C), mk(rows), mk(rows)
	x.logits = mk(rows * V)
	x.dres, x.dtmp, x.dln, x.dy = mk(rows*C), mk(rows*C), mk(rows*C), mk(rows*C)
	x.dqkv = mk(rows * a.QKVDim())
	x.dh, x.dact = mk(rows*H), mk(rows*H)
	if a.SwiGLU {
		x.dup = mk(rows * H)
	}
	x.scratch = make([][]F, m.pool.workers)
	for i := range x.scratch {
		x.scratch[i] = mk(2 * ts)
	}
	x.loss = make([]lossTotals, m.pool.workers)
}

// pass describes one forward pass.
type pass struct {
	b, t   int
	tokens []int32
	pos    []int32 // each token's position
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
	p := m.a.Dropout
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

// forward runs the network up to the logits (left in m.x.logits[:b·t·V]). With a cache,
// the pass extends the one sequence (b = 1) the cache holds: its keys and values are
// appended at positions ps.pos and attention reads the whole cached sequence
// (generation); without, attention reads the batch's own keys.
func (m *model[F]) forward(ps pass, cache *kvCache[F]) {
	a := m.a
	b, t := ps.b, ps.t
	n := b * t
	drop := ps.train && a.Dropout > 0
	s := t // keys per query
	if cache != nil {
		s = int(ps.pos[0]) + t
	}
	m.ensure(b, t, s, drop)
	x := &m.x
	C, H, QKV := a.NEmbd, a.MLPHidden, a.QKVDim()
	pos, seg := ps.pos, ps.segs

	// embeddings (+ learned positions) (+ NEFTune noise in training)
	res0 := x.res[0][:n*C]
	for r := 0; r < n; r++ {
		dst := res0[r*C : (r+1)*C]
		copy(dst, m.w.Wte[int(ps.tokens[r])*C:])
		if a.LearnedPos {
			for j, v := range m.w.Wpe[int(pos[r])*C : int(pos[r]+1)*C] {
				dst[j] += v
			}
		}
	}
	if ps.train && a.NeftuneAlpha > 0 {
		amp := a.NeftuneAlpha / math.Sqrt(float64(t*C))
		m.pool.run(n*C, 4096, func(_, lo, hi int) {
			for i := lo; i < hi; i++ {
				res0[i] += F(amp * (2*uniform(ps.seed, siteNEFTune, uint64(i)) - 1))
			}
		})
	}

	shape := attnShape{b: b, t: t, s: s, c: C, nh: a.NHead, qkv: QKV}
	for l := 0; l < a.NLayer; l++ {
		w, la := &m.w.Layers[l], &x.layers[l]
		in, out := x.res[l][:n*C], x.res[l+1][:n*C]
		ln1, qkv, y, mid := la.ln1[:n*C], la.qkv[:n*QKV], la.y[:n*C], la.mid[:n*C]
		att := la.att[:b*a.NHead*t*s]
		var attDrop, projDrop, mlpDrop []F
		if drop {
			attDrop, projDrop, mlpDrop = la.attDrop[:b*a.NHead*t*t], la.projDrop[:n*C], la.mlpDrop[:n*C]
			m.fillDropout(attDrop, ps.seed, siteOf(l, siteAttn))
			m.fillDropout(projDrop, ps.seed, siteOf(l, siteProj))
			m.fillDropout(mlpDrop, ps.seed, siteOf(l, siteMLP))
		}

		// attention sub-block: mid = in + dropout(proj(attn(norm1(in))))
		normForward(m.pool, a.LayerNorm, ln1, la.ln1Mean, la.ln1Rstd, in, w.Ln1W, w.Ln1B, n, C, a.NormEps)
		linearForward(m.mm, m.pool, qkv, ln1, w.QkvW, w.QkvB, n, C, QKV)
		if !a.LearnedPos {
			ropeApply(m.pool, qkv, pos, m.ropeCos, m.ropeSin, n, C, a.NHead, false)
		}
		keys := batchKeys(qkv, C, QKV)
		if cache != nil {
			keys = cache.appendKeys(l, qkv, int(pos[0]), t, C, QKV)
		}
		attentionForward(m.pool, m.workerMM, x.scratch, y, att, attDrop, qkv, keys, seg, shape)
		linearForward(m.mm, m.pool, mid, y, w.ProjW, w.ProjB, n, C, C)
		residualAdd(m.pool, mid, in, projDrop)

		// MLP sub-block: out = mid + dropout(mlp(norm2(mid)))
		ln2, h, act := la.ln2[:n*C], la.h[:n*H], la.act[:n*H]
		normForward(m.pool, a.LayerNorm, ln2, la.ln2Mean, la.ln2Rstd, mid, w.Ln2W, w.Ln2B, n, C, a.NormEps)
		if a.SwiGLU {
			up := la.up[:n*H]
			linearForward(m.mm, m.pool, h, ln2, w.GateW, nil, n, C, H)
			linearForward(m.mm, m.pool, up, ln2, w.UpW, nil, n, C, H)
			swigluForward(m.pool, act, h, up)
			linearForward(m.mm, m.pool, out, act, w.DownW, nil, n, H, C)
		} else {
			linearForward(m.mm, m.pool, h, ln2, w.Fc1W, w.Fc1B, n, C, H)
			geluForward(m.pool, act, h)
			linearForward(m.mm, m.pool, out, act, w.Fc2W, w.Fc2B, n, H, C)
		}
		residualAdd(m.pool, out, mid, mlpDrop)
	}

	lnf := x.lnf[:n*C]
	normForward(m.pool, a.LayerNorm, lnf, x.lnfMean, x.lnfRstd, x.res[a.NLayer][:n*C], m.w.LnfW, m.w.LnfB, n, C, a.NormEps)
	linearForward(m.mm, m.pool, x.logits[:n*a.VocabSize], lnf, m.w.LmW, m.w.LmB, n, C, a.VocabSize)
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
	C, H, V := a.NEmbd, a.MLPHidden, a.VocabSize
	drop := ps.train && a.Dropout > 0
	pos, seg := ps.pos, ps.segs
	QKV := a.QKVDim()
	dres, dtmp, dln, dy, dqkv := x.dres[:n*C], x.dtmp[:n*C], x.dln[:n*C], x.dy[:n*C], x.dqkv[:n*QKV]
	dh, dact := x.dh[:n*H], x.dact[:n*H]

	// lm_head and ln_f
	linearBackward(m.mm, m.pool, dln, m.g.LmW, m.g.LmB, x.logits[:n*V], x.lnf[:n*C], m.w.LmW, n, C, V, false)
	clear(dres)
	normBackward(m.pool, a.LayerNorm, dres, m.g.LnfW, m.g.LnfB, dln, x.res[a.NLayer][:n*C], x.lnfMean, x.lnfRstd, m.w.LnfW, n, C)

	shape := attnShape{b: b, t: t, s: t, c: C, nh: a.NHead, qkv: QKV}
	for l := a.NLayer - 1; l >= 0; l-- {
		w, g, la := &m.w.Layers[l], &m.g.Layers[l], &x.layers[l]
		in, ln1, qkv, y, mid := x.res[l][:n*C], la.ln1[:n*C], la.qkv[:n*QKV], la.y[:n*C], la.mid[:n*C]
		ln2, h, act := la.ln2[:n*C], la.h[:n*H], la.act[:n*H]
		var attDrop, projDrop, mlpDrop []F
		if drop {
			attDrop, projDrop, mlpDrop = la.attDrop[:b*a.NHead*t*t], la.projDrop[:n*C], la.mlpDrop[:n*C]
		}

		// MLP sub-block; dres is ∂/∂out and becomes ∂/∂mid
		dm := applyMask(m.pool, dtmp, dres, mlpDrop)
		if a.SwiGLU {
			up, dup := la.up[:n*H], x.dup[:n*H]
			linearBackward(m.mm, m.pool, dact, g.DownW, nil, dm, act, w.DownW, n, H, C, false)
			swigluBackward(m.pool, dh, dup, dact, h, up)
			linearBackward(m.mm, m.pool, dln, g.GateW, nil, dh, ln2, w.GateW, n, C, H, false)
			linearBackward(m.mm, m.pool, dln, g.UpW, nil, dup, ln2, w.UpW, n, C, H, true)
		} else {
			linearBackward(m.mm, m.pool, dact, g.Fc2W, g.Fc2B, dm, act, w.Fc2W, n, H, C, false)
			geluBackward(m.pool, dh, dact, h)
			linearBackward(m.mm, m.pool, dln, g.Fc1W, g.Fc1B, dh, ln2, w.Fc1W, n, C, H, false)
		}
		normBackward(m.pool, a.LayerNorm, dres, g.Ln2W, g.Ln2B, dln, mid, la.ln2Mean, la.ln2Rstd, w.Ln2W, n, C)

		// attention sub-block; dres becomes ∂/∂in
		dp := applyMask(m.pool, dtmp, dres, projDrop)
		linearBackward(m.mm, m.pool, dy, g.ProjW, g.ProjB, dp, y, w.ProjW, n, C, C, false)
		attentionBackward(m.pool, m.workerMM, x.scratch, dqkv, dy, la.att[:b*a.NHead*t*t], attDrop, qkv, seg, shape)
		if !a.LearnedPos {
			ropeApply(m.pool, dqkv, pos, m.ropeCos, m.ropeSin, n, C, a.NHead, true)
		}
		linearBackward(m.mm, m.pool, dln, g.QkvW, g.QkvB, dqkv, ln1, w.QkvW, n, C, QKV, false)
		normBackward(m.pool, a.LayerNorm, dres, g.Ln1W, g.Ln1B, dln, in, la.ln1Mean, la.ln1Rstd, w.Ln1W, n, C)
	}

	// embeddings: scatter-add (serial: rows may share a token or position)
	for r := 0; r < n; r++ {
		d := dres[r*C : (r+1)*C]
		gw := m.g.Wte[int(ps.tokens[r])*C:]
		for j, v := range d {
			gw[j] += v
		}
		if a.LearnedPos {
			gp := m.g.Wpe[int(pos[r])*C:]
			for j, v := range d {
				gp[j] += v
			}
		}
	}
}

// lossAndGrad computes Σw·CE over the logits of the last forward pass; with grad it
// replaces the logits by scale·∂(Σw·CE)/∂logits.
func (m *model[F]) lossAndGrad(n int, targets []int32, weights []float32, scale float64, grad bool) lossTotals {
	return crossEntropy(m.pool, m.x.logits[:n*m.a.VocabSize], targets, weights, n, m.a.VocabSize, scale, grad, m.x.loss)
}

// forwardBackward is one training micro-batch: forward, loss, backward into m.grads.
func (m *model[F]) forwardBackward(ps pass, targets []int32, weights []float32, scale float64) lossTotals {
	m.forward(ps, nil)
	tot := m.lossAndGrad(ps.b*ps.t, targets, weights, scale, true)
	m.backward(ps)
	return tot
}

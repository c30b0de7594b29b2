package cuda

import (
	"encoding/binary"
	"fmt"
	"math"
	"slices"
	"unsafe"

	"github.com/mypt/mypt/backends/cuda/device"
	"github.com/mypt/mypt/backends/cuda/kernels"
	"github.com/mypt/mypt/sdk/backendkit"
	"github.com/mypt/mypt/sdk/modelspec"
)

// queue issues kernels and products on a device, keeping the first error (sticky), so the
// step code reads like the CPU backend's; callers check q.err at the end of a step.
type queue struct {
	d   device.Device
	err error
}

// k launches kernel name; call it through the typed launchers of launch.go.
func (q *queue) k(name string, grid, block device.Dim3, args ...any) {
	if q.err == nil {
		q.err = q.d.Launch(name, grid, block, args...)
	}
}

func (q *queue) gemm(g device.Gemm) {
	if q.err == nil {
		q.err = q.d.Gemm(g)
	}
}

func (q *queue) zero(p device.Ptr, bytes int) {
	if q.err == nil {
		q.err = q.d.Zero(p, bytes)
	}
}

func (q *queue) up(p device.Ptr, b []byte) {
	if q.err == nil {
		q.err = q.d.HtoD(p, b)
	}
}

func (q *queue) down(b []byte, p device.Ptr) {
	if q.err == nil {
		q.err = q.d.DtoH(b, p)
	}
}

func bytesOf[T int32 | float32 | float64](s []T) []byte {
	if len(s) == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(&s[0])), len(s)*int(unsafe.Sizeof(s[0])))
}

// ---- the linear layer: out[N,OC] = in[N,IC]·W[OC,IC]ᵀ + b

func (q *queue) linearFwd(out, in, w, b device.Ptr, n, ic, oc int) {
	beta := float32(0)
	if b != 0 {
		q.fillRows(out, b, n*oc, oc)
		beta = 1
	}
	q.gemm(device.Gemm{TransB: true, M: n, N: oc, K: ic, Alpha: 1, A: in, LDA: ic, B: w, LDB: ic, Beta: beta, C: out, LDC: oc})
}

// linearBwd: din (=, or += when accumulate) dout·W; dW += doutᵀ·in; db += Σ_rows dout.
func (q *queue) linearBwd(din, dw, db, dout, in, w device.Ptr, n, ic, oc int, accumulate bool) {
	if din != 0 {
		beta := float32(0)
		if accumulate {
			beta = 1
		}
		q.gemm(device.Gemm{M: n, N: ic, K: oc, Alpha: 1, A: dout, LDA: oc, B: w, LDB: ic, Beta: beta, C: din, LDC: ic})
	}
	q.gemm(device.Gemm{TransA: true, M: oc, N: ic, K: n, Alpha: 1, A: dout, LDA: oc, B: in, LDB: ic, Beta: 1, C: dw, LDC: ic})
	if db != 0 {
		q.colSumAdd(db, dout, n, oc)
	}
}

// norm is the model's LayerNorm or RMSNorm over n rows.
func (q *queue) norm(a modelspec.Arch, out, mean, rstd, in, w, b device.Ptr, n int) {
	q.normFwd(out, mean, rstd, in, w, b, n, a.NEmbd, float32(a.NormEps), a.LayerNorm)
}

// normBwd: din += ∂/∂in, dw (db) += parameter gradients.
func (q *queue) normBwd(a modelspec.Arch, din, dw, db, dout, in, mean, rstd, w device.Ptr, n int) {
	q.normBwdDx(din, dout, in, mean, rstd, w, n, a.NEmbd, a.LayerNorm)
	q.normBwdDw(dw, db, dout, in, mean, rstd, n, a.NEmbd, a.LayerNorm)
}

// ---- weights: named views into the flat parameter (or gradient) buffer

// viewWeights are the named tensors of one flat buffer (parameters or gradients) as
// device pointers into it. Absent tensors are 0.
func viewWeights(a modelspec.Arch, lay *modelspec.Layout, base device.Ptr) modelspec.Weights[device.Ptr] {
	return modelspec.ViewWeights(a, lay, func(p modelspec.Param) device.Ptr { return base.F32(p.Offset) })
}

// ---- activations

// bufs owns a set of device allocations freed together.
type bufs struct {
	d    device.Device
	ptrs []device.Ptr
	size int
	err  error
}

func (b *bufs) f32(n int) device.Ptr { return b.alloc(4 * n) }

func (b *bufs) alloc(bytes int) device.Ptr {
	if b.err != nil {
		return 0
	}
	p, err := b.d.Alloc(max(bytes, 4))
	if err != nil {
		b.err = err
		return 0
	}
	b.ptrs = append(b.ptrs, p)
	b.size += bytes
	return p
}

func (b *bufs) free() {
	for _, p := range b.ptrs {
		_ = b.d.Free(p)
	}
	b.ptrs, b.size = nil, 0
}

type layerActs struct {
	ln1, ln1Mean, ln1Rstd, qkv, y, lse, mid device.Ptr
	ln2, ln2Mean, ln2Rstd, h, up, act       device.Ptr
}

// acts are the buffers of one forward/backward pass for up to rows = B·T rows.
type acts struct {
	rows, batch, t        int
	mem                   bufs
	res                   []device.Ptr
	layers                []layerActs
	lnf, lnfMean, lnfRstd device.Ptr
	logits                device.Ptr
	dres, dtmp, dln, dy   device.Ptr
	dqkv, dh, dup, dact   device.Ptr
	D                     device.Ptr
	tokens, pos, seg      device.Ptr
	targets, weights      device.Ptr
	rowLoss, correct      device.Ptr
	embRows, embOffs      device.Ptr
	embIDs                device.Ptr
}

func newActs(d device.Device, a modelspec.Arch, batch, t int) (*acts, error) {
	rows := batch * t
	x := &acts{rows: rows, batch: batch, t: t, mem: bufs{d: d}}
	m := &x.mem
	C, H, V := a.NEmbd, a.MLPHidden, a.VocabSize
	for range a.NLayer + 1 {
		x.res = append(x.res, m.f32(rows*C))
	}
	for range a.NLayer {
		la := layerActs{ln1: m.f32(rows * C), ln1Mean: m.f32(rows), ln1Rstd: m.f32(rows), qkv: m.f32(rows * a.QKVDim()),
			y: m.f32(rows * C), lse: m.f32(batch * a.NHead * t), mid: m.f32(rows * C),
			ln2: m.f32(rows * C), ln2Mean: m.f32(rows), ln2Rstd: m.f32(rows), h: m.f32(rows * H), act: m.f32(rows * H)}
		if a.SwiGLU {
			la.up = m.f32(rows * H)
		}
		x.layers = append(x.layers, la)
	}
	x.lnf, x.lnfMean, x.lnfRstd = m.f32(rows*C), m.f32(rows), m.f32(rows)
	x.logits = m.f32(rows * V)
	x.dres, x.dtmp, x.dln, x.dy = m.f32(rows*C), m.f32(rows*C), m.f32(rows*C), m.f32(rows*C)
	x.dqkv, x.dh, x.dact = m.f32(rows*a.QKVDim()), m.f32(rows*H), m.f32(rows*H)
	if a.SwiGLU {
		x.dup = m.f32(rows * H)
	}
	x.D = m.f32(batch * a.NHead * t)
	x.tokens, x.pos, x.seg, x.targets, x.weights = m.alloc(4*rows), m.alloc(4*rows), m.alloc(4*rows), m.alloc(4*rows), m.f32(rows)
	x.rowLoss, x.correct = m.alloc(8*rows), m.alloc(4*rows)
	x.embRows, x.embOffs, x.embIDs = m.alloc(4*rows), m.alloc(4*(rows+1)), m.alloc(4*rows)
	if m.err != nil {
		m.free()
		return nil, m.err
	}
	return x, nil
}

// pass describes one forward pass.
type pass struct {
	b, t   int
	tokens []int32
	pos    []int32 // each token's position
	segs   []int32 // nil: every row is one segment
	train  bool
	seed   uint64
}

// Dropout / noise sites, as the CPU backend numbers them.
func siteOf(layer, kind int) uint64 { return uint64(1 + layer*3 + kind) } // kind 0 attn, 1 proj, 2 mlp

// dropoutAt returns the dropout arguments of a site: off (noDropout) unless ps trains with
// dropout > 0, else the kernel's threshold and keep factor.
func dropoutAt(a modelspec.Arch, ps *pass, layer, kind int) dropout {
	if !ps.train || a.Dropout == 0 {
		return noDropout
	}
	return dropout{seed: ps.seed, site: siteOf(layer, kind), thr: uint64(math.Ceil(a.Dropout * (1 << 53))), keep: float32(1 / (1 - a.Dropout))}
}

// model is the network on a device: parameters, gradients, Adam moments (one flat fp32
// buffer each, in the host's parameter order) and the RoPE tables.
type model struct {
	a             modelspec.Arch
	lay           *modelspec.Layout
	q             *queue
	mem           bufs
	params, grads device.Ptr
	adamM, adamV  device.Ptr
	w, g          modelspec.Weights[device.Ptr]
	ropeCos       device.Ptr
	ropeSin       device.Ptr
	partial       device.Ptr
	x             *acts
}

func newModel(d device.Device, a modelspec.Arch, lay *modelspec.Layout) (*model, error) {
	m := &model{a: a, lay: lay, q: &queue{d: d}, mem: bufs{d: d}}
	b := &m.mem
	m.params, m.grads, m.adamM, m.adamV = b.f32(lay.Total), b.f32(lay.Total), b.f32(lay.Total), b.f32(lay.Total)
	m.partial = b.alloc(8 * kernels.SumsqGrid)
	if !a.LearnedPos {
		half := a.HeadDim / 2
		m.ropeCos, m.ropeSin = b.f32(a.BlockSize*half), b.f32(a.BlockSize*half)
	}
	if b.err != nil {
		b.free()
		return nil, fmt.Errorf("allocating the model (%d parameters): %w", lay.Total, b.err)
	}
	for _, p := range []device.Ptr{m.params, m.grads, m.adamM, m.adamV} {
		m.q.zero(p, 4*lay.Total)
	}
	if !a.LearnedPos {
		cos64, sin64 := a.RopeTables()
		cos, sin := make([]float32, len(cos64)), make([]float32, len(sin64))
		for i := range cos64 {
			cos[i], sin[i] = float32(cos64[i]), float32(sin64[i])
		}
		m.q.up(m.ropeCos, bytesOf(cos))
		m.q.up(m.ropeSin, bytesOf(sin))
	}
	m.w, m.g = viewWeights(a, lay, m.params), viewWeights(a, lay, m.grads)
	return m, m.q.err
}

func (m *model) free() {
	if m.x != nil {
		m.x.mem.free()
		m.x = nil
	}
	m.mem.free()
}

// ensure sizes the activations for b rows of t tokens (reallocating when they grow).
func (m *model) ensure(b, t int) error {
	if x := m.x; x != nil && b*t <= x.rows && b*m.a.NHead*t <= x.batch*m.a.NHead*x.t && b <= x.batch {
		return nil
	}
	nb, nt := b, t
	if m.x != nil {
		nb, nt = max(b, m.x.batch), max(t, m.x.t)
		m.x.mem.free()
		m.x = nil
	}
	x, err := newActs(m.q.d, m.a, nb, nt)
	if err != nil {
		return fmt.Errorf("allocating activations for %d×%d tokens: %w", nb, nt, err)
	}
	m.x = x
	return nil
}

// forward runs the network up to the logits (x.logits[:n·V]). With a cache, the pass
// extends the one sequence (b = 1) the cache holds: its keys and values are appended at
// positions ps.pos and attention reads the whole cached sequence (generation); without,
// attention reads the batch's own keys.
func (m *model) forward(ps *pass, cache *kvCache) error {
	a, q := m.a, m.q
	if err := m.ensure(ps.b, ps.t); err != nil {
		return err
	}
	x := m.x
	n, C, H, QKV := ps.b*ps.t, a.NEmbd, a.MLPHidden, a.QKVDim()
	q.up(x.tokens, bytesOf(ps.tokens))
	q.up(x.pos, bytesOf(ps.pos))
	seg := device.Ptr(0)
	if ps.segs != nil {
		seg = x.seg
		q.up(seg, bytesOf(ps.segs))
	}

	q.embedFwd(x.res[0], m.w.Wte, m.w.Wpe, x.tokens, x.pos, n, C)
	if ps.train && a.NeftuneAlpha > 0 {
		q.neftune(x.res[0], n*C, ps.seed, a.NeftuneAlpha/math.Sqrt(float64(ps.t*C)))
	}
	for l := 0; l < a.NLayer; l++ {
		w, la := &m.w.Layers[l], &x.layers[l]
		in, out := x.res[l], x.res[l+1]
		q.norm(a, la.ln1, la.ln1Mean, la.ln1Rstd, in, w.Ln1W, w.Ln1B, n)
		q.linearFwd(la.qkv, la.ln1, w.QkvW, w.QkvB, n, C, QKV)
		if !a.LearnedPos {
			q.rope(la.qkv, x.pos, m.ropeCos, m.ropeSin, n, C, a.NHead, false)
		}
		// keys and values: the batch's own qkv rows, or the cached sequence with these
		// rows appended
		k, v, skv, tk, qoff := la.qkv.F32(C), la.qkv.F32(C+a.KVDim()), QKV, ps.t, 0
		if cache != nil {
			qoff = int(ps.pos[0])
			q.kvAppend(cache.k[l], cache.v[l], la.qkv, n, C, qoff)
			k, v, skv, tk = cache.k[l], cache.v[l], a.KVDim(), qoff+ps.t
		}
		q.attnFwd(la.y, la.lse, la.qkv, k, v, seg, ps.b, ps.t, tk, qoff, a.NHead, a.HeadDim, QKV, skv, C, dropoutAt(a, ps, l, 0))
		q.linearFwd(la.mid, la.y, w.ProjW, w.ProjB, n, C, C)
		q.residualAdd(la.mid, in, n*C, dropoutAt(a, ps, l, 1))

		q.norm(a, la.ln2, la.ln2Mean, la.ln2Rstd, la.mid, w.Ln2W, w.Ln2B, n)
		if a.SwiGLU {
			q.linearFwd(la.h, la.ln2, w.GateW, 0, n, C, H)
			q.linearFwd(la.up, la.ln2, w.UpW, 0, n, C, H)
			q.swigluFwd(la.act, la.h, la.up, n*H)
			q.linearFwd(out, la.act, w.DownW, 0, n, H, C)
		} else {
			q.linearFwd(la.h, la.ln2, w.Fc1W, w.Fc1B, n, C, H)
			q.geluFwd(la.act, la.h, n*H)
			q.linearFwd(out, la.act, w.Fc2W, w.Fc2B, n, H, C)
		}
		q.residualAdd(out, la.mid, n*C, dropoutAt(a, ps, l, 2))
	}
	q.norm(a, x.lnf, x.lnfMean, x.lnfRstd, x.res[a.NLayer], m.w.LnfW, m.w.LnfB, n)
	q.linearFwd(x.logits, x.lnf, m.w.LmW, m.w.LmB, n, C, a.VocabSize)
	return q.err
}

// loss runs the fused classifier over the last forward's logits; with grad the logits
// become scale·∂(Σw·CE)/∂logits.
func (m *model) loss(n int, targets []int32, weights []float32, scale float64, grad bool) (backendkit.Totals, error) {
	q, x := m.q, m.x
	q.up(x.targets, bytesOf(targets))
	q.up(x.weights, bytesOf(weights))
	q.xent(x.logits, x.targets, x.weights, x.rowLoss, x.correct, n, m.a.VocabSize, scale, grad)
	rl, cr := make([]float64, n), make([]int32, n)
	q.down(bytesOf(rl), x.rowLoss)
	q.down(bytesOf(cr), x.correct)
	var t backendkit.Totals
	for r := range n {
		if weights[r] > 0 {
			t.LossSum += rl[r]
			t.WeightSum += float64(weights[r])
			t.Counted++
			t.Correct += uint64(cr[r])
		}
	}
	return t, q.err
}

// groups builds the CSR lists of rows per distinct id (ids ascending, rows in order).
func groups(ids []int32) (rows, offs, uniq []int32) {
	order := make([]int32, len(ids))
	for i := range order {
		order[i] = int32(i)
	}
	slices.SortStableFunc(order, func(x, y int32) int { return int(ids[x]) - int(ids[y]) })
	for i, r := range order {
		if i == 0 || ids[r] != ids[order[i-1]] {
			uniq = append(uniq, ids[r])
			offs = append(offs, int32(i))
		}
	}
	return order, append(offs, int32(len(ids))), uniq
}

func (m *model) embedBwd(table, d device.Ptr, ids []int32) {
	rows, offs, uniq := groups(ids)
	x, q := m.x, m.q
	q.up(x.embRows, bytesOf(rows))
	q.up(x.embOffs, bytesOf(offs))
	q.up(x.embIDs, bytesOf(uniq))
	q.embedBwd(table, d, x.embRows, x.embOffs, x.embIDs, len(uniq), m.a.NEmbd)
}

// backward adds the parameter gradients of the last forward pass (whose logits now hold
// ∂loss/∂logits) to the gradient buffer.
func (m *model) backward(ps *pass) error {
	a, q, x := m.a, m.q, m.x
	n, C, H, V, QKV := ps.b*ps.t, a.NEmbd, a.MLPHidden, a.VocabSize, a.QKVDim()
	seg := device.Ptr(0)
	if ps.segs != nil {
		seg = x.seg
	}
	drop := ps.train && a.Dropout > 0

	q.linearBwd(x.dln, m.g.LmW, m.g.LmB, x.logits, x.lnf, m.w.LmW, n, C, V, false)
	q.zero(x.dres, 4*n*C)
	q.normBwd(a, x.dres, m.g.LnfW, m.g.LnfB, x.dln, x.res[a.NLayer], x.lnfMean, x.lnfRstd, m.w.LnfW, n)
	for l := a.NLayer - 1; l >= 0; l-- {
		w, g, la := &m.w.Layers[l], &m.g.Layers[l], &x.layers[l]
		dm := x.dres
		if drop {
			q.maskMul(x.dtmp, x.dres, n*C, dropoutAt(a, ps, l, 2))
			dm = x.dtmp
		}
		if a.SwiGLU {
			q.linearBwd(x.dact, g.DownW, 0, dm, la.act, w.DownW, n, H, C, false)
			q.swigluBwd(x.dh, x.dup, x.dact, la.h, la.up, n*H)
			q.linearBwd(x.dln, g.GateW, 0, x.dh, la.ln2, w.GateW, n, C, H, false)
			q.linearBwd(x.dln, g.UpW, 0, x.dup, la.ln2, w.UpW, n, C, H, true)
		} else {
			q.linearBwd(x.dact, g.Fc2W, g.Fc2B, dm, la.act, w.Fc2W, n, H, C, false)
			q.geluBwd(x.dh, x.dact, la.h, n*H)
			q.linearBwd(x.dln, g.Fc1W, g.Fc1B, x.dh, la.ln2, w.Fc1W, n, C, H, false)
		}
		q.normBwd(a, x.dres, g.Ln2W, g.Ln2B, x.dln, la.mid, la.ln2Mean, la.ln2Rstd, w.Ln2W, n)

		dp := x.dres
		if drop {
			q.maskMul(x.dtmp, x.dres, n*C, dropoutAt(a, ps, l, 1))
			dp = x.dtmp
		}
		q.linearBwd(x.dy, g.ProjW, g.ProjB, dp, la.y, w.ProjW, n, C, C, false)
		att := dropoutAt(a, ps, l, 0)
		q.attnBwdPre(x.D, x.dy, la.y, ps.b, ps.t, a.NHead, a.HeadDim, C)
		q.attnBwdDq(x.dqkv, la.qkv, la.qkv.F32(C), la.qkv.F32(2*C), x.dy, la.lse, x.D, seg,
			ps.b, ps.t, a.NHead, a.HeadDim, QKV, C, att)
		q.attnBwdDkv(x.dqkv.F32(C), x.dqkv.F32(2*C), la.qkv, la.qkv.F32(C), la.qkv.F32(2*C), x.dy, la.lse, x.D, seg,
			ps.b, ps.t, a.NHead, a.HeadDim, QKV, C, att)
		if !a.LearnedPos {
			q.rope(x.dqkv, x.pos, m.ropeCos, m.ropeSin, n, C, a.NHead, true)
		}
		q.linearBwd(x.dln, g.QkvW, g.QkvB, x.dqkv, la.ln1, w.QkvW, n, C, QKV, false)
		q.normBwd(a, x.dres, g.Ln1W, g.Ln1B, x.dln, x.res[l], la.ln1Mean, la.ln1Rstd, w.Ln1W, n)
	}
	m.embedBwd(m.g.Wte, x.dres, ps.tokens)
	if a.LearnedPos {
		m.embedBwd(m.g.Wpe, x.dres, ps.pos)
	}
	return q.err
}

// gradNorm is the global L2 norm of the gradients (fixed-order partial sums in float64).
func (m *model) gradNorm() (float64, error) {
	q := m.q
	q.sumsq(m.partial, m.grads, m.lay.Total)
	part := make([]float64, kernels.SumsqGrid)
	q.down(bytesOf(part), m.partial)
	var s float64
	for _, v := range part {
		s += v
	}
	return math.Sqrt(s), q.err
}

// adamStep clips and applies AdamW step st.Number, zeroing the gradients; consecutive
// tensors with the same decay share a launch. Frozen tensors' gradients are zeroed first
// (so they are not in the norm) and they get no update: their parameters and moments stay
// as they are.
func (m *model) adamStep(o backendkit.Optimizer, st backendkit.Step) (float64, error) {
	lr, wd, clip := st.LearningRate, st.WeightDecay, st.ClipNorm
	if m.lay.AnyFrozen {
		for _, p := range m.lay.Params {
			if p.Frozen {
				m.q.zero(m.grads.F32(p.Offset), 4*p.Size)
			}
		}
	}
	norm, err := m.gradNorm()
	if err != nil {
		return 0, err
	}
	gscale := float32(1)
	if clip > 0 {
		if coef := clip / (norm + 1e-6); coef < 1 {
			gscale = float32(coef)
		}
	}
	bc1 := 1 - math.Pow(o.Beta1, float64(st.Number))
	bc2 := 1 - math.Pow(o.Beta2, float64(st.Number))
	b1, b2 := float32(o.Beta1), float32(o.Beta2)
	slots := m.lay.Params
	for i := 0; i < len(slots); {
		j := i
		for j < len(slots) && slots[j].Decay == slots[i].Decay && slots[j].Frozen == slots[i].Frozen {
			j++
		}
		if slots[i].Frozen {
			i = j
			continue
		}
		off, cnt := slots[i].Offset, slots[j-1].Offset+slots[j-1].Size-slots[i].Offset
		decay := float32(1)
		if slots[i].Decay {
			decay = float32(1 - lr*wd)
		}
		m.q.adamw(m.params.F32(off), m.grads.F32(off), m.adamM.F32(off), m.adamV.F32(off), cnt, adamConsts{
			gscale: gscale, b1: b1, c1: 1 - b1, b2: b2, c2: 1 - b2, bc2Sqrt: float32(math.Sqrt(bc2)),
			eps: float32(o.Eps), decay: decay, stepSize: float32(lr / bc1)})
		i = j
	}
	return norm, m.q.err
}

// readF32 copies n floats from the device.
func (m *model) readF32(p device.Ptr, n int) ([]float32, error) {
	out := make([]float32, n)
	err := m.q.d.DtoH(bytesOf(out), p)
	return out, err
}

// le32 is little-endian float32 bytes of v (host order on every supported platform).
func le32(v []float32) []byte {
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
	}
	return b
}

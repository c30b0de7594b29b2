package cuda

import (
	"github.com/mypt/mypt/backends/cuda/device"
	"github.com/mypt/mypt/backends/cuda/kernels"
)

// One typed launcher per kernel of kernels.cu: the Go compiler checks every call site's
// arguments, and each launcher owns its kernel's launch shape (the grid and block the
// kernel's comment in kernels.cu asks for). Their parameters follow the kernel's, in
// order; both devices check the argument kinds against the signatures parsed from
// kernels.cu at every launch, which the tests exercise for every launcher.

// dropout is the random-mask argument group of the kernels that apply dropout: the
// request's seed, the site (siteOf), the threshold and the keep factor (dropParams).
type dropout struct {
	seed, site, thr uint64
	keep            float32
}

// noDropout leaves values as they are.
var noDropout = dropout{keep: 1}

// elt launches an element-wise kernel over n elements.
func (q *queue) elt(name string, n int, args ...any) {
	q.k(name, device.D1(device.Blocks(n, kernels.EltBlock)), device.D1(kernels.EltBlock), args...)
}

// rows launches a kernel with one block of NormBlock threads per row.
func (q *queue) rows(name string, n int, args ...any) {
	q.k(name, device.D1(n), device.D1(kernels.NormBlock), args...)
}

func (q *queue) embedFwd(out, wte, wpe, tokens, pos device.Ptr, n, c int) {
	q.rows("embed_fwd", n, out, wte, wpe, tokens, pos, int32(n), int32(c))
}

func (q *queue) neftune(x device.Ptr, n int, seed uint64, amp float64) {
	q.elt("neftune", n, x, int64(n), seed, amp)
}

func (q *queue) embedBwd(table, d, rows, offs, ids device.Ptr, groups, c int) {
	q.rows("embed_bwd", groups, table, d, rows, offs, ids, int32(c))
}

func (q *queue) normFwd(out, mean, rstd, in, w, b device.Ptr, n, c int, eps float32, layerNorm bool) {
	q.rows("norm_fwd", n, out, mean, rstd, in, w, b, int32(n), int32(c), eps, b2i(layerNorm))
}

func (q *queue) normBwdDx(din, dout, in, mean, rstd, w device.Ptr, n, c int, layerNorm bool) {
	q.rows("norm_bwd_dx", n, din, dout, in, mean, rstd, w, int32(n), int32(c), b2i(layerNorm))
}

func (q *queue) normBwdDw(dw, db, dout, in, mean, rstd device.Ptr, n, c int, layerNorm bool) {
	q.elt("norm_bwd_dw", c, dw, db, dout, in, mean, rstd, int32(n), int32(c), b2i(layerNorm))
}

func (q *queue) fillRows(out, b device.Ptr, total, oc int) {
	q.elt("fill_rows", total, out, b, int64(total), int32(oc))
}

func (q *queue) colSumAdd(db, d device.Ptr, n, oc int) {
	q.elt("col_sum_add", oc, db, d, int32(n), int32(oc))
}

func (q *queue) residualAdd(branch, skip device.Ptr, n int, d dropout) {
	q.elt("residual_add", n, branch, skip, int64(n), d.seed, d.site, d.thr, d.keep)
}

func (q *queue) maskMul(dst, src device.Ptr, n int, d dropout) {
	q.elt("mask_mul", n, dst, src, int64(n), d.seed, d.site, d.thr, d.keep)
}

func (q *queue) geluFwd(out, in device.Ptr, n int) { q.elt("gelu_fwd", n, out, in, int64(n)) }

func (q *queue) geluBwd(din, dout, in device.Ptr, n int) {
	q.elt("gelu_bwd", n, din, dout, in, int64(n))
}

func (q *queue) swigluFwd(out, gate, up device.Ptr, n int) {
	q.elt("swiglu_fwd", n, out, gate, up, int64(n))
}

func (q *queue) swigluBwd(dgate, dup, dout, gate, up device.Ptr, n int) {
	q.elt("swiglu_bwd", n, dgate, dup, dout, gate, up, int64(n))
}

// rope rotates the q and k parts of n qkv rows of width c (nh heads): n·c/2 pairs.
func (q *queue) rope(qkv, pos, cos, sin device.Ptr, n, c, nh int, inverse bool) {
	q.elt("rope", n*c/2, qkv, pos, cos, sin, int32(n), int32(c), int32(nh), b2i(inverse))
}

// attnFwd runs attention for b rows of tq queries over tk keys each (the queries sit at
// key positions qoff…), one block of AttBQ queries per (tile, row·head).
func (q *queue) attnFwd(y, lse, qp, k, v, seg device.Ptr, b, tq, tk, qoff, nh, hd, sq, skv, sy int, d dropout) {
	q.k("attn_fwd", device.D2(device.Blocks(tq, kernels.AttBQ), b*nh), device.D1(kernels.AttBQ),
		y, lse, qp, k, v, seg, int32(tq), int32(tk), int32(qoff), int32(nh), int32(hd), int32(sq), int32(skv), int32(sy),
		d.seed, d.site, d.thr, d.keep)
}

func (q *queue) attnBwdPre(dD, dy, y device.Ptr, b, t, nh, hd, sy int) {
	q.elt("attn_bwd_pre", b*nh*t, dD, dy, y, int32(b), int32(t), int32(nh), int32(hd), int32(sy))
}

func (q *queue) attnBwdDq(dq, qp, k, v, dy, lse, dD, seg device.Ptr, b, t, nh, hd, sq, sy int, d dropout) {
	q.k("attn_bwd_dq", device.D2(device.Blocks(t, kernels.AttBQ), b*nh), device.D1(kernels.AttBQ),
		dq, qp, k, v, dy, lse, dD, seg, int32(t), int32(nh), int32(hd), int32(sq), int32(sy), d.seed, d.site, d.thr, d.keep)
}

func (q *queue) attnBwdDkv(dk, dv, qp, k, v, dy, lse, dD, seg device.Ptr, b, t, nh, hd, sq, sy int, d dropout) {
	q.k("attn_bwd_dkv", device.D2(device.Blocks(t, kernels.AttBQ), b*nh), device.D1(kernels.AttBK),
		dk, dv, qp, k, v, dy, lse, dD, seg, int32(t), int32(nh), int32(hd), int32(sq), int32(sy), d.seed, d.site, d.thr, d.keep)
}

// kvAppend copies the keys and values of n qkv rows (width c) into a cache at rows pos0….
func (q *queue) kvAppend(kc, vc, qkv device.Ptr, n, c, pos0 int) {
	q.elt("kv_append", n*c, kc, vc, qkv, int32(n), int32(c), int32(pos0))
}

func (q *queue) xent(logits, targets, weights, rowLoss, correct device.Ptr, n, v int, scale float64, grad bool) {
	q.rows("xent", n, logits, targets, weights, rowLoss, correct, int32(n), int32(v), scale, b2i(grad))
}

// adamw applies one AdamW step to n elements (a run of tensors sharing decay).
func (q *queue) adamw(p, g, m, v device.Ptr, n int, c adamConsts) {
	q.elt("adamw", n, p, g, m, v, int64(n), c.gscale, c.b1, c.c1, c.b2, c.c2, c.bc2Sqrt, c.eps, c.decay, c.stepSize)
}

// adamConsts are the coefficients of one adamw launch.
type adamConsts struct {
	gscale, b1, c1, b2, c2, bc2Sqrt, eps, decay, stepSize float32
}

// sumsq writes SumsqGrid fixed-order partial sums of squares of g's n elements.
func (q *queue) sumsq(partial, g device.Ptr, n int) {
	q.k("sumsq", device.D1(kernels.SumsqGrid), device.D1(256), partial, g, int64(n))
}

func b2i(b bool) int32 {
	if b {
		return 1
	}
	return 0
}

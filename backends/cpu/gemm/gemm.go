// Package gemm multiplies float32 matrices (BLAS sgemm semantics, row-major storage) for the
// pure-Go CPU backend.
//
// The fast path follows the GotoBLAS/BLIS scheme: op(B) is packed into kc×nc blocks of
// nr-wide column panels, op(A) into mc×kc blocks of mr-high row panels, and an assembly
// micro-kernel (AVX-512 14×32 or AVX2 6×16, picked at start-up; a pure-Go 4×4 kernel
// otherwise) multiplies one mr×kc panel by one kc×nr panel with the whole tile of C in
// registers. Work is split into disjoint blocks of C, one per worker goroutine, so workers
// share nothing but the read-only inputs.
package gemm

import (
	"fmt"
	"runtime"
)

// Blocking. kc bounds a B micro-panel (kc·nr floats) so it stays in L1 while the A block
// streams past it; mc·kc floats of packed A stay in L2; kc·nc floats of packed B stay in L3.
const (
	blockK = 256
	blockM = 448 // rounded down to a multiple of the kernel's mr
	blockN = 2048

	// parallelMinMACs: below this many multiply-adds the whole product runs on the calling
	// goroutine; waking a worker costs a few microseconds.
	parallelMinMACs = 1 << 18
)

// Engine multiplies float32 matrices on a fixed number of worker goroutines. Not safe for
// concurrent use; it owns its packing buffers so steady-state calls do not allocate.
type Engine struct {
	kern    kernel
	threads int
	local   *workspace    // used by the calling goroutine
	jobs    []chan job    // one per extra worker goroutine
	done    chan struct{} // each worker signals once per job
	cleanup runtime.Cleanup
}

// job is one worker's share of a product: the block rows [m0,m1) × columns [n0,n1) of C.
type job struct {
	transA, transB bool
	m0, m1, n0, n1 int
	k              int
	alpha, beta    float32
	a              []float32
	lda            int
	b              []float32
	ldb            int
	c              []float32
	ldc            int
}

// workspace holds one worker's packing buffers.
type workspace struct {
	kern  kernel
	aPack []float32
	bPack []float32
	tile  []float32 // mr×nr scratch for edge tiles
}

// New returns an Engine using threads workers; threads <= 0 means runtime.GOMAXPROCS(0).
func New(threads int) *Engine { return newEngine(threads, bestKernel) }

func newEngine(threads int, kern kernel) *Engine {
	if threads <= 0 {
		threads = runtime.GOMAXPROCS(0)
	}
	e := &Engine{
		kern:    kern,
		threads: threads,
		local:   newWorkspace(kern),
		done:    make(chan struct{}, threads),
	}
	for t := 1; t < threads; t++ {
		ch := make(chan job)
		e.jobs = append(e.jobs, ch)
		go worker(ch, e.done, newWorkspace(kern))
	}
	// Workers reference only their channels, so an unreachable Engine can stop them.
	e.cleanup = runtime.AddCleanup(e, stopWorkers, e.jobs)
	return e
}

// Close stops the worker goroutines. The Engine must not be used afterwards.
func (e *Engine) Close() {
	e.cleanup.Stop()
	stopWorkers(e.jobs)
	e.jobs = nil
	e.threads = 1
}

func stopWorkers(jobs []chan job) {
	for _, ch := range jobs {
		close(ch)
	}
}

func worker(jobs <-chan job, done chan<- struct{}, ws *workspace) {
	for j := range jobs {
		ws.run(&j)
		done <- struct{}{}
	}
}

func newWorkspace(kern kernel) *workspace {
	return &workspace{kern: kern, tile: make([]float32, kern.mr*kern.nr)}
}

// Threads is the number of goroutines (the caller included) a large product is split over.
func (e *Engine) Threads() int { return e.threads }

// Kernel names the micro-kernel in use (for logs and benchmarks).
func (e *Engine) Kernel() string { return e.kern.name }

// Sgemm computes C = alpha·op(A)·op(B) + beta·C with row-major storage; op(A) is m×k, op(B) k×n,
// C m×n; lda/ldb/ldc are row strides of the stored matrices; transA/transB mean the stored
// matrix is the transpose. beta == 0 means C is overwritten (NaNs in C do not propagate).
func (e *Engine) Sgemm(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int,
	b []float32, ldb int, beta float32, c []float32, ldc int) {
	checkArgs(transA, transB, m, n, k, a, lda, b, ldb, c, ldc)
	if m == 0 || n == 0 {
		return
	}
	if k == 0 || alpha == 0 {
		scaleC(m, n, beta, c, ldc)
		return
	}
	j := job{transA: transA, transB: transB, m0: 0, m1: m, n0: 0, n1: n, k: k,
		alpha: alpha, beta: beta, a: a, lda: lda, b: b, ldb: ldb, c: c, ldc: ldc}

	threads := e.threads
	if m*n*k < parallelMinMACs {
		threads = 1
	}
	mr, nr := e.kern.mr, e.kern.nr
	mTiles, nTiles := ceilDiv(m, mr), ceilDiv(n, nr)
	// Split the dimension whose split duplicates less packing: splitting n makes every
	// worker pack all of A (m·k), splitting m makes every worker pack all of B (k·n).
	splitN := (n >= m && nTiles >= threads) || mTiles < threads
	if splitN {
		threads = min(threads, nTiles)
	} else {
		threads = min(threads, mTiles)
	}
	if threads <= 1 {
		e.local.run(&j)
		return
	}
	sent := 0
	for t := threads - 1; t >= 0; t-- {
		part := j
		if splitN {
			per := ceilDiv(nTiles, threads) * nr
			part.n0, part.n1 = t*per, min((t+1)*per, n)
		} else {
			per := ceilDiv(mTiles, threads) * mr
			part.m0, part.m1 = t*per, min((t+1)*per, m)
		}
		if part.m0 >= part.m1 || part.n0 >= part.n1 {
			continue
		}
		if t == 0 {
			e.local.run(&part)
		} else {
			e.jobs[t-1] <- part
			sent++
		}
	}
	for ; sent > 0; sent-- {
		<-e.done
	}
}

// run computes one job's block of C serially.
func (w *workspace) run(j *job) {
	mr, nr := w.kern.mr, w.kern.nr
	mcMax := max(mr, blockM/mr*mr)
	ncMax := min(blockN, roundUp(j.n1-j.n0, nr))
	kcMax := min(blockK, j.k)
	w.aPack = grow(w.aPack, roundUp(min(mcMax, j.m1-j.m0), mr)*kcMax)
	w.bPack = grow(w.bPack, ncMax*kcMax)

	for jc := j.n0; jc < j.n1; jc += blockN {
		nc := min(blockN, j.n1-jc)
		for pc := 0; pc < j.k; pc += blockK {
			kc := min(blockK, j.k-pc)
			beta := j.beta
			if pc > 0 {
				beta = 1 // later k blocks accumulate onto the first
			}
			packB(&w.kern, w.bPack, j.transB, j.b, j.ldb, pc, kc, jc, nc)
			for ic := j.m0; ic < j.m1; ic += mcMax {
				mc := min(mcMax, j.m1-ic)
				packA(&w.kern, w.aPack, j.transA, j.a, j.lda, ic, mc, pc, kc)
				w.macroKernel(mc, nc, kc, j.alpha, beta, j.c[ic*j.ldc+jc:], j.ldc)
			}
		}
	}
}

// macroKernel multiplies the packed mc×kc block of A by the packed kc×nc block of B into
// the mc×nc block of C starting at c[0]. Tiles that stick out of C go through w.tile.
func (w *workspace) macroKernel(mc, nc, kc int, alpha, beta float32, c []float32, ldc int) {
	mr, nr, fn := w.kern.mr, w.kern.nr, w.kern.fn
	for jr := 0; jr < nc; jr += nr {
		cols := min(nr, nc-jr)
		bp := &w.bPack[jr*kc]
		for ir := 0; ir < mc; ir += mr {
			rows := min(mr, mc-ir)
			ap := &w.aPack[ir*kc]
			if rows == mr && cols == nr {
				_ = c[(ir+mr-1)*ldc+jr+nr-1] // the kernel writes up to here
				fn(kc, ap, bp, &c[ir*ldc+jr], ldc, alpha, beta)
				continue
			}
			fn(kc, ap, bp, &w.tile[0], nr, 1, 0)
			for i := 0; i < rows; i++ {
				dst := c[(ir+i)*ldc+jr : (ir+i)*ldc+jr+cols]
				src := w.tile[i*nr : i*nr+cols]
				if beta == 0 {
					for x, v := range src {
						dst[x] = alpha * v
					}
				} else {
					for x, v := range src {
						dst[x] = alpha*v + beta*dst[x]
					}
				}
			}
		}
	}
}

// packA copies op(A)[i0:i0+mc, p0:p0+kc] into ceil(mc/mr) panels of kc×mr values
// (panel[p*mr+i]), zero-padding the rows past mc.
func packA(k *kernel, dst []float32, trans bool, a []float32, lda, i0, mc, p0, kc int) {
	mr := k.mr
	for ip := 0; ip < mc; ip += mr {
		rows := min(mr, mc-ip)
		panel := dst[ip*kc : ip*kc+mr*kc]
		if trans { // stored k×m: each p is a contiguous run of rows
			k.copyPanel(panel, a[p0*lda+i0+ip:], lda, kc, mr, rows)
		} else {
			k.gatherPanel(panel, a[(i0+ip)*lda+p0:], lda, kc, mr, rows)
		}
	}
}

// packB copies op(B)[p0:p0+kc, j0:j0+nc] into ceil(nc/nr) panels of kc×nr values
// (panel[p*nr+j]), zero-padding the columns past nc.
func packB(k *kernel, dst []float32, trans bool, b []float32, ldb, p0, kc, j0, nc int) {
	nr := k.nr
	for jp := 0; jp < nc; jp += nr {
		cols := min(nr, nc-jp)
		panel := dst[jp*kc : jp*kc+nr*kc]
		if trans { // stored n×k: column j of the panel is row j0+jp+j of B
			k.gatherPanel(panel, b[(j0+jp)*ldb+p0:], ldb, kc, nr, cols)
		} else {
			k.copyPanel(panel, b[p0*ldb+j0+jp:], ldb, kc, nr, cols)
		}
	}
}

// scaleC sets C = beta·C (C = 0 when beta == 0, whatever C held).
func scaleC(m, n int, beta float32, c []float32, ldc int) {
	for i := 0; i < m; i++ {
		row := c[i*ldc : i*ldc+n]
		if beta == 0 {
			clear(row)
			continue
		}
		if beta != 1 {
			for j := range row {
				row[j] *= beta
			}
		}
	}
}

// checkArgs panics with a descriptive message when dimensions and slices do not fit, so the
// kernels (which index through raw pointers) never run outside the slices.
func checkArgs(transA, transB bool, m, n, k int, a []float32, lda int, b []float32, ldb int,
	c []float32, ldc int) {
	if m < 0 || n < 0 || k < 0 {
		panic(fmt.Sprintf("gemm: negative dimension m=%d n=%d k=%d", m, n, k))
	}
	check := func(name string, rows, cols, ld, have int) {
		if ld < max(cols, 1) {
			panic(fmt.Sprintf("gemm: %s stride %d < row width %d", name, ld, cols))
		}
		if rows > 0 && cols > 0 && have < (rows-1)*ld+cols {
			panic(fmt.Sprintf("gemm: %s has %d elements, need %d (%d×%d, stride %d)",
				name, have, (rows-1)*ld+cols, rows, cols, ld))
		}
	}
	if transA {
		check("A", k, m, lda, len(a))
	} else {
		check("A", m, k, lda, len(a))
	}
	if transB {
		check("B", n, k, ldb, len(b))
	} else {
		check("B", k, n, ldb, len(b))
	}
	check("C", m, n, ldc, len(c))
}

func grow(buf []float32, n int) []float32 {
	if cap(buf) < n {
		return make([]float32, n)
	}
	return buf[:n]
}

func ceilDiv(a, b int) int { return (a + b - 1) / b }
func roundUp(a, b int) int { return ceilDiv(a, b) * b }

// Reference is the simple, obviously-correct triple loop the fast path is tested against.
// It accumulates each dot product in float32 in k order.
func Reference(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int,
	b []float32, ldb int, beta float32, c []float32, ldc int) {
	ReferenceOf(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
}

// ReferenceOf is Reference for either float type (float64 serves
// finite-difference tests); it accumulates in F, in k order.
func ReferenceOf[F ~float32 | ~float64](transA, transB bool, m, n, k int, alpha F, a []F, lda int,
	b []F, ldb int, beta F, c []F, ldc int) {
	for i := 0; i < m; i++ {
		for j := 0; j < n; j++ {
			var sum F
			for p := 0; p < k; p++ {
				var av, bv F
				if transA {
					av = a[p*lda+i]
				} else {
					av = a[i*lda+p]
				}
				if transB {
					bv = b[j*ldb+p]
				} else {
					bv = b[p*ldb+j]
				}
				sum += av * bv
			}
			if beta == 0 {
				c[i*ldc+j] = alpha * sum
			} else {
				c[i*ldc+j] = alpha*sum + beta*c[i*ldc+j]
			}
		}
	}
}

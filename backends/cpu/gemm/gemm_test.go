package gemm

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

// operand is a stored matrix plus the stride it is stored with; cells outside the logical
// width are NaN so any read past the view poisons the result.
type operand struct {
	data   []float32
	stride int
}

func newOperand(rng *rand.Rand, rows, cols, pad int) operand {
	stride := cols + pad
	if stride == 0 {
		stride = 1
	}
	data := make([]float32, max(rows*stride, 0))
	for i := range data {
		if i%stride < cols {
			data[i] = rng.Float32()*2 - 1
		} else {
			data[i] = float32(math.NaN())
		}
	}
	return operand{data, stride}
}

// case64 computes alpha·op(A)·op(B) + beta·C in float64 and a per-element error bound:
// γ·(|alpha|·Σ|a·b| + |beta·c|) with γ = (k+2)·2⁻²⁴, the classic float32 dot-product bound.
func case64(transA, transB bool, m, n, k int, alpha float32, a operand, b operand, beta float32,
	c operand) (want, bound []float64) {
	want = make([]float64, m*n)
	bound = make([]float64, m*n)
	gamma := float64(k+2) * math.Pow(2, -24)
	for i := 0; i < m; i++ {
		for j := 0; j < n; j++ {
			var sum, abs float64
			for p := 0; p < k; p++ {
				var av, bv float64
				if transA {
					av = float64(a.data[p*a.stride+i])
				} else {
					av = float64(a.data[i*a.stride+p])
				}
				if transB {
					bv = float64(b.data[j*b.stride+p])
				} else {
					bv = float64(b.data[p*b.stride+j])
				}
				sum += av * bv
				abs += math.Abs(av * bv)
			}
			v := float64(alpha) * sum
			e := math.Abs(float64(alpha)) * abs
			if beta != 0 {
				cv := float64(c.data[i*c.stride+j])
				v += float64(beta) * cv
				e += math.Abs(float64(beta) * cv)
			}
			want[i*n+j] = v
			bound[i*n+j] = gamma*e + 1e-30
		}
	}
	return want, bound
}

type shape struct{ m, n, k int }

// checkProduct runs one Sgemm through engine e and checks it against float64 truth and
// against Reference, and that C's padding is untouched.
func checkProduct(t *testing.T, e *Engine, rng *rand.Rand, transA, transB bool, s shape,
	pad int, alpha, beta float32) {
	t.Helper()
	m, n, k := s.m, s.n, s.k
	var a, b operand
	if transA {
		a = newOperand(rng, k, m, pad)
	} else {
		a = newOperand(rng, m, k, pad)
	}
	if transB {
		b = newOperand(rng, n, k, pad+1)
	} else {
		b = newOperand(rng, k, n, pad+1)
	}
	c := newOperand(rng, m, n, pad+2)
	const sentinel = 12345.5
	for i := range c.data {
		if i%c.stride >= n {
			c.data[i] = sentinel
		} else if beta == 0 {
			c.data[i] = float32(math.NaN()) // must be overwritten, not scaled
		}
	}
	want, bound := case64(transA, transB, m, n, k, alpha, a, b, beta, c)
	ref := append([]float32(nil), c.data...)
	Reference(transA, transB, m, n, k, alpha, a.data, a.stride, b.data, b.stride, beta, ref, c.stride)
	e.Sgemm(transA, transB, m, n, k, alpha, a.data, a.stride, b.data, b.stride, beta, c.data, c.stride)

	name := fmt.Sprintf("%s T%v%v m=%d n=%d k=%d pad=%d alpha=%v beta=%v",
		e.Kernel(), transA, transB, m, n, k, pad, alpha, beta)
	bad := 0
	for i := 0; i < m && bad < 5; i++ {
		for j := 0; j < c.stride && bad < 5; j++ {
			got := c.data[i*c.stride+j]
			if j >= n {
				if got != sentinel {
					t.Errorf("%s: C padding [%d,%d] changed to %v", name, i, j, got)
					bad++
				}
				continue
			}
			w, tol := want[i*n+j], bound[i*n+j]
			if d := math.Abs(float64(got) - w); !(d <= tol) {
				t.Errorf("%s: C[%d,%d] = %v, float64 truth %v (err %.3g > bound %.3g)", name, i, j, got, w, d, tol)
				bad++
			}
			if d := math.Abs(float64(got) - float64(ref[i*c.stride+j])); !(d <= 2*tol) {
				t.Errorf("%s: C[%d,%d] = %v, Reference %v", name, i, j, got, ref[i*c.stride+j])
				bad++
			}
		}
	}
}

var testShapes = []shape{
	{1, 1, 1}, {1, 1, 7}, {1, 37, 5}, {29, 1, 5}, {2, 3, 1},
	{14, 32, 16}, {6, 16, 3}, {4, 4, 4}, {15, 33, 17}, {13, 31, 9},
	{28, 64, 256}, {29, 65, 257}, {57, 100, 33}, {100, 57, 300},
	{64, 64, 32}, {128, 96, 64}, {200, 70, 130},
}

func TestAllKernelsAllTransposes(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, kern := range availableKernels() {
		for _, threads := range []int{1, 2, 3} {
			e := newEngine(threads, kern)
			for _, s := range testShapes {
				for _, tr := range [][2]bool{{false, false}, {false, true}, {true, false}, {true, true}} {
					pad := rng.IntN(3)
					checkProduct(t, e, rng, tr[0], tr[1], s, pad, 1, 0)
					checkProduct(t, e, rng, tr[0], tr[1], s, pad, -0.75, 1)
					checkProduct(t, e, rng, tr[0], tr[1], s, pad, 2, -0.5)
				}
			}
			e.Close()
		}
	}
}

// TestBlockEdges uses shapes that cross the k, m and n cache blocks and split unevenly
// across workers, so every loop's remainder path runs.
func TestBlockEdges(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	shapes := []shape{
		{blockM + 5, 3*32 + 7, blockK + 1}, // m crosses a block; n split
		{3, blockN + 45, 2*blockK + 3},     // n crosses a block, large k, tiny m
		{20, 40, 3000},                     // large k: many k blocks accumulate
		{blockM*2 + 13, 19, 70},            // tall-skinny: split m
	}
	for _, kern := range availableKernels() {
		e := newEngine(2, kern)
		for _, s := range shapes {
			for _, tr := range [][2]bool{{false, false}, {false, true}, {true, false}, {true, true}} {
				checkProduct(t, e, rng, tr[0], tr[1], s, 1, 1.5, 0)
				checkProduct(t, e, rng, tr[0], tr[1], s, 0, 1, 1)
			}
		}
		e.Close()
	}
}

// TestKnownProduct checks an exactly representable product, written out by hand.
func TestKnownProduct(t *testing.T) {
	a := []float32{1, 2, 3, 4, 5, 6}    // 2×3
	b := []float32{7, 8, 9, 10, 11, 12} // 3×2
	want := []float32{58, 64, 139, 154} // a·b
	for _, kern := range availableKernels() {
		e := newEngine(1, kern)
		c := []float32{float32(math.NaN()), 1, 2, 3}
		e.Sgemm(false, false, 2, 2, 3, 1, a, 3, b, 2, 0, c, 2)
		for i := range want {
			if c[i] != want[i] {
				t.Fatalf("%s: a·b = %v, want %v", kern.name, c, want)
			}
		}
		// (aᵀ stored as a 3×2, bᵀ stored as 2×3): C = 2·op(A)·op(B) + 1·C doubles and adds.
		at := []float32{1, 4, 2, 5, 3, 6}
		bt := []float32{7, 9, 11, 8, 10, 12}
		e.Sgemm(true, true, 2, 2, 3, 2, at, 2, bt, 3, 1, c, 2)
		for i := range want {
			if c[i] != 3*want[i] {
				t.Fatalf("%s: 2·aᵀᵀ·bᵀᵀ + c = %v, want 3×%v", kern.name, c, want)
			}
		}
	}
}

func TestDegenerate(t *testing.T) {
	e := New(2)
	defer e.Close()
	nan := float32(math.NaN())
	// k == 0: C = beta·C; beta == 0 clears NaNs.
	c := []float32{nan, 2, 3, 4}
	e.Sgemm(false, false, 2, 2, 0, 1, nil, 1, nil, 2, 0, c, 2)
	for _, v := range c {
		if v != 0 {
			t.Fatalf("k=0, beta=0: C = %v, want zeros", c)
		}
	}
	c = []float32{1, 2, 3, 4}
	e.Sgemm(false, false, 2, 2, 0, 1, nil, 1, nil, 2, 0.5, c, 2)
	if c[0] != 0.5 || c[3] != 2 {
		t.Fatalf("k=0, beta=0.5: C = %v", c)
	}
	// alpha == 0: A and B are not used (NaNs there must not leak in).
	a := []float32{nan, nan}
	c = []float32{1, 2}
	e.Sgemm(false, false, 1, 2, 1, 0, a, 1, a, 2, 2, c, 2)
	if c[0] != 2 || c[1] != 4 {
		t.Fatalf("alpha=0: C = %v, want [2 4]", c)
	}
	// m == 0 or n == 0: nothing happens, nil slices allowed.
	e.Sgemm(true, true, 0, 5, 3, 1, nil, 1, make([]float32, 15), 3, 0, nil, 5)
	e.Sgemm(false, false, 5, 0, 3, 1, make([]float32, 15), 3, nil, 1, 0, nil, 1)
}

func TestBadArgumentsPanic(t *testing.T) {
	e := New(1)
	defer e.Close()
	cases := map[string]func(){
		"short A": func() {
			e.Sgemm(false, false, 2, 2, 2, 1, make([]float32, 3), 2, make([]float32, 4), 2, 0, make([]float32, 4), 2)
		},
		"short C": func() {
			e.Sgemm(false, false, 2, 2, 2, 1, make([]float32, 4), 2, make([]float32, 4), 2, 0, make([]float32, 3), 2)
		},
		"small ldb": func() {
			e.Sgemm(false, true, 2, 3, 2, 1, make([]float32, 4), 2, make([]float32, 6), 1, 0, make([]float32, 6), 3)
		},
		"negative dim": func() { e.Sgemm(false, false, -1, 2, 2, 1, nil, 2, nil, 2, 0, nil, 2) },
	}
	for name, f := range cases {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s: no panic", name)
				}
			}()
			f()
		}()
	}
}

// TestMicroKernels drives each kernel directly on random packed panels, both store paths.
func TestMicroKernels(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for _, kern := range availableKernels() {
		for _, k := range []int{1, 2, 3, 4, 5, 8, 13, 64} {
			for _, beta := range []float32{0, 1, -0.25} {
				mr, nr, ldc := kern.mr, kern.nr, kern.nr+3
				a := make([]float32, mr*k)
				b := make([]float32, nr*k)
				for i := range a {
					a[i] = rng.Float32() - 0.5
				}
				for i := range b {
					b[i] = rng.Float32() - 0.5
				}
				c := make([]float32, mr*ldc)
				for i := range c {
					c[i] = rng.Float32()
				}
				orig := append([]float32(nil), c...)
				kern.fn(k, &a[0], &b[0], &c[0], ldc, 1.5, beta)
				for i := 0; i < mr; i++ {
					for j := 0; j < ldc; j++ {
						got := c[i*ldc+j]
						if j >= nr {
							if got != orig[i*ldc+j] {
								t.Fatalf("%s k=%d: wrote outside tile at [%d,%d]", kern.name, k, i, j)
							}
							continue
						}
						var sum float64
						for p := 0; p < k; p++ {
							sum += float64(a[p*mr+i]) * float64(b[p*nr+j])
						}
						want := 1.5 * sum
						if beta != 0 {
							want += float64(beta) * float64(orig[i*ldc+j])
						}
						if math.Abs(float64(got)-want) > 1e-5*float64(k+2) {
							t.Fatalf("%s k=%d beta=%v: C[%d,%d] = %v, want %v", kern.name, k, beta, i, j, got, want)
						}
					}
				}
			}
		}
	}
}

func TestSteadyStateDoesNotAllocate(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	e := New(2)
	defer e.Close()
	m, n, k := 130, 300, 270
	a := newOperand(rng, m, k, 0)
	b := newOperand(rng, n, k, 0)
	c := newOperand(rng, m, n, 0)
	run := func() {
		e.Sgemm(false, true, m, n, k, 1, a.data, k, b.data, k, 0, c.data, n)
	}
	run()
	if allocs := testing.AllocsPerRun(20, run); allocs != 0 {
		t.Fatalf("steady-state Sgemm allocates %v times per call", allocs)
	}
}

func TestKernelSelection(t *testing.T) {
	ks := availableKernels()
	if ks[len(ks)-1].name != goKernel.name {
		t.Fatalf("portable kernel missing from %v", ks)
	}
	if New(0).Threads() < 1 {
		t.Fatal("New(0) has no threads")
	}
	t.Logf("kernels available: %d, default %s", len(ks), New(1).Kernel())
}

// TestPanelPackers checks every kernel's packers element by element against the definition.
func TestPanelPackers(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	for _, kern := range availableKernels() {
		for _, panelW := range []int{kern.mr, kern.nr} {
			for w := 1; w <= panelW; w++ {
				for _, kc := range []int{1, 15, 16, 17, 32, 45} {
					ld := max(panelW, kc) + rng.IntN(50) // gather reads rows of kc values
					src := make([]float32, panelW*ld+ld*kc)
					for i := range src {
						src[i] = float32(i)
					}
					for _, gather := range []bool{false, true} {
						dst := make([]float32, kc*panelW)
						for i := range dst {
							dst[i] = -1
						}
						if gather {
							kern.gatherPanel(dst, src, ld, kc, panelW, w)
						} else {
							kern.copyPanel(dst, src, ld, kc, panelW, w)
						}
						for p := 0; p < kc; p++ {
							for i := 0; i < panelW; i++ {
								var want float32
								if i < w && gather {
									want = src[i*ld+p]
								} else if i < w {
									want = src[p*ld+i]
								}
								if got := dst[p*panelW+i]; got != want {
									t.Fatalf("%s gather=%v panelW=%d w=%d kc=%d ld=%d: [%d,%d] = %v, want %v",
										kern.name, gather, panelW, w, kc, ld, p, i, got, want)
								}
							}
						}
					}
				}
			}
		}
	}
}

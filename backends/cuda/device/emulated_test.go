package device

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/mypt/mypt/backends/cuda/kernels"
)

// The emulated device's own tests: its products against an independent reference, the
// launch limits it holds kernels to, the CUDA rules of its warp collectives and barriers,
// its fault reporter and its schedules. Kernels other than kernels.cu's come from
// emuTestSource, compiled by the same emulator.

// emuTestSource holds the kernels these tests run besides kernels.cu's: the emulated
// device compiles any source whose kernels are declared `extern "C" __global__ void`.
const emuTestSource = `
// Lane values v = 1000·warp + 7·lane + 3 shuffled within segments of width lanes:
// out[k·n + t] for k = idx (source lane srcBase + t%13 − 6, negative and ≥ width
// included), up, down, xor; outd[t] an 8-byte xor shuffle.
extern "C" __global__ void shuffles(int* out, double* outd, int width, int srcBase, int delta,
                                    int laneMask) {
  int t = threadIdx.x, n = blockDim.x;
  int v = 1000 * (t / 32) + 7 * (t % 32) + 3;
  out[0 * n + t] = __shfl_sync(0xffffffffu, v, srcBase + t % 13 - 6, width);
  out[1 * n + t] = __shfl_up_sync(0xffffffffu, v, (unsigned)delta, width);
  out[2 * n + t] = __shfl_down_sync(0xffffffffu, v, (unsigned)delta, width);
  out[3 * n + t] = __shfl_xor_sync(0xffffffffu, v, laneMask, width);
  outd[t] = __shfl_xor_sync(0xffffffffu, 0.25 * v + 1e-12 * t, laneMask, width);
}

// Votes and active masks; out[k·n + t].
extern "C" __global__ void votes(unsigned* out) {
  int t = threadIdx.x, n = blockDim.x, lane = t % 32;
  out[0 * n + t] = __ballot_sync(0xffffffffu, (t * 5) % 7 < 3);
  out[1 * n + t] = __any_sync(0xffffffffu, t == 40);
  out[2 * n + t] = __all_sync(0xffffffffu, lane != 5);
  out[3 * n + t] = __activemask();
  unsigned m = 0;
  if (lane % 3 == 0) {
    m = __activemask();
  } else if (lane % 3 == 1) {
    m = __activemask();
  }
  out[4 * n + t] = m;
  unsigned sub = 0;
  if (lane < 20) sub = __ballot_sync(0x000fffffu, lane & 1);
  out[5 * n + t] = sub;
  // lanes that skip a collective reach the next one late: not an error
  unsigned late = 0;
  if (lane & 1) late = __activemask();
  out[6 * n + t] = late | __ballot_sync(0xffffffffu, 1) << 1;
}

// Lanes exchange values through shared memory with (sync) or without a __syncwarp().
extern "C" __global__ void warp_exchange(int* out, int base, int sync) {
  __shared__ int s[64];
  int t = threadIdx.x;
  s[t] = base + t;
  if (sync) __syncwarp();
  out[t] = s[t ^ 1];
}

// The first 16 threads exit before the barrier; the others read a neighbour's value
// written before it.
extern "C" __global__ void early_exit(int* out, int base) {
  __shared__ int s[64];
  int t = threadIdx.x;
  if (t < 16) return;
  s[t] = base + blockIdx.x + t;
  __syncthreads();
  out[blockIdx.x * blockDim.x + t] = s[16 + (t - 16 + 1) % (blockDim.x - 16)];
}

// Odd and even threads wait at two different barriers.
extern "C" __global__ void divergent_barrier(int* out) {
  int t = threadIdx.x;
  if (t % 2) {
    __syncthreads();  // barrier A
  } else {
    __syncthreads();  // barrier B
  }
  out[t] = t;
}

// Lanes 0–15 wait at a full-warp shuffle that lanes 16–31, at the barrier, never reach.
extern "C" __global__ void collective_vs_barrier(int* out) {
  int t = threadIdx.x;
  int v = t;
  if (t < 16) v = __shfl_sync(0xffffffffu, v, 0);  // the collective
  __syncthreads();
  out[t] = v;
}

// Half a warp waits at a shuffle, the other half at a ballot, both over the whole warp.
extern "C" __global__ void crossed_collectives(int* out) {
  int t = threadIdx.x, v = t;
  if (t < 16) {
    v = __shfl_sync(0xffffffffu, v, 0);  // crossed A
  } else {
    v = __ballot_sync(0xffffffffu, 1);  // crossed B
  }
  out[t] = v;
}

// Lane 1 calls a shuffle whose mask names lane 0 only.
extern "C" __global__ void mask_without_caller(int* out) {
  int t = threadIdx.x;
  out[t] = __shfl_sync(t == 1 ? 0x1u : 0xffffffffu, t, 0);  // the bad mask
}

// Each thread writes its value to shared memory and reads its predecessor's: correct
// only with the barrier (sync).
extern "C" __global__ void shift(int* out, int base, int sync) {
  __shared__ int s[256];
  int t = threadIdx.x;
  s[t] = base + t;
  if (sync) __syncthreads();
  out[t] = t > 0 ? s[t - 1] : base - 1;
}

// Dynamic shared memory, per block: block b reverses its own values.
extern "C" __global__ void dyn_shared(float* out, int n) {
  DYNAMIC_SHARED(float, smem);
  int t = threadIdx.x;
  for (int i = t; i < n; i += blockDim.x) smem[i] = blockIdx.x * 1000 + i;
  __syncthreads();
  if (t < n) out[blockIdx.x * n + t] = smem[n - 1 - t];
}
`

// emuCache is where the tests' emulator libraries are cached (by source hash), as the
// backend caches them.
func emuCache(t testing.TB) string {
	if d, err := os.UserCacheDir(); err == nil {
		return filepath.Join(d, "mypt", "cuda")
	}
	return t.TempDir()
}

// newEmu builds an emulated device for src (kernels.cu when empty), or skips the test
// when there is no host C++ compiler.
func newEmu(t testing.TB, src string, sched Schedule) *Emulated {
	t.Helper()
	if _, err := EmulatorCompiler(""); err != nil {
		t.Fatalf("no emulated device (make test needs clang-19 or g++): %v", err)
	}
	e, err := NewEmulated(EmulatedOptions{Source: src, Schedule: sched, CacheDir: emuCache(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close() })
	return e
}

// upload allocates device memory holding v (float32, float64, int32 or uint32 values).
func upload[T float32 | float64 | int32 | uint32](t testing.TB, d Device, v []T) Ptr {
	t.Helper()
	size := int(unsafe.Sizeof(v[0]))
	p, err := d.Alloc(size * len(v))
	if err != nil {
		t.Fatal(err)
	}
	if err := d.HtoD(p, unsafe.Slice((*byte)(unsafe.Pointer(&v[0])), size*len(v))); err != nil {
		t.Fatal(err)
	}
	return p
}

// download reads n values of type T at p.
func download[T float32 | float64 | int32 | uint32](t testing.TB, d Device, p Ptr, n int) []T {
	t.Helper()
	v := make([]T, n)
	if err := d.DtoH(unsafe.Slice((*byte)(unsafe.Pointer(&v[0])), int(unsafe.Sizeof(v[0]))*n), p); err != nil {
		t.Fatal(err)
	}
	return v
}

func launch(t testing.TB, d Device, name string, grid, block Dim3, args ...any) {
	t.Helper()
	if err := d.Launch(name, grid, block, args...); err != nil {
		t.Fatal(err)
	}
}

// ---- products

// bf16RNE rounds f to the nearest bfloat16 (ties to the even one), by comparing the two
// neighbouring bf16 values in float64: independent of the bit trick cast_bf16 uses.
func bf16RNE(f float32) float32 {
	if f != f {
		return f
	}
	bits := math.Float32bits(f)
	lo := math.Float32frombits(bits &^ 0xffff)
	hi := math.Float32frombits(bits&^0xffff + 0x10000)
	dlo, dhi := math.Abs(float64(f)-float64(lo)), math.Abs(float64(hi)-float64(f))
	switch {
	case dlo < dhi:
		return lo
	case dhi < dlo:
		return hi
	case bits>>16&1 == 0:
		return lo
	}
	return hi
}

// gemmCase is one product: the row-major operands as stored (padding past each row's
// used columns NaN) and C before the product.
type gemmCase struct {
	g       Gemm
	a, b, c []float32
}

// newGemmCase fills A, B and C for g (shape, transposes, leading dimensions) with values
// in [-1, 1]; with ties, a quarter of A and B lie exactly halfway between two bf16 values.
func newGemmCase(g Gemm, seed uint64, ties bool) gemmCase {
	rng := rand.New(rand.NewPCG(seed, 7))
	fill := func(rows, cols, ld int) []float32 {
		v := make([]float32, rows*ld)
		for i := range v {
			v[i] = float32(math.NaN())
			if i%ld >= cols {
				continue
			}
			v[i] = float32(rng.Float64()*2 - 1)
			if ties && rng.IntN(4) == 0 {
				v[i] = math.Float32frombits(math.Float32bits(v[i])&^0xffff | 0x8000)
			}
		}
		return v
	}
	c := gemmCase{g: g}
	c.a = fill(pick(g.TransA, g.K, g.M), pick(g.TransA, g.M, g.K), g.LDA)
	c.b = fill(pick(g.TransB, g.N, g.K), pick(g.TransB, g.K, g.N), g.LDB)
	c.c = fill(g.M, g.N, g.LDC)
	if g.Beta == 0 {
		for i := range c.c {
			c.c[i] = float32(math.NaN()) // never read when beta is 0
		}
	}
	return c
}

// want is the product in float64 from the row-major definition, with bf16 inputs
// rounded to nearest even, and for each element the error float32 summation may make.
func (c gemmCase) want(bf16 bool) (want, tol []float64) {
	g := c.g
	in := func(v float32) float64 {
		if bf16 {
			v = bf16RNE(v)
		}
		return float64(v)
	}
	at := func(m []float32, trans bool, ld, i, j int) float64 { // op(M)[i][j]
		if trans {
			return in(m[j*ld+i])
		}
		return in(m[i*ld+j])
	}
	const u = 1.0 / (1 << 24)
	want, tol = make([]float64, g.M*g.N), make([]float64, g.M*g.N)
	for i := range g.M {
		for j := range g.N {
			var s, abs float64
			for p := range g.K {
				x := at(c.a, g.TransA, g.LDA, i, p) * at(c.b, g.TransB, g.LDB, p, j)
				s += x
				abs += math.Abs(x)
			}
			w := float64(g.Alpha) * s
			bound := math.Abs(float64(g.Alpha)) * abs
			if g.Beta != 0 {
				cv := float64(c.c[i*g.LDC+j])
				w += float64(g.Beta) * cv
				bound += math.Abs(float64(g.Beta) * cv)
			}
			want[i*g.N+j], tol[i*g.N+j] = w, float64(g.K+3)*u*bound*1.01
		}
	}
	return want, tol
}

// check compares C after the product (the whole ldc-strided buffer) with want: the
// m×n elements within tol, the padding columns untouched.
func (c gemmCase) check(got []float32, bf16 bool) error {
	want, tol := c.want(bf16)
	g := c.g
	var errs []error
	for i := range g.M {
		for j := range g.LDC {
			v := got[i*g.LDC+j]
			if j >= g.N {
				if math.Float32bits(v) != math.Float32bits(c.c[i*g.LDC+j]) {
					errs = append(errs, fmt.Errorf("C[%d][%d] (padding) = %v, want it untouched (%v)", i, j, v, c.c[i*g.LDC+j]))
				}
				continue
			}
			if w := want[i*g.N+j]; !(math.Abs(float64(v)-w) <= tol[i*g.N+j]) {
				errs = append(errs, fmt.Errorf("C[%d][%d] = %v, want %v ± %.2g", i, j, v, w, tol[i*g.N+j]))
			}
		}
	}
	if len(errs) > 4 {
		errs = append(errs[:4], fmt.Errorf("… %d more", len(errs)-4))
	}
	return errors.Join(errs...)
}

// run uploads the case, runs the product on e, and returns C.
func (c gemmCase) run(t testing.TB, e *Emulated) []float32 {
	t.Helper()
	g := c.g
	g.A, g.B, g.C = upload(t, e, c.a), upload(t, e, c.b), upload(t, e, c.c)
	if err := e.Gemm(g); err != nil {
		t.Fatal(err)
	}
	return download[float32](t, e, g.C, len(c.c))
}

// gemmShape is M=5, N=7, K=9 with leading dimensions past the rows' used columns.
func gemmShape(transA, transB bool, alpha, beta float32) Gemm {
	g := Gemm{TransA: transA, TransB: transB, M: 5, N: 7, K: 9, Alpha: alpha, Beta: beta}
	g.LDA = pick(transA, g.M, g.K) + 3
	g.LDB = pick(transB, g.K, g.N) + 2
	g.LDC = g.N + 4
	return g
}

// The emulated device's Gemm (ltMatmul's cuBLASLt call interpreted by ReferenceLt, bf16
// operands cast by the cast_bf16 kernel) equals the row-major product computed here, for
// every transpose combination, leading dimensions past the rows, alpha and beta other
// than 0 and 1 (and beta 0 with NaN in C, which must not be read), in F32 and BF16 (the
// inputs a quarter of them exact bf16 ties, rounded to nearest even).
func TestEmulatedGemm(t *testing.T) {
	e := newEmu(t, "", Schedule{})
	for _, bf16 := range []bool{false, true} {
		e.SetBF16(bf16)
		for _, ab := range [][2]float32{{0.75, -0.5}, {1, 1}, {-1.25, 0}} {
			for _, transA := range []bool{false, true} {
				for _, transB := range []bool{false, true} {
					name := fmt.Sprintf("bf16=%v/alpha=%v,beta=%v/transA=%v,transB=%v", bf16, ab[0], ab[1], transA, transB)
					t.Run(name, func(t *testing.T) {
						c := newGemmCase(gemmShape(transA, transB, ab[0], ab[1]), 1, bf16)
						if err := c.check(c.run(t, e), bf16); err != nil {
							t.Error(err)
						}
					})
				}
			}
		}
	}
	e.SetBF16(false)
}

// The test reference rounds ties to even, and the check tells rounding modes apart: the
// BF16 product of tie inputs differs from the one with inputs truncated or rounded half up.
func TestEmulatedGemmRoundingVisible(t *testing.T) {
	for _, c := range []struct{ in, want float32 }{
		{1 + 1.0/256, 1},                       // halfway between 1 and 1+2⁻⁷: the even one, 1
		{1 + 3.0/256, 1 + 4.0/256},             // halfway between 1+2⁻⁷ and 1+2⁻⁶: 1+2⁻⁶
		{-(1 + 3.0/256), -(1 + 4.0/256)},       // sign-symmetric
		{1 + 1.0/256 + 1.0/65536, 1 + 2.0/256}, // past halfway: up
	} {
		if got := bf16RNE(c.in); got != c.want {
			t.Errorf("bf16RNE(%v) = %v, want %v", c.in, got, c.want)
		}
	}
	c := newGemmCase(gemmShape(false, true, 1, 0), 2, true)
	halfUp := func(f float32) float32 { return math.Float32frombits((math.Float32bits(f) + 0x8000) &^ 0xffff) }
	trunc := func(f float32) float32 { return math.Float32frombits(math.Float32bits(f) &^ 0xffff) }
	for name, round := range map[string]func(float32) float32{"half up": halfUp, "truncation": trunc} {
		rounded := func(v []float32) []float32 {
			r := make([]float32, len(v))
			for i, x := range v {
				r[i] = round(x)
			}
			return r
		}
		wrong := gemmCase{g: c.g, a: rounded(c.a), b: rounded(c.b), c: c.c}
		prod, _ := wrong.want(false) // the product of the inputs rounded the wrong way
		out := append([]float32(nil), c.c...)
		for i := range c.g.M {
			for j := range c.g.N {
				out[i*c.g.LDC+j] = float32(prod[i*c.g.N+j])
			}
		}
		if c.check(out, true) == nil {
			t.Errorf("inputs rounded by %s pass the BF16 check", name)
		}
	}
}

// A wrong mapping onto cuBLASLt is caught: the LtMatmul ltMatmul builds, with its
// operations or leading dimensions swapped, makes ReferenceLt compute something else (or
// refuse the layouts), which the same check rejects.
func TestEmulatedGemmWrongMappingCaught(t *testing.T) {
	e := newEmu(t, "", Schedule{})
	for _, sq := range []bool{true, false} {
		g := gemmShape(true, false, 0.75, -0.5)
		if sq {
			g.M, g.N, g.K = 6, 6, 6
			g.LDA, g.LDB, g.LDC = 9, 8, 10
		}
		c := newGemmCase(g, 3, false)
		for _, mut := range []struct {
			name string
			edit func(*LtMatmul)
		}{
			{"as built", func(*LtMatmul) {}},
			{"TransA and TransB swapped", func(l *LtMatmul) { l.TransA, l.TransB = l.TransB, l.TransA }},
			{"leading dimensions swapped", func(l *LtMatmul) { l.ALayout.LD, l.BLayout.LD = l.BLayout.LD, l.ALayout.LD }},
			{"operands swapped", func(l *LtMatmul) { l.A, l.B = l.B, l.A }},
		} {
			t.Run(fmt.Sprintf("square=%v/%s", sq, mut.name), func(t *testing.T) {
				g := c.g
				g.A, g.B, g.C = upload(t, e, c.a), upload(t, e, c.b), upload(t, e, c.c)
				lt := ltMatmul(g, g.A, g.B, false)
				mut.edit(&lt)
				e.mu.Lock()
				err := ReferenceLt(lt, e.bytesAt)
				e.mu.Unlock()
				if err == nil {
					err = c.check(download[float32](t, e, g.C, len(c.c)), false)
				}
				if mut.name == "as built" {
					if err != nil {
						t.Fatalf("the mapping as built: %v", err)
					}
					return
				}
				if err == nil {
					t.Fatalf("%s: the product still matches the reference", mut.name)
				}
				t.Logf("caught: %v", strings.SplitN(err.Error(), "\n", 2)[0])
			})
		}
	}
}

// ---- launch limits

// Launches outside an H100's limits, or with the wrong arguments, fail with an error that
// names the kernel and the limit; the device stays usable.
func TestEmulatedLaunchLimits(t *testing.T) {
	e := newEmu(t, "", Schedule{})
	p := upload(t, e, make([]float32, 256))
	adamw := func(n any) []any {
		return []any{p, p, p, p, n, float32(1), float32(0.9), float32(0.1), float32(0.99), float32(0.01),
			float32(1), float32(1e-8), float32(1), float32(1e-3)}
	}
	for _, c := range []struct {
		name        string
		kernel      string
		grid, block Dim3
		args        []any
		want        string
	}{
		{"1025 threads", "adamw", D1(1), D1(1025), adamw(int64(0)), "kernel adamw: bad block {X:1025 Y:1 Z:1}"},
		{"32×32×2 threads", "adamw", D1(1), Dim3{32, 32, 2}, adamw(int64(0)), "kernel adamw: bad block"},
		{"block z 65", "adamw", D1(1), Dim3{1, 1, 65}, adamw(int64(0)), "kernel adamw: block z 65 exceeds 64"},
		{"grid y 65536", "adamw", D2(1, 65536), D1(32), adamw(int64(0)), "kernel adamw: bad grid"},
		{"empty grid", "adamw", Dim3{0, 1, 1}, D1(32), adamw(int64(0)), "kernel adamw: bad grid"},
		{"int32 for long long", "adamw", D1(1), D1(32), adamw(int32(0)), "kernel adamw: argument 4 is int32, want kind l"},
		{"float64 for long long", "cast_bf16", D1(1), D1(32), []any{p, p, 1.0}, "kernel cast_bf16: argument 2 is float64, want kind l"},
		{"int for pointer", "cast_bf16", D1(1), D1(32), []any{0, p, int64(1)}, "kernel cast_bf16: argument 0 is int, want kind p"},
		{"missing argument", "cast_bf16", D1(1), D1(32), []any{p, p}, "kernel cast_bf16: 2 arguments, want 3 (ppl)"},
		{"unknown kernel", "matmul", D1(1), D1(32), nil, `unknown kernel "matmul"`},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := e.Launch(c.kernel, c.grid, c.block, c.args...)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("launch: %v, want an error containing %q", err, c.want)
			}
		})
	}
	t.Run("dynamic shared memory", func(t *testing.T) {
		args := []any{p, p, int64(64)}
		e.mu.Lock()
		over := e.launchLocked("cast_bf16", D1(1), D1(64), maxDynamicShared+1, args)
		at := e.launchLocked("cast_bf16", D1(1), D1(64), maxDynamicShared, args)
		e.mu.Unlock()
		if want := "kernel cast_bf16: 232449 bytes of dynamic shared memory exceed the 232448 opt-in limit"; over == nil || over.Error() != want {
			t.Errorf("227 KiB + 1 of dynamic shared memory: %v, want %q", over, want)
		}
		if at != nil {
			t.Errorf("227 KiB of dynamic shared memory: %v", at)
		}
	})
	// still usable: one AdamW step on 256 elements at the limit of 1024 threads
	launch(t, e, "adamw", D1(1), D1(1024), adamw(int64(256))...)
}

// Static shared memory past 48 KiB in the device's own source (a kernels.cu with sumsq's
// reduction array made 64 KiB) is refused at launch; the same launch on kernels.cu runs.
func TestEmulatedStaticSharedLimit(t *testing.T) {
	const decl = "__shared__ double red[256];"
	if strings.Count(kernels.Source, decl) != 1 {
		t.Fatalf("kernels.cu no longer declares %q once: update this test", decl)
	}
	big := newEmu(t, strings.Replace(kernels.Source, decl, "__shared__ double red[8192];", 1), Schedule{})
	orig := newEmu(t, "", Schedule{})
	for _, e := range []*Emulated{big, orig} {
		partial := upload(t, e, make([]float64, kernels.SumsqGrid))
		g := upload(t, e, []float32{3, 4})
		err := e.Launch("sumsq", D1(kernels.SumsqGrid), D1(256), partial, g, int64(2))
		if e == big {
			if want := "kernel sumsq: 65536 bytes of static shared memory exceed the 49152 a block may declare"; err == nil || err.Error() != want {
				t.Errorf("sumsq with 64 KiB of shared memory: %v, want %q", err, want)
			}
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if got := download[float64](t, e, partial, 1)[0]; got != 25 {
			t.Errorf("sumsq of [3 4]: partial[0] = %v, want 25", got)
		}
	}
}

// Dynamic shared memory is the launch's size and each block's own.
func TestEmulatedDynamicShared(t *testing.T) {
	e := newEmu(t, emuTestSource, Schedule{Order: "reverse"})
	const n, blocks = 48, 5
	out := upload(t, e, make([]float32, n*blocks))
	e.mu.Lock()
	err := e.launchLocked("dyn_shared", D1(blocks), D1(64), 4*n, []any{out, int32(n)})
	e.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	got := download[float32](t, e, out, n*blocks)
	for b := range blocks {
		for i := range n {
			if want := float32(b*1000 + n - 1 - i); got[b*n+i] != want {
				t.Fatalf("block %d: out[%d] = %v, want %v", b, i, got[b*n+i], want)
			}
		}
	}
}

// ---- warp collectives

// shflRef is what lane t of a block gets from a shuffle of vals (one per thread) by the
// PTX rules (shfl.sync): segments of width lanes; idx reads lane srcLane mod width of the
// caller's segment; up and down read lane ∓ delta, or keep the caller's value when that
// is outside the segment; xor reads lane ^ laneMask, which may lie in a lower segment but
// not a higher one (then the caller's own value).
func shflRef[T any](vals []T, t int, mode string, arg, width int) T {
	warp, lane := t&^31, t&31
	first := lane &^ (width - 1)
	last := first + width - 1
	src := lane
	switch mode {
	case "idx":
		src = first + ((arg%width)+width)%width
	case "up":
		if lane-arg >= first {
			src = lane - arg
		}
	case "down":
		if lane+arg <= last {
			src = lane + arg
		}
	case "xor":
		if lane^arg <= last {
			src = lane ^ arg
		}
	}
	return vals[warp+src]
}

// The four shuffles move the values the CUDA rules say, for widths 32, 16 and 8, source
// lanes below 0 and past the width, deltas past the segment and xor masks that reach a
// lower or a higher segment, in 4- and 8-byte types, in two warps, in every schedule.
func TestEmulatedShuffles(t *testing.T) {
	const n = 64
	vals := make([]int32, n)
	dvals := make([]float64, n)
	for i := range vals {
		vals[i] = int32(1000*(i/32) + 7*(i%32) + 3)
		dvals[i] = 0.25*float64(vals[i]) + 1e-12*float64(i)
	}
	for _, order := range []string{"forward", "reverse", "random"} {
		e := newEmu(t, emuTestSource, Schedule{Order: order, Seed: 11})
		out, outd := upload(t, e, make([]int32, 4*n)), upload(t, e, make([]float64, n))
		for _, c := range []struct{ width, srcBase, delta, laneMask int }{
			{32, 0, 1, 1}, {32, 40, 5, 16}, {32, 3, 31, 31},
			{16, 0, 3, 8}, {16, 20, 15, 16}, {16, -9, 17, 3},
			{8, 0, 1, 4}, {8, 11, 7, 8}, {8, 5, 9, 24},
		} {
			launch(t, e, "shuffles", D1(1), D1(n), out, outd, int32(c.width), int32(c.srcBase), int32(c.delta), int32(c.laneMask))
			got, gotd := download[int32](t, e, out, 4*n), download[float64](t, e, outd, n)
			for k, mode := range []string{"idx", "up", "down", "xor"} {
				for th := range n {
					arg := map[string]int{"idx": c.srcBase + th%13 - 6, "up": c.delta, "down": c.delta, "xor": c.laneMask}[mode]
					if want := shflRef(vals, th, mode, arg, c.width); got[k*n+th] != want {
						t.Errorf("%s: %+v: __shfl_%s lane %d got %d, want %d", order, c, mode, th, got[k*n+th], want)
					}
				}
			}
			for th := range n {
				if want := shflRef(dvals, th, "xor", c.laneMask, c.width); gotd[th] != want {
					t.Errorf("%s: %+v: double __shfl_xor lane %d got %v, want %v", order, c, th, gotd[th], want)
				}
			}
		}
	}
}

// Ballot, any and all over two warps (the second of 16 threads); __activemask converged
// (every live lane), in each arm of a divergent if/else (that arm's lanes), and in a
// branch whose other lanes go on to a later collective; a ballot among the lanes its mask
// names.
func TestEmulatedVotesAndActiveMask(t *testing.T) {
	const n = 48
	mask := func(lanes int, in func(lane int) bool) uint32 {
		var m uint32
		for l := range lanes {
			if in(l) {
				m |= 1 << l
			}
		}
		return m
	}
	b2u := func(b bool) uint32 {
		if b {
			return 1
		}
		return 0
	}
	for _, order := range []string{"forward", "reverse", "random"} {
		e := newEmu(t, emuTestSource, Schedule{Order: order, Seed: 5})
		out := upload(t, e, make([]uint32, 7*n))
		launch(t, e, "votes", D1(1), D1(n), out)
		got := download[uint32](t, e, out, 7*n)
		for th := range n {
			w, lane := th&^31, th&31
			lanes := min(32, n-w) // live lanes of this warp
			want := []uint32{
				mask(lanes, func(l int) bool { return ((w+l)*5)%7 < 3 }),
				b2u(w <= 40 && 40 < w+lanes),
				0, // lane 5 is live in both warps
				mask(lanes, func(int) bool { return true }),
				[]uint32{mask(lanes, func(l int) bool { return l%3 == 0 }), mask(lanes, func(l int) bool { return l%3 == 1 }), 0}[lane%3],
				0,
				mask(lanes, func(int) bool { return true }) << 1,
			}
			if lane < 20 {
				want[5] = mask(min(lanes, 20), func(l int) bool { return l&1 == 1 })
			}
			if lane&1 == 1 {
				want[6] |= mask(lanes, func(l int) bool { return l&1 == 1 })
			}
			for k, what := range []string{"__ballot_sync", "__any_sync", "__all_sync", "__activemask (converged)",
				"__activemask (if/else)", "__ballot_sync (20-lane mask)", "__activemask then __ballot_sync"} {
				if got[k*n+th] != want[k] {
					t.Errorf("%s: %s, thread %d: %#x, want %#x", order, what, th, got[k*n+th], want[k])
				}
			}
		}
	}
}

// __syncwarp orders the lanes' shared-memory writes before their reads in every schedule;
// without it the exchange reads stale values in at least one (so the test can fail).
func TestEmulatedSyncwarp(t *testing.T) {
	const n = 64
	wrongWithout := 0
	for i, order := range []string{"forward", "reverse", "random"} {
		e := newEmu(t, emuTestSource, Schedule{Order: order, Seed: 3})
		out := upload(t, e, make([]int32, n))
		for _, sync := range []int32{1, 0} {
			base := int32(100 * (2*i + int(sync) + 1)) // a new base per launch: stale values differ
			launch(t, e, "warp_exchange", D1(1), D1(n), out, base, sync)
			got := download[int32](t, e, out, n)
			wrong := 0
			for th := range n {
				if got[th] != base+int32(th^1) {
					wrong++
				}
			}
			if sync == 1 && wrong > 0 {
				t.Errorf("%s: with __syncwarp, %d lanes read the wrong value", order, wrong)
			}
			if sync == 0 && wrong > 0 {
				wrongWithout++
			}
		}
	}
	if wrongWithout == 0 {
		t.Error("without __syncwarp the exchange was right in every schedule")
	}
}

// ---- barriers

// Threads that exit before a __syncthreads() do not hold it: the others pass it and read
// their neighbours' values, in every schedule.
func TestEmulatedEarlyExitBarrier(t *testing.T) {
	const n = 64
	for i, order := range []string{"forward", "reverse", "random"} {
		e := newEmu(t, emuTestSource, Schedule{Order: order, Seed: 9})
		out := upload(t, e, make([]int32, 3*n))
		base := int32(1000 * (i + 1))
		launch(t, e, "early_exit", D1(3), D1(n), out, base)
		got := download[int32](t, e, out, 3*n)
		for b := range 3 {
			for th := 16; th < n; th++ {
				if want := base + int32(b+16+(th-16+1)%(n-16)); got[b*n+th] != want {
					t.Errorf("%s: block %d, thread %d read %d, want %d", order, b, th, got[b*n+th], want)
				}
			}
		}
	}
}

// launchWithin runs a launch that must fail, failing the test if it takes longer than a
// minute (a hang).
func launchWithin(t *testing.T, e *Emulated, name string, grid, block Dim3, args ...any) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- e.Launch(name, grid, block, args...) }()
	select {
	case err := <-done:
		return err
	case <-time.After(time.Minute):
		t.Fatalf("launch of %s hangs", name)
	}
	return nil
}

// Threads of one block waiting at two different __syncthreads() are a named error (with
// both lines), as is a warp collective that some lanes never reach because they wait at a
// barrier or at another collective, and a collective whose mask lacks the calling lane —
// errors, not hangs. The device is usable afterwards.
func TestEmulatedBarrierErrors(t *testing.T) {
	lineOf := func(marker string) string { // the line of emuTestSource holding marker
		return fmt.Sprint(strings.Count(emuTestSource[:strings.Index(emuTestSource, marker)], "\n") + 1)
	}
	barrierA, barrierB, collective := lineOf("// barrier A"), lineOf("// barrier B"), lineOf("// the collective")
	crossedA, crossedB, badMask := lineOf("// crossed A"), lineOf("// crossed B"), lineOf("// the bad mask")
	for _, order := range []string{"forward", "reverse", "random"} {
		e := newEmu(t, emuTestSource, Schedule{Order: order, Seed: 2})
		out := upload(t, e, make([]int32, 64))
		err := launchWithin(t, e, "divergent_barrier", D1(2), D1(64), out)
		if err == nil || !strings.HasPrefix(err.Error(), "kernel divergent_barrier: block (") ||
			!strings.HasSuffix(err.Error(), "(divergent barrier)") ||
			!strings.Contains(err.Error(), "line "+barrierA) || !strings.Contains(err.Error(), "line "+barrierB) {
			t.Errorf("%s: divergent barrier: %v, want a divergent-barrier error naming lines %s and %s", order, err, barrierA, barrierB)
		}
		err = launchWithin(t, e, "collective_vs_barrier", D1(2), D1(64), out)
		if err == nil || !strings.HasPrefix(err.Error(), "kernel collective_vs_barrier: block (") ||
			!strings.Contains(err.Error(), "warp collective (line "+collective+")") ||
			!strings.Contains(err.Error(), "never reaches") {
			t.Errorf("%s: collective vs barrier: %v, want an error naming the collective on line %s", order, err, collective)
		}
		err = launchWithin(t, e, "crossed_collectives", D1(1), D1(32), out)
		if want := fmt.Sprintf("kernel crossed_collectives: block (0,0,0), thread (0,0,0) waits at a warp collective (line %s) "+
			"that lane 16 of its warp never reaches (it waits at another warp collective on line %s)", crossedA, crossedB); err == nil || err.Error() != want {
			t.Errorf("%s: crossed collectives: %v, want %q", order, err, want)
		}
		err = launchWithin(t, e, "mask_without_caller", D1(1), D1(32), out)
		if want := fmt.Sprintf("kernel mask_without_caller: block (0,0,0), thread (1,0,0): the warp collective on line %s has mask 0x1, "+
			"without the calling lane 1", badMask); err == nil || err.Error() != want {
			t.Errorf("%s: mask without the caller: %v, want %q", order, err, want)
		}
		launch(t, e, "shift", D1(1), D1(64), out, int32(7), int32(1))
		if got := download[int32](t, e, out, 64); got[63] != 7+62 {
			t.Errorf("%s: after the failures: shift[63] = %d, want %d", order, got[63], 7+62)
		}
	}
}

// ---- bounds

// crashEnv selects, in a re-executed test binary, the case that must stop the process.
const crashEnv = "MYPT_EMU_TEST_CRASH"

// Reading one element past an allocation stops the process (exit status 86) with a message
// naming the kernel, the block and the thread: fill_rows with oc 8 over a bias of 4 floats
// (16 bytes, flush against the guard page), blocks of 3 threads on one OS thread, so
// thread 1 of block 1 (element 4) is the first to read past it.
func TestEmulatedOutOfBoundsStopsProcess(t *testing.T) {
	if os.Getenv(crashEnv) == "read-past-end" {
		e, err := NewEmulated(EmulatedOptions{CacheDir: emuCache(t), Threads: 1})
		if err != nil {
			fmt.Println("child:", err)
			os.Exit(2)
		}
		bias := upload(t, e, []float32{1, 2, 3, 4})
		out := upload(t, e, make([]float32, 8))
		err = e.Launch("fill_rows", D1(3), D1(3), out, bias, int64(8), int32(8))
		fmt.Println("child: the launch returned", err)
		os.Exit(0)
	}
	newEmu(t, "", Schedule{}) // compile here, so the child only loads the library
	cmd := exec.Command(os.Args[0], "-test.run=^TestEmulatedOutOfBoundsStopsProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashEnv+"=read-past-end")
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 86 {
		t.Fatalf("child: %v, want exit status 86; output:\n%s", err, out)
	}
	want := "mypt cuda emulator: kernel fill_rows, block (1,0,0), thread (1,0,0): invalid memory access"
	if !strings.Contains(string(out), want) {
		t.Errorf("child output:\n%s\nwant it to contain %q", out, want)
	}
}

// ---- schedules

func TestParseSchedule(t *testing.T) {
	for _, c := range []struct {
		in   string
		want Schedule
		err  string
	}{
		{"", Schedule{Order: "forward"}, ""},
		{"forward", Schedule{Order: "forward"}, ""},
		{"reverse", Schedule{Order: "reverse"}, ""},
		{"random", Schedule{Order: "random"}, ""},
		{"random:7", Schedule{Order: "random", Seed: 7}, ""},
		{"random:18446744073709551615", Schedule{Order: "random", Seed: math.MaxUint64}, ""},
		{"random:", Schedule{}, "seed"},
		{"random:x", Schedule{}, "seed"},
		{"random:7x", Schedule{}, "seed"},
		{"random:7 8", Schedule{}, "seed"},
		{"random:-1", Schedule{}, "seed"},
		{"reverse:3", Schedule{}, "only random takes a seed"},
		{"forward:0", Schedule{}, "only random takes a seed"},
		{"sideways", Schedule{}, "want forward, reverse or random[:SEED]"},
		{"Forward", Schedule{}, "want forward, reverse or random[:SEED]"},
	} {
		got, err := ParseSchedule(c.in)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("ParseSchedule(%q) = %+v, %v; want an error containing %q", c.in, got, err, c.err)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("ParseSchedule(%q) = %+v, %v; want %+v", c.in, got, err, c.want)
		}
	}
}

// A missing __syncthreads() between a shared-memory write and another thread's read
// gives a wrong result under the reverse and random schedules (forward runs the writer,
// thread t−1, before the reader and hides it); with the barrier every schedule is right.
func TestEmulatedScheduleExposesMissingBarrier(t *testing.T) {
	const n = 256
	wrong := map[string]int{}
	for i, s := range []Schedule{{Order: "forward"}, {Order: "reverse"}, {Order: "random", Seed: 1}, {Order: "random", Seed: 2}} {
		name := s.Order + fmt.Sprint(s.Seed)
		e := newEmu(t, emuTestSource, s)
		out := upload(t, e, make([]int32, n))
		for _, sync := range []int32{1, 0} {
			base := int32(10000 * (2*i + int(sync) + 1))
			launch(t, e, "shift", D1(1), D1(n), out, base, sync)
			got := download[int32](t, e, out, n)
			bad := 0
			for th := range n {
				if got[th] != base+int32(th)-1 {
					bad++
				}
			}
			if sync == 1 && bad > 0 {
				t.Errorf("%s: with the barrier, %d threads read the wrong value", name, bad)
			}
			if sync == 0 {
				wrong[name] = bad
			}
		}
	}
	t.Logf("threads reading a stale value without the barrier, by schedule: %v", wrong)
	if wrong["forward0"] != 0 {
		t.Errorf("forward order: %d wrong without the barrier; it should hide the race (writer first)", wrong["forward0"])
	}
	for _, s := range []string{"reverse0", "random1", "random2"} {
		if wrong[s] == 0 {
			t.Errorf("%s order: the missing barrier gave the right result", s)
		}
	}
}

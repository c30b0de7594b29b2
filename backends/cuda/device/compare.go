package device

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/mypt/mypt/backends/cuda/kernels"
)

// CompareOptions are the tolerances of a Compare. An element of a buffer passes when
// |test − ref| ≤ Atol + rtol·scale, scale being the largest finite magnitude in that buffer
// on either device: the two devices round differently, and by how much depends on the size
// of the values a kernel combines, which the buffer's largest value stands for (an element
// near zero, the sum of terms that cancel, carries the rounding of those terms). Integer
// buffers (as kernels.cu declares them) must match exactly, and a NaN equals any NaN.
// Zero rtol fields take DefaultCompareOptions' values.
type CompareOptions struct {
	// Atol is added to every element's bound (default 0: a buffer is judged on its own
	// scale however small, as AdamW's second moments, ~1e-8, must be).
	Atol float64
	// Rtol is rtol for kernels: the GPU's libdevice expf, logf, tanhf, rsqrtf are within
	// 1–2 ulp of correctly rounded, glibc's (the emulated device's) within 1, and NVRTC
	// contracts a·b+c into one fused multiply-add where the host compiler, for x86-64
	// without -mfma, rounds twice; each is ~1e-7 of the operands' size, a few of them
	// compound in a reduction over a row.
	Rtol float64
	// GemmRtol is rtol for fp32 products: cuBLASLt (CUBLAS_COMPUTE_32F, no TF32) sums k
	// products in its own blocked, split order with fused multiply-adds, the reference
	// one by one in order of k; the difference grows like √k ulps of the terms.
	GemmRtol float64
	// BF16GemmRtol is rtol for products in BF16 mode: both devices round the operands to
	// bf16 identically (cast_bf16, itself compared), so the products are exact in fp32,
	// but the GPU's tensor cores do not round each addition to nearest (measurements on
	// V100 and A100 found the addends' alignment truncated), which on sums that cancel
	// costs more than the fp32 path.
	BF16GemmRtol float64
}

// DefaultCompareOptions are the tolerances a Compare uses where CompareOptions leaves an
// rtol zero: 1e-5 of a buffer's largest value for kernels (the emulated device compiled
// with FMA contraction, as NVRTC contracts, differs from itself without by at most 3e-7 on
// the kernel check's workload, and the libraries' expf, logf, erff by an ulp or two, ~1e-7;
// a mutation such as a factor 1.001 is 1e-3), 1e-4 for fp32 products and 1e-3 for bf16
// ones, and no absolute term.
func DefaultCompareOptions() CompareOptions {
	return CompareOptions{Rtol: 1e-5, GemmRtol: 1e-4, BF16GemmRtol: 1e-3}
}

// KernelResult is what a Compare found for one kernel (or "gemm", the products, split by
// BF16 mode) over all its launches.
type KernelResult struct {
	Name string
	// BF16 marks products made in BF16 mode (gemm only).
	BF16 bool
	// Launches counts the kernel's launches (products for gemm).
	Launches int
	// Failures counts the launches after which some element was out of tolerance.
	Failures int
	// WorstAbs is the largest |test − ref| of any element after any launch; WorstRel the
	// largest such difference over the largest magnitude of its buffer.
	WorstAbs, WorstRel float64
	// First is the first element out of tolerance; nil when every launch passed.
	First *Mismatch
}

// Passed reports whether every launch was within tolerance.
func (r KernelResult) Passed() bool { return r.Failures == 0 }

// Mismatch locates an element out of tolerance.
type Mismatch struct {
	// Op numbers the Compare's checked operations (launches, products and, in BF16 mode,
	// the casts of their operands; from 0); Launch numbers this kernel's.
	Op, Launch int
	// Buffer names the allocation: the kernel parameters (or gemm operands) that point
	// into it, its element type and size; "not an argument" means a stray write.
	Buffer string
	// Element is the index in the allocation, in elements of its type; Bad counts the
	// allocation's elements out of tolerance after this launch.
	Element, Bad int
	// Test and Ref are the element's values on the two devices.
	Test, Ref float64
}

// Compare is a Device that runs every call on two devices and checks after each launch and
// product that they computed the same memory: test (the GPU, in real use) and ref (the
// emulated device, kernels.cu compiled for the CPU). Callers see test: addresses are test's
// (translated into ref's, also inside an allocation) and DtoH reads test's memory.
// Before each operation ref's memory is made equal to test's, so every kernel is judged on
// the same inputs on both and a difference in one does not spread to the kernels after
// it. After each operation every live allocation of both devices is read back and
// compared: meant for the tiny golden models (host memory twice the device's, a copy of all
// of it per launch).
type Compare struct {
	mu        sync.Mutex
	ref, test Device
	opts      CompareOptions
	info      Info
	params    map[string][]kernels.Param
	allocs    []cmpAlloc // by test address
	nextID    int
	bf16      bool
	ops       int
	results   map[resultKey]*KernelResult
	scratch   [2]Ptr // cast_bf16 outputs for the cast check: test's, ref's
	scratchN  int    // their capacity in elements
}

// cmpAlloc is one allocation on both devices, with host copies of both for comparing.
type cmpAlloc struct {
	test, ref  Ptr
	bytes, id  int
	elem       string // the element type kernels.cu declares for it ("" before any launch)
	synced     bool   // ref's memory equals test's
	tbuf, rbuf []byte
}

type resultKey struct {
	name string
	bf16 bool
}

var _ Device = (*Compare)(nil)

// NewCompare returns a Device running every call on ref and test and comparing their
// memory after each launch and product; zero rtols take DefaultCompareOptions'.
// Closing it closes both.
func NewCompare(ref, test Device, opts CompareOptions) *Compare {
	def := DefaultCompareOptions()
	opts.Rtol = cmp.Or(opts.Rtol, def.Rtol)
	opts.GemmRtol, opts.BF16GemmRtol = cmp.Or(opts.GemmRtol, def.GemmRtol), cmp.Or(opts.BF16GemmRtol, def.BF16GemmRtol)
	t, r := test.Info(), ref.Info()
	info := t
	info.Kind = "cuda-compare"
	info.Name = fmt.Sprintf("%s, compared with %s", t.Name, r.Name)
	info.Engine = fmt.Sprintf("comparison: %s; reference: %s", t.Engine, r.Engine)
	return &Compare{ref: ref, test: test, opts: opts, info: info, params: kernels.Params(),
		results: map[resultKey]*KernelResult{}}
}

// Options returns the tolerances in use.
func (c *Compare) Options() CompareOptions { return c.opts }

// Info implements Device: test's, named as a comparison.
func (c *Compare) Info() Info { return c.info }

// Report returns what was found per kernel, sorted by name (fp32 products before bf16),
// and whether every launch of every kernel was within tolerance.
func (c *Compare) Report() ([]KernelResult, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []KernelResult
	ok := true
	for _, r := range c.results {
		res := *r
		if r.First != nil {
			first := *r.First
			res.First = &first
		}
		out = append(out, res)
		ok = ok && r.Passed()
	}
	slices.SortFunc(out, func(a, b KernelResult) int {
		if a.Name != b.Name {
			return strings.Compare(a.Name, b.Name)
		}
		return cmpBool(a.BF16, b.BF16)
	})
	return out, ok
}

func cmpBool(a, b bool) int {
	switch {
	case a == b:
		return 0
	case a:
		return 1
	}
	return -1
}

// Alloc implements Device: on both devices. The new memory counts as different until the
// next operation copies test's into ref's (both hold whatever was there).
func (c *Compare) Alloc(n int) (Ptr, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	tp, err := c.test.Alloc(n)
	if err != nil {
		return 0, err
	}
	rp, err := c.ref.Alloc(n)
	if err != nil {
		_ = c.test.Free(tp)
		return 0, fmt.Errorf("reference device: %w", err)
	}
	a := cmpAlloc{test: tp, ref: rp, bytes: n, id: c.nextID, tbuf: make([]byte, n), rbuf: make([]byte, n)}
	c.nextID++
	i := sort.Search(len(c.allocs), func(i int) bool { return c.allocs[i].test > tp })
	c.allocs = slices.Insert(c.allocs, i, a)
	return tp, nil
}

// Free implements Device.
func (c *Compare) Free(p Ptr) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	i := c.find(p)
	if i < 0 || c.allocs[i].test != p {
		return fmt.Errorf("free of %#x: not an allocation", uint64(p))
	}
	a := c.allocs[i]
	c.allocs = slices.Delete(c.allocs, i, i+1)
	return errors.Join(c.test.Free(a.test), c.ref.Free(a.ref))
}

// find returns the index of the allocation holding test address p, its end included (the
// address just past a buffer, as an empty tensor at the end may have), or -1.
func (c *Compare) find(p Ptr) int {
	i := sort.Search(len(c.allocs), func(i int) bool { return c.allocs[i].test > p }) - 1
	if p == 0 || i < 0 || p > c.allocs[i].test+Ptr(c.allocs[i].bytes) {
		return -1
	}
	return i
}

// translate maps test address p to ref's, with the index of its allocation (-1 for null).
func (c *Compare) translate(p Ptr) (Ptr, int, error) {
	if p == 0 {
		return 0, -1, nil
	}
	i := c.find(p)
	if i < 0 {
		return 0, -1, fmt.Errorf("address %#x is outside every allocation", uint64(p))
	}
	return c.allocs[i].ref + (p - c.allocs[i].test), i, nil
}

// span translates a copy of n bytes at p, which must lie inside one allocation.
func (c *Compare) span(what string, p Ptr, n int) (Ptr, error) {
	rp, i, err := c.translate(p)
	if err == nil && i < 0 {
		err = errors.New("null address")
	}
	if err != nil {
		return 0, fmt.Errorf("%s: %w", what, err)
	}
	if a := c.allocs[i]; p+Ptr(n) > a.test+Ptr(a.bytes) {
		return 0, fmt.Errorf("%s of %d bytes at %#x overruns its allocation of %d bytes at %#x", what, n, uint64(p), a.bytes, uint64(a.test))
	}
	return rp, nil
}

// HtoD implements Device: the same bytes to both.
func (c *Compare) HtoD(dst Ptr, src []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	rp, err := c.span("HtoD", dst, len(src))
	if err != nil {
		return err
	}
	if err := c.test.HtoD(dst, src); err != nil {
		return err
	}
	if err := c.ref.HtoD(rp, src); err != nil {
		return fmt.Errorf("reference device: %w", err)
	}
	return nil
}

// DtoH implements Device: test's memory.
func (c *Compare) DtoH(dst []byte, src Ptr) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, err := c.span("DtoH", src, len(dst)); err != nil {
		return err
	}
	return c.test.DtoH(dst, src)
}

// Zero implements Device: on both.
func (c *Compare) Zero(p Ptr, n int) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	rp, err := c.span("zero", p, n)
	if err != nil {
		return err
	}
	if err := c.test.Zero(p, n); err != nil {
		return err
	}
	if err := c.ref.Zero(rp, n); err != nil {
		return fmt.Errorf("reference device: %w", err)
	}
	return nil
}

// roles names, per allocation index, the arguments of an operation that point into it.
type roles map[int][]string

// Launch implements Device: the kernel runs on both devices from the same memory, then
// every allocation is compared with the kernel tolerances. A pointer argument also tells
// the element type of its allocation (kernels.Params), so doubles and ints compare as such.
func (c *Compare) Launch(name string, grid, block Dim3, args ...any) error {
	if err := CheckArgs(name, grid, block, args); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	refArgs := slices.Clone(args)
	who := roles{}
	params := c.params[name]
	for i, a := range args {
		p, ok := a.(Ptr)
		if !ok {
			continue
		}
		rp, j, err := c.translate(p)
		if err != nil {
			return fmt.Errorf("kernel %s argument %d: %w", name, i, err)
		}
		refArgs[i] = rp
		if j < 0 {
			continue
		}
		role := fmt.Sprintf("argument %d", i)
		if i < len(params) {
			role = params[i].Name
			c.allocs[j].elem = params[i].Elem
		}
		who[j] = append(who[j], role)
	}
	return c.run(resultKey{name: name}, c.opts.Rtol, who,
		func() error { return c.test.Launch(name, grid, block, args...) },
		func() error { return c.ref.Launch(name, grid, block, refArgs...) })
}

// Gemm implements Device: the product on both devices from the same memory, compared with
// GemmRtol (BF16GemmRtol in BF16 mode). In BF16 mode each device first casts the operands
// with cast_bf16 into scratch memory of its own, which a caller never sees: the Compare
// runs that cast itself on both devices over the same operands and compares the bf16
// results, as kernel cast_bf16.
func (c *Compare) Gemm(g Gemm) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	rg := g
	who := roles{}
	for _, op := range []struct {
		p    *Ptr
		name string
	}{{&rg.A, "A"}, {&rg.B, "B"}, {&rg.C, "C"}} {
		rp, j, err := c.translate(*op.p)
		if err != nil {
			return fmt.Errorf("gemm operand %s: %w", op.name, err)
		}
		*op.p = rp
		if j >= 0 {
			c.allocs[j].elem = cmp.Or(c.allocs[j].elem, "float")
			who[j] = append(who[j], "gemm "+op.name)
		}
	}
	rtol := c.opts.GemmRtol
	if c.bf16 {
		rtol = c.opts.BF16GemmRtol
		if err := c.checkCast(g.A, rg.A, pick(g.TransA, g.K, g.M)*g.LDA, "A"); err != nil {
			return err
		}
		if err := c.checkCast(g.B, rg.B, pick(g.TransB, g.N, g.K)*g.LDB, "B"); err != nil {
			return err
		}
	}
	return c.run(resultKey{name: "gemm", bf16: c.bf16}, rtol, who,
		func() error { return c.test.Gemm(g) },
		func() error { return c.ref.Gemm(rg) })
}

// checkCast runs cast_bf16 over the n floats of a product's operand (at p on test, rp on
// ref) on both devices, into the Compare's scratch buffers, and compares the results.
func (c *Compare) checkCast(p, rp Ptr, n int, operand string) error {
	if n <= 0 {
		return nil
	}
	if err := c.syncLocked(); err != nil {
		return err
	}
	if c.scratchN < n {
		if err := c.freeScratch(); err != nil {
			return err
		}
		tp, err := c.test.Alloc(2 * n)
		if err != nil {
			return fmt.Errorf("cast check scratch: %w", err)
		}
		sp, err := c.ref.Alloc(2 * n)
		if err != nil {
			_ = c.test.Free(tp)
			return fmt.Errorf("cast check scratch on the reference device: %w", err)
		}
		c.scratch, c.scratchN = [2]Ptr{tp, sp}, n
	}
	grid, block := D1(Blocks(n, kernels.EltBlock)), D1(kernels.EltBlock)
	if err := c.test.Launch("cast_bf16", grid, block, c.scratch[0], p, int64(n)); err != nil {
		return err
	}
	if err := c.ref.Launch("cast_bf16", grid, block, c.scratch[1], rp, int64(n)); err != nil {
		return fmt.Errorf("reference device: %w", err)
	}
	tb, rb := make([]byte, 2*n), make([]byte, 2*n)
	if err := c.test.DtoH(tb, c.scratch[0]); err != nil {
		return err
	}
	if err := c.ref.DtoH(rb, c.scratch[1]); err != nil {
		return fmt.Errorf("reference device: %w", err)
	}
	res := c.result(resultKey{name: "cast_bf16"})
	var first *Mismatch
	if !bytes.Equal(tb, rb) {
		d := compareBuf(tb, rb, "bf16", c.opts.Atol, c.opts.Rtol)
		res.WorstAbs, res.WorstRel = max(res.WorstAbs, d.abs), max(res.WorstRel, d.rel)
		if d.bad > 0 {
			first = &Mismatch{Buffer: fmt.Sprintf("dst (bf16 copy of gemm operand %s, %d elements)", operand, n),
				Element: d.first, Bad: d.bad, Test: d.test, Ref: d.ref}
		}
	}
	c.tally(res, first)
	return nil
}

func (c *Compare) freeScratch() error {
	if c.scratchN == 0 {
		return nil
	}
	err := errors.Join(c.test.Free(c.scratch[0]), c.ref.Free(c.scratch[1]))
	c.scratch, c.scratchN = [2]Ptr{}, 0
	return err
}

// result returns the tally of key, created on first use.
func (c *Compare) result(key resultKey) *KernelResult {
	r := c.results[key]
	if r == nil {
		r = &KernelResult{Name: key.name, BF16: key.bf16}
		c.results[key] = r
	}
	return r
}

// tally counts one operation of res (numbered c.ops) and its first mismatch, if any.
func (c *Compare) tally(res *KernelResult, first *Mismatch) {
	if first != nil {
		first.Op, first.Launch = c.ops, res.Launches
		res.Failures++
		if res.First == nil {
			res.First = first
		}
	}
	res.Launches++
	c.ops++
}

// run makes ref's memory equal to test's, runs an operation on both, compares every
// allocation and leaves ref's memory equal to test's again.
func (c *Compare) run(key resultKey, rtol float64, who roles, onTest, onRef func() error) error {
	if err := c.syncLocked(); err != nil {
		return err
	}
	if err := onTest(); err != nil {
		c.unsync()
		return err
	}
	if err := onRef(); err != nil {
		c.unsync()
		return fmt.Errorf("reference device (%s): %w", c.ref.Info().Name, err)
	}
	res := c.result(key)
	var first *Mismatch
	for i := range c.allocs {
		a := &c.allocs[i]
		if a.bytes == 0 {
			continue
		}
		if err := c.test.DtoH(a.tbuf, a.test); err != nil {
			c.unsync()
			return err
		}
		if err := c.ref.DtoH(a.rbuf, a.ref); err != nil {
			c.unsync()
			return fmt.Errorf("reference device: %w", err)
		}
		if bytes.Equal(a.tbuf, a.rbuf) {
			continue
		}
		d := compareBuf(a.tbuf, a.rbuf, a.elem, c.opts.Atol, rtol)
		res.WorstAbs, res.WorstRel = max(res.WorstAbs, d.abs), max(res.WorstRel, d.rel)
		if d.bad > 0 && first == nil {
			first = &Mismatch{Buffer: c.describe(i, who[i]), Element: d.first, Bad: d.bad, Test: d.test, Ref: d.ref}
		}
		if err := c.ref.HtoD(a.ref, a.tbuf); err != nil {
			a.synced = false
			return fmt.Errorf("reference device: %w", err)
		}
	}
	c.tally(res, first)
	return nil
}

// describe names allocation i for a report.
func (c *Compare) describe(i int, roles []string) string {
	a := c.allocs[i]
	what := strings.Join(roles, ", ")
	if what == "" {
		what = "not an argument"
	}
	return fmt.Sprintf("%s (%s, allocation #%d of %d bytes)", what, cmp.Or(a.elem, "float"), a.id, a.bytes)
}

// syncLocked copies test's memory into ref's where they may differ.
func (c *Compare) syncLocked() error {
	for i := range c.allocs {
		a := &c.allocs[i]
		if a.synced || a.bytes == 0 {
			continue
		}
		if err := c.test.DtoH(a.tbuf, a.test); err != nil {
			return err
		}
		if err := c.ref.HtoD(a.ref, a.tbuf); err != nil {
			return fmt.Errorf("reference device: %w", err)
		}
		a.synced = true
	}
	return nil
}

// unsync marks every allocation as different (after a failed operation).
func (c *Compare) unsync() {
	for i := range c.allocs {
		c.allocs[i].synced = false
	}
}

// SetBF16 implements Device.
func (c *Compare) SetBF16(on bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.bf16 = on
	c.test.SetBF16(on)
	c.ref.SetBF16(on)
}

// Sync implements Device.
func (c *Compare) Sync() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return errors.Join(c.test.Sync(), c.ref.Sync())
}

// Close implements Device: it closes both devices.
func (c *Compare) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	err := c.freeScratch()
	c.allocs = nil
	return errors.Join(err, c.test.Close(), c.ref.Close())
}

// bufDiff is the comparison of one buffer on the two devices.
type bufDiff struct {
	abs, rel  float64 // the worst element's difference, and over the buffer's scale
	bad       int     // elements out of tolerance
	first     int     // the first of them
	test, ref float64 // its values
}

// intTypes are the integer element types kernels.cu declares, by size and signedness.
var intTypes = map[string]struct {
	size   int
	signed bool
}{
	"int": {4, true}, "unsigned int": {4, false}, "unsigned": {4, false}, "long long": {8, true},
	"u64": {8, false}, "unsigned short": {2, false}, "short": {2, true}, "char": {1, true}, "unsigned char": {1, false},
}

// compareBuf compares two copies of a buffer of elements of type elem ("" is float): floats
// (float, double, bf16) within atol + rtol·scale, NaN equal to NaN; integers exactly;
// unknown types byte by byte.
func compareBuf(t, r []byte, elem string, atol, rtol float64) bufDiff {
	size, isFloat := 1, false
	var read func(b []byte) float64
	le := binary.LittleEndian
	switch elem {
	case "", "float":
		size, isFloat = 4, true
		read = func(b []byte) float64 { return float64(math.Float32frombits(le.Uint32(b))) }
	case "double":
		size, isFloat = 8, true
		read = func(b []byte) float64 { return math.Float64frombits(le.Uint64(b)) }
	case "bf16":
		size, isFloat = 2, true
		read = func(b []byte) float64 { return float64(math.Float32frombits(uint32(le.Uint16(b)) << 16)) }
	default:
		it, ok := intTypes[elem]
		if ok {
			size = it.size
		}
		read = func(b []byte) float64 {
			var u uint64
			for i := len(b) - 1; i >= 0; i-- {
				u = u<<8 | uint64(b[i])
			}
			if it.signed && len(b) < 8 && u>>(8*len(b)-1) != 0 {
				return float64(int64(u) - 1<<(8*len(b)))
			}
			if it.signed {
				return float64(int64(u))
			}
			return float64(u)
		}
	}
	n := len(t) / size
	scale := 0.0
	for i := range n {
		for _, b := range [2][]byte{t, r} {
			if v := math.Abs(read(b[i*size : (i+1)*size])); v <= math.MaxFloat64 {
				scale = max(scale, v)
			}
		}
	}
	d := bufDiff{first: -1}
	mark := func(i int, tv, rv, abs float64) {
		d.abs = max(d.abs, abs)
		rel := math.Inf(1)
		if scale > 0 {
			rel = abs / scale
		}
		d.rel = max(d.rel, rel)
		if abs > atol+rtol*scale || !isFloat {
			if d.bad == 0 {
				d.first, d.test, d.ref = i, tv, rv
			}
			d.bad++
		}
	}
	for i := range n {
		tb, rb := t[i*size:(i+1)*size], r[i*size:(i+1)*size]
		if bytes.Equal(tb, rb) {
			continue
		}
		tv, rv := read(tb), read(rb)
		switch {
		case isFloat && math.IsNaN(tv) && math.IsNaN(rv):
		case math.IsNaN(tv) || math.IsNaN(rv) || math.IsInf(tv, 0) || math.IsInf(rv, 0):
			mark(i, tv, rv, math.Inf(1))
		default:
			mark(i, tv, rv, math.Abs(tv-rv))
		}
	}
	if tail := n * size; !bytes.Equal(t[tail:], r[tail:]) {
		mark(n, math.NaN(), math.NaN(), math.Inf(1))
	}
	return d
}

package device

import (
	"encoding/binary"
	"math"
	"strings"
	"testing"
)

// newEmulated opens an emulated device closed with the test; without a host C++ compiler
// the test fails (make test installs clang-19).
func newEmulated(t *testing.T, opts EmulatedOptions) *Emulated {
	t.Helper()
	d, err := NewEmulated(opts)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func f32bytes(v ...float32) []byte {
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
	}
	return b
}

func readF32(t *testing.T, d Device, p Ptr, n int) []float32 {
	t.Helper()
	b := make([]byte, 4*n)
	if err := d.DtoH(b, p); err != nil {
		t.Fatal(err)
	}
	out := make([]float32, n)
	for i := range out {
		out[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
	return out
}

// Kernel arguments and product operands that point inside an allocation reach the
// reference device as the same offset inside its copy of that allocation: Compare finds no
// difference (a reference kernel writing elsewhere would be one), and both devices hold
// the values worked out here (the reference's read back directly).
func TestCompareTranslatesAddresses(t *testing.T) {
	c := NewCompare(newEmulated(t, EmulatedOptions{}), newEmulated(t, EmulatedOptions{Schedule: Schedule{Order: "reverse"}}), CompareOptions{})
	defer c.Close()
	a, err := c.Alloc(4 * 64)
	if err != nil {
		t.Fatal(err)
	}
	b, err := c.Alloc(4 * 16)
	if err != nil {
		t.Fatal(err)
	}
	src := make([]float32, 16)
	for i := range src {
		src[i] = float32(i + 1)
	}
	if err := c.HtoD(b, f32bytes(src...)); err != nil {
		t.Fatal(err)
	}
	if err := c.Zero(a, 4*64); err != nil {
		t.Fatal(err)
	}
	// fill_rows: out[i] = b[i % oc] for i < total, here out = a+8, b = b+4
	if err := c.Launch("fill_rows", D1(1), D1(256), a.F32(8), b.F32(4), int64(12), int32(3)); err != nil {
		t.Fatal(err)
	}
	// C (2×2 at a+40) = A (2×3 at b+0) · B (3×2 at b+6): [[1 2 3] [4 5 6]]·[[7 8] [9 10] [11 12]]
	g := Gemm{M: 2, N: 2, K: 3, Alpha: 1, A: b, LDA: 3, B: b.F32(6), LDB: 2, C: a.F32(40), LDC: 2}
	if err := c.Gemm(g); err != nil {
		t.Fatal(err)
	}
	want := make([]float32, 64)
	for i := range 12 {
		want[8+i] = src[4+i%3]
	}
	copy(want[40:], []float32{1*7 + 2*9 + 3*11, 1*8 + 2*10 + 3*12, 4*7 + 5*9 + 6*11, 4*8 + 5*10 + 6*12})
	ra, _, err := c.translate(a)
	if err != nil {
		t.Fatal(err)
	}
	for dev, got := range map[string][]float32{"compare (test)": readF32(t, c, a, 64), "reference": readF32(t, c.ref, ra, 64)} {
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("%s: a[%d] = %v, want %v (all: %v)", dev, i, got[i], want[i], got)
			}
		}
	}
	rep, ok := c.Report()
	if !ok || len(rep) != 2 || rep[0].Name != "fill_rows" || rep[1].Name != "gemm" || rep[0].Launches != 1 || rep[1].Launches != 1 {
		t.Errorf("report %+v, %v: want fill_rows and gemm, one launch each, passed", rep, ok)
	}
	// The end of an allocation translates (an empty tensor's address); past it does not.
	if _, i, err := c.translate(b.F32(16)); err != nil || c.allocs[i].test != b {
		t.Errorf("end of b: allocation %d, %v", i, err)
	}
	if err := c.Launch("fill_rows", D1(1), D1(256), Ptr(8), b, int64(1), int32(1)); err == nil || !strings.Contains(err.Error(), "outside every allocation") {
		t.Errorf("launch with a pointer outside every allocation: %v", err)
	}
	if err := c.HtoD(b.F32(12), f32bytes(1, 2, 3, 4, 5)); err == nil || !strings.Contains(err.Error(), "overruns") {
		t.Errorf("HtoD past the end of an allocation: %v", err)
	}
	if err := c.Free(b.F32(1)); err == nil {
		t.Error("free of an address inside an allocation succeeded")
	}
}

// compareBuf reads a buffer by its declared element type: floats within tolerance (NaN
// equal to NaN, whatever its payload), doubles as doubles, integers exactly.
func TestCompareBuf(t *testing.T) {
	i32 := func(v ...int32) []byte {
		b := make([]byte, 4*len(v))
		for i, x := range v {
			binary.LittleEndian.PutUint32(b[4*i:], uint32(x))
		}
		return b
	}
	f64 := func(v ...float64) []byte {
		b := make([]byte, 8*len(v))
		for i, x := range v {
			binary.LittleEndian.PutUint64(b[8*i:], math.Float64bits(x))
		}
		return b
	}
	nan2 := math.Float32frombits(0x7fc00001)
	for _, c := range []struct {
		name      string
		t, r      []byte
		elem      string
		bad, at   int
		test, ref float64
	}{
		{"float within rtol·max", f32bytes(2, 1e-3, float32(math.NaN())), f32bytes(2, 1e-3+1e-5, nan2), "float", 0, -1, 0, 0},
		{"float beyond", f32bytes(2, 1, 3), f32bytes(2, 1.01, 3.01), "", 2, 1, 1, 1.01},
		{"NaN against a number", f32bytes(1, float32(math.NaN())), f32bytes(1, 1), "float", 1, 1, math.NaN(), 1},
		{"double low bits", f64(1.5, 2), f64(1.5+1e-12, 2), "double", 0, -1, 0, 0},
		{"double beyond", f64(1.5, 2), f64(1.5, 2.001), "double", 1, 1, 2, 2.001},
		{"int off by one", i32(0, 5, -1), i32(0, 5, -2), "int", 1, 2, -1, -2},
		{"int equal", i32(7), i32(7), "int", 0, -1, 0, 0},
	} {
		d := compareBuf(c.t, c.r, c.elem, 1e-6, 1e-5)
		if d.bad != c.bad || d.first != c.at || (c.bad > 0 && (!same(d.test, c.test) || !same(d.ref, c.ref))) {
			t.Errorf("%s: %+v, want %d bad, first %d (%v vs %v)", c.name, d, c.bad, c.at, c.test, c.ref)
		}
	}
}

func same(a, b float64) bool {
	return a == b || (math.IsNaN(a) && math.IsNaN(b)) || math.Abs(a-b) < 1e-6*math.Abs(b)
}

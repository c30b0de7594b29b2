package device

import (
	"fmt"
	"math"
	"unsafe"

	"github.com/mypt/mypt/backends/cuda/driver"
)

// LtLayout is a cuBLASLt matrix layout: a column-major Rows×Cols matrix of Type elements
// (driver.CudaR32F or driver.CudaR16BF) with leading dimension LD.
type LtLayout struct {
	Type       int32
	Rows, Cols uint64
	LD         int64
}

// LtMatmul is one cublasLtMatmul call as the GPU device makes it, descriptor values and
// operands: D = C = Alpha·op(A)·op(B) + Beta·C in cuBLASLt's column-major convention, op
// given by TransA/TransB (driver.OpN or driver.OpT), computed in ComputeF32 with F32
// scaling. The GPU device passes exactly these values to cuBLASLt; the emulated device
// interprets them with a reference product (ReferenceLt), so a mistake in the mapping from
// the backend's row-major Gemm shows on the CPU too.
type LtMatmul struct {
	TransA, TransB            int32
	A, B, C                   Ptr
	ALayout, BLayout, CLayout LtLayout
	Alpha, Beta               float32
}

// key is the call without its operands: what a cuBLASLt plan (descriptors and heuristic
// algorithm) depends on.
func (c LtMatmul) key() LtMatmul {
	c.A, c.B, c.C, c.Alpha, c.Beta = 0, 0, 0, 0, 0
	return c
}

// ltMatmul maps the row-major product g onto cuBLASLt: row-major C = op(A)·op(B) is
// column-major Cᵀ = op(B)ᵀ·op(A)ᵀ, so g's B becomes cuBLASLt's first operand and g's A its
// second, each described as the column-major matrix its row-major storage is. a and b are
// the operands as passed (g.A and g.B, or their bf16 copies when bf16).
func ltMatmul(g Gemm, a, b Ptr, bf16 bool) LtMatmul {
	in := int32(driver.CudaR32F)
	if bf16 {
		in = driver.CudaR16BF
	}
	opFirst, opSecond := int32(driver.OpN), int32(driver.OpN)
	if g.TransB {
		opFirst = driver.OpT
	}
	if g.TransA {
		opSecond = driver.OpT
	}
	// B as stored, column-major: rows = its row length
	bRows, bCols := uint64(g.N), uint64(g.K)
	if g.TransB {
		bRows, bCols = uint64(g.K), uint64(g.N)
	}
	aRows, aCols := uint64(g.K), uint64(g.M)
	if g.TransA {
		aRows, aCols = uint64(g.M), uint64(g.K)
	}
	return LtMatmul{TransA: opFirst, TransB: opSecond, A: b, B: a, C: g.C,
		ALayout: LtLayout{Type: in, Rows: bRows, Cols: bCols, LD: int64(g.LDB)},
		BLayout: LtLayout{Type: in, Rows: aRows, Cols: aCols, LD: int64(g.LDA)},
		CLayout: LtLayout{Type: driver.CudaR32F, Rows: uint64(g.N), Cols: uint64(g.M), LD: int64(g.LDC)},
		Alpha:   g.Alpha, Beta: g.Beta}
}

// ReferenceLt computes an LtMatmul as cuBLASLt defines it, reading the operands through
// at (which returns the memory at a device address, the allocation's remaining bytes):
// m×n = CLayout, k from A's layout and op, elements of each layout's type, products summed
// in float32 in order of k.
func ReferenceLt(c LtMatmul, at func(Ptr) ([]byte, error)) error {
	m, n := int(c.CLayout.Rows), int(c.CLayout.Cols)
	k := int(c.ALayout.Cols)
	if c.TransA == driver.OpT {
		k = int(c.ALayout.Rows)
	}
	if kb := pick(c.TransB == driver.OpT, int(c.BLayout.Cols), int(c.BLayout.Rows)); kb != k {
		return fmt.Errorf("cuBLASLt layouts disagree on k: A gives %d, B %d", k, kb)
	}
	if rows := pick(c.TransA == driver.OpT, int(c.ALayout.Cols), int(c.ALayout.Rows)); rows != m {
		return fmt.Errorf("cuBLASLt layouts disagree on m: op(A) has %d rows, C %d", rows, m)
	}
	if cols := pick(c.TransB == driver.OpT, int(c.BLayout.Rows), int(c.BLayout.Cols)); cols != n {
		return fmt.Errorf("cuBLASLt layouts disagree on n: op(B) has %d columns, C %d", cols, n)
	}
	ra, err := ltReader(c.A, c.ALayout, at)
	if err != nil {
		return fmt.Errorf("cuBLASLt operand A: %w", err)
	}
	rb, err := ltReader(c.B, c.BLayout, at)
	if err != nil {
		return fmt.Errorf("cuBLASLt operand B: %w", err)
	}
	cm, err := at(c.C)
	if err != nil {
		return fmt.Errorf("cuBLASLt operand C: %w", err)
	}
	ldc := int(c.CLayout.LD)
	if need := 4 * ((n-1)*ldc + m); len(cm) < need {
		return fmt.Errorf("cuBLASLt C (%d×%d, ld %d) runs past its allocation (%d of %d bytes)", m, n, ldc, len(cm), need)
	}
	cf := unsafe.Slice((*float32)(unsafe.Pointer(&cm[0])), len(cm)/4)
	for j := 0; j < n; j++ {
		for i := 0; i < m; i++ {
			var s float32
			for p := 0; p < k; p++ {
				av := ra(pick(c.TransA == driver.OpT, p, i), pick(c.TransA == driver.OpT, i, p))
				bv := rb(pick(c.TransB == driver.OpT, j, p), pick(c.TransB == driver.OpT, p, j))
				s += av * bv
			}
			d := &cf[i+j*ldc]
			if c.Beta == 0 {
				*d = c.Alpha * s
			} else {
				*d = c.Alpha*s + c.Beta**d
			}
		}
	}
	return nil
}

// ltReader returns element (row, col) of a column-major layout at p, widened to float32.
func ltReader(p Ptr, l LtLayout, at func(Ptr) ([]byte, error)) (func(row, col int) float32, error) {
	mem, err := at(p)
	if err != nil {
		return nil, err
	}
	size := map[int32]int{driver.CudaR32F: 4, driver.CudaR16BF: 2}[l.Type]
	if size == 0 {
		return nil, fmt.Errorf("layout type %d", l.Type)
	}
	if l.Rows == 0 || l.Cols == 0 {
		return func(int, int) float32 { return 0 }, nil
	}
	if need := size * int((int64(l.Cols)-1)*l.LD+int64(l.Rows)); len(mem) < need {
		return nil, fmt.Errorf("%d×%d (ld %d) runs past its allocation (%d of %d bytes)", l.Rows, l.Cols, l.LD, len(mem), need)
	}
	ld := int(l.LD)
	if size == 2 {
		h := unsafe.Slice((*uint16)(unsafe.Pointer(&mem[0])), len(mem)/2)
		return func(r, c int) float32 { return math.Float32frombits(uint32(h[r+c*ld]) << 16) }, nil
	}
	f := unsafe.Slice((*float32)(unsafe.Pointer(&mem[0])), len(mem)/4)
	return func(r, c int) float32 { return f[r+c*ld] }, nil
}

func pick(cond bool, a, b int) int {
	if cond {
		return a
	}
	return b
}

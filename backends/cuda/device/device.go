// Package device is what the CUDA backend computes on: a Device allocates memory, copies
// to and from it, launches the kernels of backends/cuda/kernels by name and runs matrix
// products. Two implementations: GPU (the driver API, NVRTC and cuBLASLt through
// backends/cuda/driver) and Emulated, which compiles the same kernels.cu for the CPU
// against a CUDA execution model (device/emu), so that the kernels and the host side —
// buffer sizes, offsets, launch shapes, the order of kernels in a step — are tested in CI
// without a GPU.
package device

import (
	"fmt"

	"github.com/mypt/mypt/backends/cuda/kernels"
)

// Ptr is a device address; 0 is the null pointer. Pointer arithmetic is byte arithmetic,
// as in CUDA (Ptr.F32 offsets by float32 elements).
type Ptr uint64

// F32 returns p advanced by i float32 elements.
func (p Ptr) F32(i int) Ptr {
	if p == 0 {
		return 0
	}
	return p + Ptr(4*i)
}

// Dim3 is a grid or block shape.
type Dim3 struct{ X, Y, Z int }

// D1 is a one-dimensional shape.
func D1(x int) Dim3 { return Dim3{x, 1, 1} }

// D2 is a two-dimensional shape.
func D2(x, y int) Dim3 { return Dim3{x, y, 1} }

// Blocks is ceil(n/per) (at least 1).
func Blocks(n, per int) int { return max(1, (n+per-1)/per) }

// Gemm is a row-major product C = alpha·op(A)·op(B) + beta·C of fp32 matrices (the CPU
// backend's sgemm convention): op(A) is m×k, op(B) k×n, C m×n; lda, ldb, ldc are row
// strides in elements. In BF16 mode the device rounds A and B to bf16 and accumulates in
// fp32 (cuBLASLt with CUBLAS_COMPUTE_32F).
type Gemm struct {
	TransA, TransB bool
	M, N, K        int
	Alpha, Beta    float32
	A, B, C        Ptr
	LDA, LDB, LDC  int
}

// Info describes a device.
type Info struct {
	Kind, Name  string
	MemoryBytes uint64
	SMs         int
	Arch        string // e.g. "sm_90"
	Engine      string // free text for GetInfo
}

// Device is one accelerator and its single in-order stream. Launches and products are
// asynchronous on a GPU; copies to the host synchronise.
type Device interface {
	Info() Info
	Alloc(bytes int) (Ptr, error)
	Free(p Ptr) error
	HtoD(dst Ptr, src []byte) error
	DtoH(dst []byte, src Ptr) error
	Zero(p Ptr, bytes int) error
	// Launch runs kernel name (see kernels.Signatures) on grid×block threads. Arguments are
	// Ptr, int32, int64, float32, float64 or uint64, as the kernel's spec says.
	Launch(name string, grid, block Dim3, args ...any) error
	Gemm(g Gemm) error
	// SetBF16 selects bf16 inputs (true) or fp32 inputs for Gemm.
	SetBF16(on bool)
	Sync() error
	Close() error
}

// CheckArgs verifies args against the kernel's spec and shapes against CUDA's limits.
func CheckArgs(name string, grid, block Dim3, args []any) error {
	return checkArgs(kernels.Signatures(), name, grid, block, args)
}

// checkArgs is CheckArgs against the signatures sigs of a kernel source.
func checkArgs(sigs map[string]string, name string, grid, block Dim3, args []any) error {
	spec, ok := sigs[name]
	if !ok {
		return fmt.Errorf("unknown kernel %q", name)
	}
	if len(args) != len(spec) {
		return fmt.Errorf("kernel %s: %d arguments, want %d (%s)", name, len(args), len(spec), spec)
	}
	for i, a := range args {
		var ok bool
		switch spec[i] {
		case 'p':
			_, ok = a.(Ptr)
		case 'i':
			_, ok = a.(int32)
		case 'l':
			_, ok = a.(int64)
		case 'f':
			_, ok = a.(float32)
		case 'd':
			_, ok = a.(float64)
		case 'u':
			_, ok = a.(uint64)
		}
		if !ok {
			return fmt.Errorf("kernel %s: argument %d is %T, want kind %c", name, i, a, spec[i])
		}
	}
	if grid.X < 1 || grid.Y < 1 || grid.Z < 1 || grid.Y > 65535 || grid.Z > 65535 || grid.X > 1<<31-1 {
		return fmt.Errorf("kernel %s: bad grid %+v", name, grid)
	}
	if block.X < 1 || block.Y < 1 || block.Z < 1 || block.X*block.Y*block.Z > 1024 {
		return fmt.Errorf("kernel %s: bad block %+v", name, block)
	}
	return nil
}

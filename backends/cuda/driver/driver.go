// Package driver binds the three NVIDIA libraries the CUDA backend needs — the driver API
// (libcuda.so.1), NVRTC (libnvrtc.so.13 or .12) and cuBLASLt (libcublasLt.so.13 or .12) —
// at run time with github.com/ebitengine/purego: no cgo, no CUDA headers at build time, and
// a machine without a GPU or driver gets an error from Open instead of a crash.
//
// Every handle lives in the struct that loaded it; nothing is global. The functions are the
// C entry points with their C argument order; callers wrap them (see backends/cuda/device).
package driver

import (
	"errors"
	"fmt"
	"unsafe"

	"github.com/ebitengine/purego"
)

// ErrNoDriver reports that libcuda.so.1 could not be loaded: no NVIDIA driver.
var ErrNoDriver = errors.New("libcuda.so.1 not found: no NVIDIA driver on this machine")

// Result is a CUresult / nvrtcResult / cublasStatus_t.
type Result int32

// open dlopens the first loadable name.
func open(names ...string) (uintptr, string, error) {
	var errs []error
	for _, n := range names {
		h, err := purego.Dlopen(n, purego.RTLD_NOW|purego.RTLD_GLOBAL)
		if err == nil {
			return h, n, nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", n, err))
	}
	return 0, "", errors.Join(errs...)
}

// binder registers C functions into Go function variables, remembering the first failure.
type binder struct {
	lib    uintptr
	soname string
	err    error
}

func (b *binder) bind(fptr any, name string) {
	if b.err != nil {
		return
	}
	addr, err := purego.Dlsym(b.lib, name)
	if err != nil {
		b.err = fmt.Errorf("%s: symbol %s: %w", b.soname, name, err)
		return
	}
	purego.RegisterFunc(fptr, addr)
}

// Driver is the CUDA driver API (libcuda.so.1), the subset the backend uses.
type Driver struct {
	Soname string

	Init                    func(flags uint32) Result
	DriverGetVersion        func(v *int32) Result
	DeviceGetCount          func(n *int32) Result
	DeviceGet               func(dev *int32, ordinal int32) Result
	DeviceGetName           func(name *byte, n int32, dev int32) Result
	DeviceTotalMem          func(bytes *uint64, dev int32) Result
	DeviceGetAttribute      func(v *int32, attr int32, dev int32) Result
	DevicePrimaryCtxRetain  func(ctx *uintptr, dev int32) Result
	DevicePrimaryCtxRelease func(dev int32) Result
	CtxSetCurrent           func(ctx uintptr) Result
	MemAlloc                func(ptr *uint64, bytes uint64) Result
	MemFree                 func(ptr uint64) Result
	MemAllocHost            func(p *unsafe.Pointer, bytes uint64) Result
	MemFreeHost             func(p unsafe.Pointer) Result
	MemcpyHtoD              func(dst uint64, src unsafe.Pointer, bytes uint64) Result
	MemcpyDtoH              func(dst unsafe.Pointer, src uint64, bytes uint64) Result
	MemcpyDtoD              func(dst, src uint64, bytes uint64) Result
	MemsetD8Async           func(dst uint64, v uint8, n uint64, stream uintptr) Result
	ModuleLoadData          func(mod *uintptr, image unsafe.Pointer) Result
	ModuleUnload            func(mod uintptr) Result
	ModuleGetFunction       func(fn *uintptr, mod uintptr, name *byte) Result
	LaunchKernel            func(fn uintptr, gx, gy, gz, bx, by, bz, shmem uint32, stream uintptr, params unsafe.Pointer, extra uintptr) Result
	StreamCreate            func(s *uintptr, flags uint32) Result
	StreamDestroy           func(s uintptr) Result
	StreamSynchronize       func(s uintptr) Result
	GetErrorName            func(r Result, s **byte) Result
}

// Device attributes (CUdevice_attribute).
const (
	AttrMultiprocessorCount = 16
	AttrComputeCapMajor     = 75
	AttrComputeCapMinor     = 76
)

// OpenDriver loads libcuda.so.1 and calls cuInit. Without a driver it returns an error
// wrapping ErrNoDriver; with a driver but no usable GPU, cuInit's error.
func OpenDriver() (*Driver, error) {
	h, name, err := open("libcuda.so.1", "libcuda.so")
	if err != nil {
		return nil, fmt.Errorf("%w (%v)", ErrNoDriver, err)
	}
	d := &Driver{Soname: name}
	b := &binder{lib: h, soname: name}
	b.bind(&d.Init, "cuInit")
	b.bind(&d.DriverGetVersion, "cuDriverGetVersion")
	b.bind(&d.DeviceGetCount, "cuDeviceGetCount")
	b.bind(&d.DeviceGet, "cuDeviceGet")
	b.bind(&d.DeviceGetName, "cuDeviceGetName")
	b.bind(&d.DeviceTotalMem, "cuDeviceTotalMem_v2")
	b.bind(&d.DeviceGetAttribute, "cuDeviceGetAttribute")
	b.bind(&d.DevicePrimaryCtxRetain, "cuDevicePrimaryCtxRetain")
	b.bind(&d.DevicePrimaryCtxRelease, "cuDevicePrimaryCtxRelease_v2")
	b.bind(&d.CtxSetCurrent, "cuCtxSetCurrent")
	b.bind(&d.MemAlloc, "cuMemAlloc_v2")
	b.bind(&d.MemFree, "cuMemFree_v2")
	b.bind(&d.MemAllocHost, "cuMemAllocHost_v2")
	b.bind(&d.MemFreeHost, "cuMemFreeHost")
	b.bind(&d.MemcpyHtoD, "cuMemcpyHtoD_v2")
	b.bind(&d.MemcpyDtoH, "cuMemcpyDtoH_v2")
	b.bind(&d.MemcpyDtoD, "cuMemcpyDtoD_v2")
	b.bind(&d.MemsetD8Async, "cuMemsetD8Async")
	b.bind(&d.ModuleLoadData, "cuModuleLoadData")
	b.bind(&d.ModuleUnload, "cuModuleUnload")
	b.bind(&d.ModuleGetFunction, "cuModuleGetFunction")
	b.bind(&d.LaunchKernel, "cuLaunchKernel")
	b.bind(&d.StreamCreate, "cuStreamCreate")
	b.bind(&d.StreamDestroy, "cuStreamDestroy_v2")
	b.bind(&d.StreamSynchronize, "cuStreamSynchronize")
	b.bind(&d.GetErrorName, "cuGetErrorName")
	if b.err != nil {
		return nil, b.err
	}
	if err := d.Check("cuInit", d.Init(0)); err != nil {
		return nil, fmt.Errorf("no usable NVIDIA GPU: %w", err)
	}
	return d, nil
}

// Check turns a CUresult into an error naming the call.
func (d *Driver) Check(call string, r Result) error {
	if r == 0 {
		return nil
	}
	var s *byte
	name := "unknown"
	if d.GetErrorName != nil && d.GetErrorName(r, &s) == 0 && s != nil {
		name = CString(s)
	}
	return fmt.Errorf("%s: CUDA error %d (%s)", call, r, name)
}

// CString copies a NUL-terminated C string.
func CString(p *byte) string {
	if p == nil {
		return ""
	}
	var out []byte
	for q := unsafe.Pointer(p); *(*byte)(q) != 0; q = unsafe.Add(q, 1) {
		out = append(out, *(*byte)(q))
	}
	return string(out)
}

// CBytes returns s NUL-terminated.
func CBytes(s string) []byte { return append([]byte(s), 0) }

// NVRTC is the run-time compiler (libnvrtc).
type NVRTC struct {
	Soname string

	Version           func(major, minor *int32) Result
	CreateProgram     func(prog *uintptr, src *byte, name *byte, nHeaders int32, headers, includeNames uintptr) Result
	DestroyProgram    func(prog *uintptr) Result
	CompileProgram    func(prog uintptr, nOpts int32, opts **byte) Result
	GetProgramLogSize func(prog uintptr, n *uint64) Result
	GetProgramLog     func(prog uintptr, log *byte) Result
	GetCUBINSize      func(prog uintptr, n *uint64) Result
	GetCUBIN          func(prog uintptr, cubin *byte) Result
	GetErrorString    func(r Result) *byte
}

// OpenNVRTC loads libnvrtc.so.13, falling back to .12.
func OpenNVRTC() (*NVRTC, error) {
	h, name, err := open("libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so")
	if err != nil {
		return nil, fmt.Errorf("NVRTC (libnvrtc.so.13/.12) not found: %w", err)
	}
	n := &NVRTC{Soname: name}
	b := &binder{lib: h, soname: name}
	b.bind(&n.Version, "nvrtcVersion")
	b.bind(&n.CreateProgram, "nvrtcCreateProgram")
	b.bind(&n.DestroyProgram, "nvrtcDestroyProgram")
	b.bind(&n.CompileProgram, "nvrtcCompileProgram")
	b.bind(&n.GetProgramLogSize, "nvrtcGetProgramLogSize")
	b.bind(&n.GetProgramLog, "nvrtcGetProgramLog")
	b.bind(&n.GetCUBINSize, "nvrtcGetCUBINSize")
	b.bind(&n.GetCUBIN, "nvrtcGetCUBIN")
	b.bind(&n.GetErrorString, "nvrtcGetErrorString")
	return n, b.err
}

// Compile compiles CUDA C source for arch (e.g. "sm_90") and returns the cubin and the log.
func (n *NVRTC) Compile(src, name, arch string, extra ...string) (cubin []byte, log string, err error) {
	var prog uintptr
	csrc, cname := CBytes(src), CBytes(name)
	if r := n.CreateProgram(&prog, &csrc[0], &cname[0], 0, 0, 0); r != 0 {
		return nil, "", fmt.Errorf("nvrtcCreateProgram: %s", CString(n.GetErrorString(r)))
	}
	defer n.DestroyProgram(&prog)
	opts := append([]string{"--gpu-architecture=" + arch, "--std=c++17"}, extra...)
	cstrs := make([][]byte, len(opts))
	ptrs := make([]*byte, len(opts))
	for i, o := range opts {
		cstrs[i] = CBytes(o)
		ptrs[i] = &cstrs[i][0]
	}
	r := n.CompileProgram(prog, int32(len(ptrs)), &ptrs[0])
	var ls uint64
	if n.GetProgramLogSize(prog, &ls) == 0 && ls > 1 {
		buf := make([]byte, ls)
		if n.GetProgramLog(prog, &buf[0]) == 0 {
			log = string(buf[:ls-1])
		}
	}
	if r != 0 {
		return nil, log, fmt.Errorf("nvrtcCompileProgram (%s): %s\n%s", arch, CString(n.GetErrorString(r)), log)
	}
	var cs uint64
	if r := n.GetCUBINSize(prog, &cs); r != 0 {
		return nil, log, fmt.Errorf("nvrtcGetCUBINSize: %s", CString(n.GetErrorString(r)))
	}
	cubin = make([]byte, cs)
	if r := n.GetCUBIN(prog, &cubin[0]); r != 0 {
		return nil, log, fmt.Errorf("nvrtcGetCUBIN: %s", CString(n.GetErrorString(r)))
	}
	return cubin, log, nil
}

// CublasLt is cuBLASLt (libcublasLt).
type CublasLt struct {
	Soname string

	Create                  func(h *uintptr) Result
	Destroy                 func(h uintptr) Result
	GetVersion              func() uint64
	MatmulDescCreate        func(desc *uintptr, computeType int32, scaleType int32) Result
	MatmulDescDestroy       func(desc uintptr) Result
	MatmulDescSetAttribute  func(desc uintptr, attr int32, buf unsafe.Pointer, size uint64) Result
	MatrixLayoutCreate      func(layout *uintptr, dtype int32, rows, cols uint64, ld int64) Result
	MatrixLayoutDestroy     func(layout uintptr) Result
	MatmulPreferenceCreate  func(p *uintptr) Result
	MatmulPreferenceSetAttr func(p uintptr, attr int32, buf unsafe.Pointer, size uint64) Result
	MatmulPreferenceDestroy func(p uintptr) Result
	MatmulAlgoGetHeuristic  func(h, desc, a, b, c, d, pref uintptr, requested int32, results unsafe.Pointer, returned *int32) Result
	Matmul                  func(h, desc uintptr, alpha unsafe.Pointer, a uint64, adesc uintptr, b uint64, bdesc uintptr, beta unsafe.Pointer, c uint64, cdesc uintptr, d uint64, ddesc uintptr, algo unsafe.Pointer, workspace uint64, wsSize uint64, stream uintptr) Result
}

// cuBLASLt / CUDA enum values (cublasLt.h, library_types.h, cublas_api.h).
const (
	CudaR32F  = 0  // CUDA_R_32F
	CudaR16BF = 14 // CUDA_R_16BF

	ComputeF32 = 68 // CUBLAS_COMPUTE_32F

	MatmulDescTransA = 3 // CUBLASLT_MATMUL_DESC_TRANSA
	MatmulDescTransB = 4 // CUBLASLT_MATMUL_DESC_TRANSB

	PrefMaxWorkspaceBytes = 1 // CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES

	OpN = 0 // CUBLAS_OP_N
	OpT = 1 // CUBLAS_OP_T

	// HeuristicResultSize is sizeof(cublasLtMatmulHeuristicResult_t): a 64-byte algo, then
	// workspaceSize (8), state (4), wavesCount (4) and 4 reserved ints.
	HeuristicResultSize = 64 + 8 + 4 + 4 + 16
)

// OpenCublasLt loads libcublasLt.so.13, falling back to .12.
func OpenCublasLt() (*CublasLt, error) {
	h, name, err := open("libcublasLt.so.13", "libcublasLt.so.12", "libcublasLt.so")
	if err != nil {
		return nil, fmt.Errorf("cuBLASLt (libcublasLt.so.13/.12) not found: %w", err)
	}
	c := &CublasLt{Soname: name}
	b := &binder{lib: h, soname: name}
	b.bind(&c.Create, "cublasLtCreate")
	b.bind(&c.Destroy, "cublasLtDestroy")
	b.bind(&c.GetVersion, "cublasLtGetVersion")
	b.bind(&c.MatmulDescCreate, "cublasLtMatmulDescCreate")
	b.bind(&c.MatmulDescDestroy, "cublasLtMatmulDescDestroy")
	b.bind(&c.MatmulDescSetAttribute, "cublasLtMatmulDescSetAttribute")
	b.bind(&c.MatrixLayoutCreate, "cublasLtMatrixLayoutCreate")
	b.bind(&c.MatrixLayoutDestroy, "cublasLtMatrixLayoutDestroy")
	b.bind(&c.MatmulPreferenceCreate, "cublasLtMatmulPreferenceCreate")
	b.bind(&c.MatmulPreferenceSetAttr, "cublasLtMatmulPreferenceSetAttribute")
	b.bind(&c.MatmulPreferenceDestroy, "cublasLtMatmulPreferenceDestroy")
	b.bind(&c.MatmulAlgoGetHeuristic, "cublasLtMatmulAlgoGetHeuristic")
	b.bind(&c.Matmul, "cublasLtMatmul")
	return c, b.err
}

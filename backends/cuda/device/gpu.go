package device

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"unsafe"

	"github.com/mypt/mypt/backends/cuda/driver"
	"github.com/mypt/mypt/backends/cuda/kernels"
)

// GPU is a Device on an NVIDIA GPU: one primary context, one stream, the kernels compiled
// by NVRTC for the device's architecture (cached on disk) and cuBLASLt for Gemm. Every call
// binds the context to the calling OS thread first (goroutines move between threads).
type GPU struct {
	mu    sync.Mutex
	drv   *driver.Driver
	lt    *driver.CublasLt
	dev   int32
	ctx   uintptr
	strm  uintptr
	mod   uintptr
	fns   map[string]uintptr
	info  Info
	bf16  bool
	ltH   uintptr
	ws    Ptr                    // cuBLASLt workspace
	wsN   uint64                 // its size
	cast  [2]Ptr                 // bf16 copies of Gemm's A and B
	castN [2]int                 // their capacity in elements
	args  unsafe.Pointer         // pinned host arena for kernel parameters (C memory)
	algos map[LtMatmul]*gemmPlan // by the call's descriptor values (LtMatmul.key)
	log   *slog.Logger
}

const argArena = 4096

type gemmPlan struct {
	desc, a, b, c uintptr
	algo          [driver.HeuristicResultSize]byte
}

// OpenGPU opens GPU ordinal, compiling (or loading from cacheDir) the kernels.
func OpenGPU(ordinal int, cacheDir string, log *slog.Logger) (*GPU, error) {
	drv, err := driver.OpenDriver()
	if err != nil {
		return nil, err
	}
	g := &GPU{drv: drv, fns: map[string]uintptr{}, algos: map[LtMatmul]*gemmPlan{}, log: log}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var n int32
	if err := drv.Check("cuDeviceGetCount", drv.DeviceGetCount(&n)); err != nil {
		return nil, err
	}
	if int(n) <= ordinal {
		return nil, fmt.Errorf("no CUDA device %d (%d present)", ordinal, n)
	}
	if err := drv.Check("cuDeviceGet", drv.DeviceGet(&g.dev, int32(ordinal))); err != nil {
		return nil, err
	}
	name := make([]byte, 256)
	var mem uint64
	var sms, major, minor int32
	if err := firstErr(
		drv.Check("cuDeviceGetName", drv.DeviceGetName(&name[0], 256, g.dev)),
		drv.Check("cuDeviceTotalMem", drv.DeviceTotalMem(&mem, g.dev)),
		drv.Check("cuDeviceGetAttribute", drv.DeviceGetAttribute(&sms, driver.AttrMultiprocessorCount, g.dev)),
		drv.Check("cuDeviceGetAttribute", drv.DeviceGetAttribute(&major, driver.AttrComputeCapMajor, g.dev)),
		drv.Check("cuDeviceGetAttribute", drv.DeviceGetAttribute(&minor, driver.AttrComputeCapMinor, g.dev)),
		drv.Check("cuDevicePrimaryCtxRetain", drv.DevicePrimaryCtxRetain(&g.ctx, g.dev)),
	); err != nil {
		return nil, err
	}
	if err := drv.Check("cuCtxSetCurrent", drv.CtxSetCurrent(g.ctx)); err != nil {
		return nil, err
	}
	g.info = Info{Kind: "cuda", Name: driver.CString(&name[0]), MemoryBytes: mem, SMs: int(sms),
		Arch: fmt.Sprintf("sm_%d%d", major, minor)}
	if err := drv.Check("cuStreamCreate", drv.StreamCreate(&g.strm, 1 /* non-blocking */)); err != nil {
		return nil, err
	}
	if err := drv.Check("cuMemAllocHost", drv.MemAllocHost(&g.args, argArena)); err != nil {
		return nil, err
	}
	cubin, err := compileCached(g.info.Arch, cacheDir, log)
	if err != nil {
		return nil, err
	}
	if err := drv.Check("cuModuleLoadData", drv.ModuleLoadData(&g.mod, unsafe.Pointer(&cubin[0]))); err != nil {
		return nil, err
	}
	for k := range kernels.Signatures() {
		var fn uintptr
		cn := driver.CBytes(k)
		if err := drv.Check("cuModuleGetFunction "+k, drv.ModuleGetFunction(&fn, g.mod, &cn[0])); err != nil {
			return nil, err
		}
		g.fns[k] = fn
	}
	if g.lt, err = driver.OpenCublasLt(); err != nil {
		return nil, err
	}
	if r := g.lt.Create(&g.ltH); r != 0 {
		return nil, fmt.Errorf("cublasLtCreate: status %d", r)
	}
	g.wsN = 32 << 20
	var ws uint64
	if err := drv.Check("cuMemAlloc (cuBLASLt workspace)", drv.MemAlloc(&ws, g.wsN)); err != nil {
		return nil, err
	}
	g.ws = Ptr(ws)
	g.info.Engine = fmt.Sprintf("raw CUDA kernels (NVRTC %s) + cuBLASLt %d (%s)", g.info.Arch, g.lt.GetVersion(), g.lt.Soname)
	return g, nil
}

// compileCached returns the cubin of kernels.Source for arch, from cacheDir when a file
// keyed by the source hash, the arch and the NVRTC version exists, else compiled by NVRTC
// (and written there; a cache that cannot be written only costs a recompilation).
func compileCached(arch, cacheDir string, log *slog.Logger) ([]byte, error) {
	nv, err := driver.OpenNVRTC()
	if err != nil {
		return nil, err
	}
	var maj, min int32
	nv.Version(&maj, &min)
	key := sha256.Sum256([]byte(fmt.Sprintf("%s|%s|nvrtc %d.%d", kernels.Hash(), arch, maj, min)))
	path := ""
	if cacheDir != "" {
		path = filepath.Join(cacheDir, hex.EncodeToString(key[:16])+"."+arch+".cubin")
		if b, err := os.ReadFile(path); err == nil && len(b) > 0 {
			return b, nil
		}
	}
	cubin, clog, err := nv.Compile(kernels.Source, "kernels.cu", arch)
	if err != nil {
		return nil, err
	}
	if clog != "" && log != nil {
		log.Info("nvrtc", "arch", arch, "log", clog)
	}
	if path != "" {
		if err := os.MkdirAll(cacheDir, 0o755); err == nil {
			_ = os.WriteFile(path, cubin, 0o644)
		}
	}
	return cubin, nil
}

// CompileCheck compiles kernels.Source with NVRTC for arch without a GPU (make cuda-check).
func CompileCheck(arch string) (log string, err error) {
	nv, err := driver.OpenNVRTC()
	if err != nil {
		return "", err
	}
	_, log, err = nv.Compile(kernels.Source, "kernels.cu", arch)
	return log, err
}

func firstErr(errs ...error) error {
	for _, e := range errs {
		if e != nil {
			return e
		}
	}
	return nil
}

// bind makes the context current on this OS thread; the caller holds g.mu and defers unbind.
func (g *GPU) bind() func() {
	g.mu.Lock()
	runtime.LockOSThread()
	_ = g.drv.CtxSetCurrent(g.ctx)
	return func() {
		runtime.UnlockOSThread()
		g.mu.Unlock()
	}
}

// Info implements Device.
func (g *GPU) Info() Info { return g.info }

// Alloc implements Device.
func (g *GPU) Alloc(bytes int) (Ptr, error) {
	defer g.bind()()
	var p uint64
	if err := g.drv.Check("cuMemAlloc", g.drv.MemAlloc(&p, uint64(max(bytes, 1)))); err != nil {
		return 0, fmt.Errorf("allocating %d bytes: %w", bytes, err)
	}
	return Ptr(p), nil
}

// Free implements Device.
func (g *GPU) Free(p Ptr) error {
	defer g.bind()()
	return g.drv.Check("cuMemFree", g.drv.MemFree(uint64(p)))
}

// HtoD implements Device (synchronous).
func (g *GPU) HtoD(dst Ptr, src []byte) error {
	if len(src) == 0 {
		return nil
	}
	defer g.bind()()
	if err := g.drv.Check("cuStreamSynchronize", g.drv.StreamSynchronize(g.strm)); err != nil {
		return err
	}
	return g.drv.Check("cuMemcpyHtoD", g.drv.MemcpyHtoD(uint64(dst), unsafe.Pointer(&src[0]), uint64(len(src))))
}

// DtoH implements Device (synchronous: waits for the stream first).
func (g *GPU) DtoH(dst []byte, src Ptr) error {
	if len(dst) == 0 {
		return nil
	}
	defer g.bind()()
	if err := g.drv.Check("cuStreamSynchronize", g.drv.StreamSynchronize(g.strm)); err != nil {
		return err
	}
	return g.drv.Check("cuMemcpyDtoH", g.drv.MemcpyDtoH(unsafe.Pointer(&dst[0]), uint64(src), uint64(len(dst))))
}

// Zero implements Device (on the stream).
func (g *GPU) Zero(p Ptr, bytes int) error {
	defer g.bind()()
	return g.drv.Check("cuMemsetD8Async", g.drv.MemsetD8Async(uint64(p), 0, uint64(bytes), g.strm))
}

// Launch implements Device: arguments are written into a pinned arena (8 bytes each, a
// pointer table after them) that cuLaunchKernel copies before returning.
func (g *GPU) Launch(name string, grid, block Dim3, args ...any) error {
	if err := CheckArgs(name, grid, block, args); err != nil {
		return err
	}
	defer g.bind()()
	return g.launch(name, grid, block, args)
}

func (g *GPU) launch(name string, grid, block Dim3, args []any) error {
	if 16*len(args) > argArena {
		return fmt.Errorf("kernel %s: too many arguments", name)
	}
	arena := unsafe.Slice((*byte)(g.args), argArena)
	table := unsafe.Add(g.args, 8*len(args))
	for i, a := range args {
		var v uint64
		switch x := a.(type) {
		case Ptr:
			v = uint64(x)
		case int32:
			v = uint64(uint32(x))
		case int64:
			v = uint64(x)
		case float32:
			v = uint64(math.Float32bits(x))
		case float64:
			v = math.Float64bits(x)
		case uint64:
			v = x
		}
		binary.LittleEndian.PutUint64(arena[8*i:], v)
		binary.LittleEndian.PutUint64(arena[8*len(args)+8*i:], uint64(uintptr(g.args))+uint64(8*i))
	}
	r := g.drv.LaunchKernel(g.fns[name], uint32(grid.X), uint32(grid.Y), uint32(grid.Z),
		uint32(block.X), uint32(block.Y), uint32(block.Z), 0, g.strm, table, 0)
	return g.drv.Check("cuLaunchKernel "+name, r)
}

// SetBF16 implements Device.
func (g *GPU) SetBF16(on bool) { g.bf16 = on }

// Gemm implements Device with cuBLASLt, making the call ltMatmul describes (B is
// cuBLASLt's first operand). In BF16 mode A and B are first cast to bf16 scratch buffers
// (cast_bf16) and the product accumulates in fp32.
func (g *GPU) Gemm(p Gemm) error {
	defer g.bind()()
	a, b := p.A, p.B
	if g.bf16 {
		rowsA, rowsB := p.M, p.K
		if p.TransA {
			rowsA = p.K
		}
		if p.TransB {
			rowsB = p.N
		}
		var err error
		if a, err = g.castTo(0, p.A, rowsA*p.LDA); err != nil {
			return err
		}
		if b, err = g.castTo(1, p.B, rowsB*p.LDB); err != nil {
			return err
		}
	}
	call := ltMatmul(p, a, b, g.bf16)
	plan, err := g.plan(call.key())
	if err != nil {
		return err
	}
	alpha, beta := call.Alpha, call.Beta
	r := g.lt.Matmul(g.ltH, plan.desc, unsafe.Pointer(&alpha), uint64(call.A), plan.a, uint64(call.B), plan.b,
		unsafe.Pointer(&beta), uint64(call.C), plan.c, uint64(call.C), plan.c, unsafe.Pointer(&plan.algo[0]),
		uint64(g.ws), g.wsN, g.strm)
	if r != 0 {
		return fmt.Errorf("cublasLtMatmul %+v: status %d", call.key(), r)
	}
	return nil
}

func (g *GPU) castTo(slot int, src Ptr, n int) (Ptr, error) {
	if g.castN[slot] < n {
		if g.cast[slot] != 0 {
			_ = g.drv.MemFree(uint64(g.cast[slot]))
		}
		var p uint64
		if err := g.drv.Check("cuMemAlloc (bf16 scratch)", g.drv.MemAlloc(&p, uint64(2*n))); err != nil {
			return 0, err
		}
		g.cast[slot], g.castN[slot] = Ptr(p), n
	}
	err := g.launch("cast_bf16", D1(Blocks(n, kernels.EltBlock)), D1(kernels.EltBlock), []any{g.cast[slot], src, int64(n)})
	return g.cast[slot], err
}

// plan builds (once per call shape) the matmul descriptor and layouts of k and a heuristic
// algorithm.
func (g *GPU) plan(k LtMatmul) (*gemmPlan, error) {
	if p, ok := g.algos[k]; ok {
		return p, nil
	}
	lt := g.lt
	p := &gemmPlan{}
	if r := lt.MatmulDescCreate(&p.desc, driver.ComputeF32, driver.CudaR32F); r != 0 {
		return nil, fmt.Errorf("cublasLtMatmulDescCreate: status %d", r)
	}
	lt.MatmulDescSetAttribute(p.desc, driver.MatmulDescTransA, unsafe.Pointer(&k.TransA), 4)
	lt.MatmulDescSetAttribute(p.desc, driver.MatmulDescTransB, unsafe.Pointer(&k.TransB), 4)
	for _, l := range []struct {
		out    *uintptr
		layout LtLayout
	}{{&p.a, k.ALayout}, {&p.b, k.BLayout}, {&p.c, k.CLayout}} {
		if r := lt.MatrixLayoutCreate(l.out, l.layout.Type, l.layout.Rows, l.layout.Cols, l.layout.LD); r != 0 {
			return nil, fmt.Errorf("cublasLtMatrixLayoutCreate: status %d", r)
		}
	}
	var pref uintptr
	if r := lt.MatmulPreferenceCreate(&pref); r != 0 {
		return nil, fmt.Errorf("cublasLtMatmulPreferenceCreate: status %d", r)
	}
	defer lt.MatmulPreferenceDestroy(pref)
	ws := g.wsN
	lt.MatmulPreferenceSetAttr(pref, driver.PrefMaxWorkspaceBytes, unsafe.Pointer(&ws), 8)
	var got int32
	if r := lt.MatmulAlgoGetHeuristic(g.ltH, p.desc, p.a, p.b, p.c, p.c, pref, 1, unsafe.Pointer(&p.algo[0]), &got); r != 0 || got == 0 {
		return nil, fmt.Errorf("cublasLtMatmulAlgoGetHeuristic %+v: status %d, %d algorithms", k, r, got)
	}
	g.algos[k] = p
	return p, nil
}

// Sync implements Device.
func (g *GPU) Sync() error {
	defer g.bind()()
	return g.drv.Check("cuStreamSynchronize", g.drv.StreamSynchronize(g.strm))
}

// Close implements Device.
func (g *GPU) Close() error {
	defer g.bind()()
	_ = g.drv.StreamSynchronize(g.strm)
	for _, p := range g.algos {
		g.lt.MatmulDescDestroy(p.desc)
		g.lt.MatrixLayoutDestroy(p.a)
		g.lt.MatrixLayoutDestroy(p.b)
		g.lt.MatrixLayoutDestroy(p.c)
	}
	for _, c := range g.cast {
		if c != 0 {
			_ = g.drv.MemFree(uint64(c))
		}
	}
	_ = g.drv.MemFree(uint64(g.ws))
	g.lt.Destroy(g.ltH)
	_ = g.drv.ModuleUnload(g.mod)
	_ = g.drv.MemFreeHost(g.args)
	_ = g.drv.StreamDestroy(g.strm)
	return g.drv.Check("cuDevicePrimaryCtxRelease", g.drv.DevicePrimaryCtxRelease(g.dev))
}

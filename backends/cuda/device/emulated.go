package device

import (
	"cmp"
	"crypto/sha256"
	"embed"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"unsafe"

	"github.com/ebitengine/purego"
	"golang.org/x/sys/unix"

	"github.com/mypt/mypt/backends/cuda/driver"
	"github.com/mypt/mypt/backends/cuda/kernels"
)

// emuSources are the CUDA execution model (cuda_emu.h), the runtime that schedules blocks
// and threads (emu_runtime.cc) and the kernel table's trampolines (emu_table.h).
//
//go:embed emu/cuda_emu.h emu/emu_runtime.cc emu/emu_table.h
var emuSources embed.FS

// Limits of an H100/H200 a launch is held to (the emulator itself has none).
const (
	maxStaticShared  = 48 << 10  // bytes of static __shared__ per block
	maxDynamicShared = 227 << 10 // bytes of dynamic shared memory with the opt-in
	maxBlockZ        = 64
)

// Schedule is the order in which the emulated device runs a block's threads between
// barriers: a missing __syncthreads() shows as a wrong result in one order or another.
type Schedule struct {
	// Order is "forward" (thread 0 first), "reverse" or "random".
	Order string
	// Seed seeds the random order (it is replayable).
	Seed uint64
}

// ParseSchedule reads "forward", "reverse" or "random[:SEED]" (MYPT_CUDA_EMU_SCHEDULE;
// SEED a decimal uint64).
func ParseSchedule(s string) (Schedule, error) {
	order, seed, hasSeed := strings.Cut(s, ":")
	sc := Schedule{Order: cmp.Or(order, "forward")}
	switch sc.Order {
	case "forward", "reverse":
		if hasSeed {
			return sc, fmt.Errorf("schedule %q: only random takes a seed", s)
		}
	case "random":
		if hasSeed {
			var err error
			if sc.Seed, err = strconv.ParseUint(seed, 10, 64); err != nil {
				return sc, fmt.Errorf("schedule %q: seed: %w", s, err)
			}
		}
	default:
		return sc, fmt.Errorf("schedule %q: want forward, reverse or random[:SEED]", s)
	}
	return sc, nil
}

func (s Schedule) code() int32 {
	return map[string]int32{"forward": 0, "reverse": 1, "random": 2}[s.Order]
}

// EmulatedOptions configure an Emulated device.
type EmulatedOptions struct {
	// CacheDir holds the compiled emulator libraries (by source hash).
	CacheDir string
	// Compiler is the host C++ compiler; empty means $MYPT_CUDA_EMU_CXX, else the first of
	// clang++-19, clang++ and g++ on $PATH.
	Compiler string
	// Threads is the number of OS threads running blocks; 0 means one per core.
	Threads int
	// Schedule orders the threads of a block between barriers.
	Schedule Schedule
	// Source is the kernel source to run; empty means kernels.Source (tests give mutants).
	Source string
	// Library is a prebuilt emulator library (BuildEmulator's output) to load instead of
	// compiling one: a GPU machine may have no C++ compiler. Loading it checks that it was
	// built from Source and from this package's emulator sources.
	Library string
	Logger  *slog.Logger
}

// Emulated is a Device that runs kernels.cu itself on the CPU: the same source the GPU path
// compiles with NVRTC, compiled by a host C++ compiler against the CUDA execution model of
// device/emu (blocks in parallel on OS threads; a block's threads as fibers, so
// __syncthreads() is a real barrier and __shared__ memory is per block; warp collectives)
// into a shared library loaded with purego. Device memory is host memory with guard pages
// after each allocation, so an out-of-bounds access stops the process with the kernel's
// name and the thread's coordinates. Launches are held to an H100's limits, and products
// go through the same cuBLASLt call the GPU device makes (ltMatmul), interpreted by
// ReferenceLt, with bf16 inputs made by the cast_bf16 kernel as on the GPU.
type Emulated struct {
	mu       sync.Mutex
	info     Info
	schedule Schedule
	launch   func(name string, grid, block *uint32, dynShared uint64, args unsafe.Pointer, schedule int32,
		seed uint64, err *byte, errLen int32) int32
	sigs   map[string]string // the kernels of the source it runs, and their parameters
	shared map[string]int    // their static shared memory
	arena  []byte            // C-visible argument slots (mmap'ed, no Go pointers inside)
	allocs []emuAlloc
	bf16   bool
	cast   [2]Ptr // bf16 copies of a product's operands
	castN  [2]int
	trace  []string
}

// emuAlloc is one allocation: a mapping whose last page is a guard page, the data ending
// where the guard begins.
type emuAlloc struct {
	mapping []byte
	base    Ptr // address of the data, mapping[off]
	off     int
	bytes   int
}

var _ Device = (*Emulated)(nil)

// NewEmulated builds (or finds in the cache) the emulator library for kernels.cu, or
// takes opts.Library, and opens a device on it.
func NewEmulated(opts EmulatedOptions) (*Emulated, error) {
	src := cmp.Or(opts.Source, kernels.Source)
	e := &Emulated{}
	var err error
	if e.sigs, err = kernels.ParseSignatures(src); err != nil {
		return nil, fmt.Errorf("emulated device: kernel source: %w", err)
	}
	if e.shared, err = kernels.ParseStaticShared(src); err != nil {
		return nil, fmt.Errorf("emulated device: kernel source: %w", err)
	}
	lib, built := opts.Library, "prebuilt "+filepath.Base(opts.Library)
	if lib == "" {
		cxx, err := EmulatorCompiler(opts.Compiler)
		if err != nil {
			return nil, err
		}
		if lib, err = buildEmulator(cxx, opts); err != nil {
			return nil, err
		}
		built = filepath.Base(cxx)
	}
	threads, err := e.load(lib, opts.Threads, src)
	if err != nil {
		return nil, err
	}
	arena, err := unix.Mmap(-1, 0, 4096, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
	if err != nil {
		return nil, fmt.Errorf("emulated device: argument arena: %w", err)
	}
	e.arena, e.schedule = arena, opts.Schedule
	e.schedule.Order = cmp.Or(e.schedule.Order, "forward")
	e.info = Info{Kind: "cuda-emulated", Name: fmt.Sprintf("emulated CUDA device (kernels.cu on the CPU, %s, %d threads, %s order)",
		built, threads, e.schedule.Order), Arch: "sm_90", SMs: threads,
		Engine: "emulated device: kernels.cu compiled by " + built + ", reference cuBLASLt"}
	return e, nil
}

// EmulatorCompiler returns the host C++ compiler the emulated device builds with: want, or
// $MYPT_CUDA_EMU_CXX, or the first of clang++-19, clang++ and g++ on $PATH.
func EmulatorCompiler(want string) (string, error) {
	want = cmp.Or(want, os.Getenv("MYPT_CUDA_EMU_CXX"))
	candidates := []string{"clang++-19", "clang++", "g++"}
	if want != "" {
		candidates = []string{want}
	}
	for _, c := range candidates {
		if p, err := exec.LookPath(c); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("emulated CUDA device: no C++ compiler (%s) on $PATH: install clang-19 or g++", strings.Join(candidates, ", "))
}

// emuFlags compile the emulator: C++20 (std::source_location), optimised, and without
// _FORTIFY_SOURCE, whose longjmp check refuses the fiber switches.
var emuFlags = []string{"-std=c++20", "-O2", "-fPIC", "-shared", "-pthread", "-U_FORTIFY_SOURCE", "-Wall", "-Werror"}

// BuildEmulator compiles the emulator library for opts.Source (default kernels.cu) with
// opts.Compiler into opts.CacheDir (default os.TempDir()), unless it is there already, and
// returns its path: what EmulatedOptions.Library loads on a machine without a compiler.
func BuildEmulator(opts EmulatedOptions) (string, error) {
	cxx, err := EmulatorCompiler(opts.Compiler)
	if err != nil {
		return "", err
	}
	return buildEmulator(cxx, opts)
}

// emuRuntime reads the emulator sources (device/emu) by file name, and their hash.
func emuRuntime() (map[string][]byte, string, error) {
	files := map[string][]byte{}
	err := fs.WalkDir(emuSources, "emu", func(path string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			files[filepath.Base(path)], err = emuSources.ReadFile(path)
		}
		return err
	})
	if err != nil {
		return nil, "", fmt.Errorf("emulator sources: %w", err)
	}
	return files, hashFiles(files), nil
}

// hashFiles is the hex SHA-256 of files, by name and content.
func hashFiles(files map[string][]byte) string {
	h := sha256.New()
	for _, name := range slices.Sorted(maps.Keys(files)) {
		fmt.Fprintf(h, "%s %d\n", name, len(files[name]))
		h.Write(files[name])
	}
	return hex.EncodeToString(h.Sum(nil))
}

// sourceHash is the hex SHA-256 of a kernel source (kernels.Hash for kernels.cu).
func sourceHash(src string) string {
	h := sha256.Sum256([]byte(src))
	return hex.EncodeToString(h[:])
}

// buildEmulator compiles opts.Source (a kernels.cu) with the emulator sources into
// cacheDir/mypt-cuda-emu-<hash>.so, unless that file exists.
func buildEmulator(cxx string, opts EmulatedOptions) (string, error) {
	log := cmp.Or(opts.Logger, slog.New(slog.DiscardHandler))
	cacheDir, src := cmp.Or(opts.CacheDir, os.TempDir()), cmp.Or(opts.Source, kernels.Source)
	files, runtimeHash, err := emuRuntime()
	if err != nil {
		return "", err
	}
	files["kernels.cu"], files["emu_kernels.cc"] = []byte(src), kernelTable(src, runtimeHash)
	key := sha256.Sum256([]byte(fmt.Sprintln(cxx, emuFlags, hashFiles(files))))
	out := filepath.Join(cacheDir, "mypt-cuda-emu-"+hex.EncodeToString(key[:8])+".so")
	if _, err := os.Stat(out); err == nil {
		return out, nil
	}
	dir, err := os.MkdirTemp("", "mypt-cuda-emu-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(dir)
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			return "", err
		}
	}
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return "", fmt.Errorf("emulated device: cache: %w", err)
	}
	tmp := filepath.Join(dir, "emu.so")
	args := append(slices.Clone(emuFlags), "-o", tmp, "emu_kernels.cc", "emu_runtime.cc")
	cmd := exec.Command(cxx, args...)
	cmd.Dir = dir
	if msg, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("emulated device: compiling kernels.cu with %s: %w\n%s", cxx, err, msg)
	}
	log.Debug("compiled the emulated CUDA device", "compiler", cxx, "library", out)
	// Rename into place: a concurrent build of the same hash writes the same bytes.
	data, err := os.ReadFile(tmp)
	if err != nil {
		return "", err
	}
	part := out + fmt.Sprintf(".%d.tmp", os.Getpid())
	if err := os.WriteFile(part, data, 0o755); err != nil {
		return "", err
	}
	return out, os.Rename(part, out)
}

// kernelTable generates emu_kernels.cc: kernels.cu compiled against the execution model,
// the table of its kernels by name (from the kernel declarations), and the hashes of the
// kernel source and of the emulator sources it was built from, which loading a prebuilt
// library checks (a stale one would run other kernels than the GPU's, or crash).
func kernelTable(src, runtimeHash string) []byte {
	var b strings.Builder
	b.WriteString("// Generated by backends/cuda/device (emulated.go): kernels.cu on the emulated device.\n")
	b.WriteString("#include \"cuda_emu.h\"\n#include \"kernels.cu\"\n#include \"emu_table.h\"\n\n")
	b.WriteString("extern \"C\" const EmuKernel emu_kernel_table[] = {\n")
	sigs, _ := kernels.ParseSignatures(src) // a source without kernels fails to compile
	for _, n := range slices.Sorted(maps.Keys(sigs)) {
		fmt.Fprintf(&b, "    EMU_KERNEL(%s),\n", n)
	}
	b.WriteString("};\nextern \"C\" const int emu_kernel_table_len = sizeof(emu_kernel_table) / sizeof(emu_kernel_table[0]);\n")
	fmt.Fprintf(&b, "extern \"C\" const char* emu_source_sha256() { return \"%s\"; }\n", sourceHash(src))
	fmt.Fprintf(&b, "extern \"C\" const char* emu_runtime_sha256() { return \"%s\"; }\n", runtimeHash)
	return []byte(b.String())
}

// load opens the library at path (dlopen gives every device of a process the same one),
// checks that it was built from src and this package's emulator sources, and starts its
// pool of threads OS threads, or finds it started; it returns the pool's size.
func (e *Emulated) load(path string, threads int, src string) (int, error) {
	_, runtimeHash, err := emuRuntime()
	if err != nil {
		return 0, err
	}
	h, err := purego.Dlopen(path, purego.RTLD_NOW|purego.RTLD_LOCAL)
	if err != nil {
		return 0, fmt.Errorf("emulated device: loading %s: %w", path, err)
	}
	var initFn func(threads int32) int32
	var srcHash, rtHash func() string
	for _, f := range []struct {
		ptr  any
		name string
	}{{&srcHash, "emu_source_sha256"}, {&rtHash, "emu_runtime_sha256"}, {&initFn, "emu_init"}, {&e.launch, "emu_launch"}} {
		addr, err := purego.Dlsym(h, f.name)
		if err != nil {
			_ = purego.Dlclose(h)
			return 0, fmt.Errorf("emulated device: %s is not an emulator library of this build (%s: %w): rebuild it (mypt-cuda-kernelcheck --build-emu)", path, f.name, err)
		}
		purego.RegisterFunc(f.ptr, addr)
	}
	for _, c := range []struct{ what, got, want string }{
		{"kernel source", srcHash(), sourceHash(src)},
		{"emulator sources", rtHash(), runtimeHash},
	} {
		if c.got != c.want {
			_ = purego.Dlclose(h)
			return 0, fmt.Errorf("emulated device: %s is stale: built from %s sha256 %s, this binary's is %s: rebuild it (mypt-cuda-kernelcheck --build-emu)",
				path, c.what, c.got, c.want)
		}
	}
	return int(initFn(int32(threads))), nil
}

// Info implements Device.
func (e *Emulated) Info() Info { return e.info }

// Alloc implements Device: a fresh mapping, the data right-aligned (16 bytes) against a
// guard page so that reading or writing past its end faults, and poisoned.
func (e *Emulated) Alloc(bytes int) (Ptr, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.allocLocked(bytes)
}

func (e *Emulated) allocLocked(bytes int) (Ptr, error) {
	if bytes < 0 {
		return 0, fmt.Errorf("alloc of %d bytes", bytes)
	}
	page := unix.Getpagesize()
	data := (bytes + 15) &^ 15
	n := (data+page-1)/page*page + page
	m, err := unix.Mmap(-1, 0, n, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
	if err != nil {
		return 0, fmt.Errorf("emulated device: alloc of %d bytes: %w", bytes, err)
	}
	if err := unix.Mprotect(m[n-page:], unix.PROT_NONE); err != nil {
		_ = unix.Munmap(m)
		return 0, fmt.Errorf("emulated device: guard page: %w", err)
	}
	off := n - page - data
	// cuMemAlloc leaves memory uninitialised: poison it (all-ones bytes: NaN as float32,
	// -1 as int32) so that code counting on zeroed buffers fails here as it may on a GPU.
	poison(m[:n-page])
	a := emuAlloc{mapping: m, base: Ptr(uintptr(unsafe.Pointer(&m[off]))), off: off, bytes: bytes}
	i := sort.Search(len(e.allocs), func(i int) bool { return e.allocs[i].base > a.base })
	e.allocs = slices.Insert(e.allocs, i, a)
	return a.base, nil
}

// poison fills b with all-ones bytes (doubling copies: allocations reach megabytes).
func poison(b []byte) {
	if len(b) == 0 {
		return
	}
	b[0] = 0xff
	for n := 1; n < len(b); n *= 2 {
		copy(b[n:], b[:n])
	}
}

// Free implements Device.
func (e *Emulated) Free(p Ptr) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.freeLocked(p)
}

func (e *Emulated) freeLocked(p Ptr) error {
	i := sort.Search(len(e.allocs), func(i int) bool { return e.allocs[i].base >= p })
	if i == len(e.allocs) || e.allocs[i].base != p {
		return fmt.Errorf("free of %#x: not an allocation", uint64(p))
	}
	err := unix.Munmap(e.allocs[i].mapping)
	e.allocs = slices.Delete(e.allocs, i, i+1)
	return err
}

// bytesAt returns the memory from p to the end of its allocation; e.mu is held.
func (e *Emulated) bytesAt(p Ptr) ([]byte, error) {
	i := sort.Search(len(e.allocs), func(i int) bool { return e.allocs[i].base > p }) - 1
	if p == 0 || i < 0 || p >= e.allocs[i].base+Ptr(e.allocs[i].bytes) {
		return nil, fmt.Errorf("address %#x is outside every allocation", uint64(p))
	}
	a := e.allocs[i]
	return a.mapping[a.off+int(p-a.base) : a.off+a.bytes], nil
}

func (e *Emulated) copyAt(what string, p Ptr, n int, do func(mem []byte)) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	mem, err := e.bytesAt(p)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if len(mem) < n {
		return fmt.Errorf("%s of %d bytes overruns the allocation at %#x (%d bytes left)", what, n, uint64(p), len(mem))
	}
	do(mem[:n])
	return nil
}

// HtoD implements Device.
func (e *Emulated) HtoD(dst Ptr, src []byte) error {
	return e.copyAt("HtoD", dst, len(src), func(m []byte) { copy(m, src) })
}

// DtoH implements Device.
func (e *Emulated) DtoH(dst []byte, src Ptr) error {
	return e.copyAt("DtoH", src, len(dst), func(m []byte) { copy(dst, m) })
}

// Zero implements Device.
func (e *Emulated) Zero(p Ptr, bytes int) error {
	return e.copyAt("zero", p, bytes, func(m []byte) { clear(m) })
}

// Launch implements Device: the arguments are checked against the kernel's signature and
// the launch against an H100's limits (both read from the source the device runs), then
// the kernel's own code runs.
func (e *Emulated) Launch(name string, grid, block Dim3, args ...any) error {
	if err := checkArgs(e.sigs, name, grid, block, args); err != nil {
		return err
	}
	if block.Z > maxBlockZ {
		return fmt.Errorf("kernel %s: block z %d exceeds %d", name, block.Z, maxBlockZ)
	}
	if s := e.shared[name]; s > maxStaticShared {
		return fmt.Errorf("kernel %s: %d bytes of static shared memory exceed the %d a block may declare", name, s, maxStaticShared)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.trace = append(e.trace, name)
	return e.launchLocked(name, grid, block, 0, args)
}

// launchLocked marshals args into the arena (slot i at 8·(len+i), its address at 8·i)
// and runs the kernel; e.mu is held.
func (e *Emulated) launchLocked(name string, grid, block Dim3, dynShared int, args []any) error {
	if dynShared > maxDynamicShared {
		return fmt.Errorf("kernel %s: %d bytes of dynamic shared memory exceed the %d opt-in limit", name, dynShared, maxDynamicShared)
	}
	if 16*len(args) > len(e.arena) {
		return fmt.Errorf("kernel %s: too many arguments", name)
	}
	base := uintptr(unsafe.Pointer(&e.arena[0]))
	for i, a := range args {
		binary.LittleEndian.PutUint64(e.arena[8*(len(args)+i):], argBits(a))
		binary.LittleEndian.PutUint64(e.arena[8*i:], uint64(base)+uint64(8*(len(args)+i)))
	}
	g := [3]uint32{uint32(grid.X), uint32(grid.Y), uint32(grid.Z)}
	b := [3]uint32{uint32(block.X), uint32(block.Y), uint32(block.Z)}
	msg := make([]byte, 1024)
	if e.launch(name, &g[0], &b[0], uint64(dynShared), unsafe.Pointer(&e.arena[0]), e.schedule.code(), e.schedule.Seed,
		&msg[0], int32(len(msg))) != 0 {
		return errors.New(driver.CString(&msg[0]))
	}
	return nil
}

// argBits is an argument's 8-byte slot, as the GPU device marshals it.
func argBits(a any) uint64 {
	switch x := a.(type) {
	case Ptr:
		return uint64(x)
	case int32:
		return uint64(uint32(x))
	case int64:
		return uint64(x)
	case float32:
		return uint64(math.Float32bits(x))
	case float64:
		return math.Float64bits(x)
	case uint64:
		return x
	}
	return 0
}

// Gemm implements Device: the cuBLASLt call the GPU device makes for g (ltMatmul),
// computed by ReferenceLt; in BF16 mode the operands are first cast by the cast_bf16
// kernel into scratch buffers, as on the GPU.
func (e *Emulated) Gemm(g Gemm) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.trace = append(e.trace, "gemm")
	a, b := g.A, g.B
	if e.bf16 {
		var err error
		if a, err = e.castLocked(0, g.A, pick(g.TransA, g.K, g.M)*g.LDA); err != nil {
			return err
		}
		if b, err = e.castLocked(1, g.B, pick(g.TransB, g.N, g.K)*g.LDB); err != nil {
			return err
		}
	}
	return ReferenceLt(ltMatmul(g, a, b, e.bf16), e.bytesAt)
}

// castLocked converts n floats at src to bf16 in scratch slot with the cast_bf16 kernel.
func (e *Emulated) castLocked(slot int, src Ptr, n int) (Ptr, error) {
	if e.castN[slot] < n {
		if e.cast[slot] != 0 {
			_ = e.freeLocked(e.cast[slot])
		}
		p, err := e.allocLocked(2 * n)
		if err != nil {
			return 0, err
		}
		e.cast[slot], e.castN[slot] = p, n
	}
	e.trace = append(e.trace, "cast_bf16")
	err := e.launchLocked("cast_bf16", D1(Blocks(n, kernels.EltBlock)), D1(kernels.EltBlock), 0, []any{e.cast[slot], src, int64(n)})
	return e.cast[slot], err
}

// SetBF16 implements Device.
func (e *Emulated) SetBF16(on bool) { e.bf16 = on }

// Sync implements Device (launches are synchronous).
func (e *Emulated) Sync() error { return nil }

// Close implements Device: it frees every allocation (the library stays loaded).
func (e *Emulated) Close() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	var errs []error
	for _, a := range e.allocs {
		errs = append(errs, unix.Munmap(a.mapping))
	}
	e.allocs, e.cast, e.castN = nil, [2]Ptr{}, [2]int{}
	if e.arena != nil {
		errs = append(errs, unix.Munmap(e.arena))
		e.arena = nil
	}
	return errors.Join(errs...)
}

// Trace returns the kernels launched so far ("gemm" for products), in order, and clears it.
func (e *Emulated) Trace() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	t := e.trace
	e.trace = nil
	return t
}

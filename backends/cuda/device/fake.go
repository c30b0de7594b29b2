package device

import (
	"fmt"
	"math"
	"sort"
	"sync"
	"unsafe"
)

// Fake is a Device in host memory: kernels run as their Go twins (twins.go) one block after
// another, threads of a block phase by phase between barriers; Gemm is a plain loop
// (with bf16 rounding of its inputs in BF16 mode). It records every launch in order.
type Fake struct {
	mu     sync.Mutex
	allocs []fakeAlloc // sorted by base
	next   Ptr
	bf16   bool
	trace  []string
	live   int
	peak   int
}

type fakeAlloc struct {
	base  Ptr
	bytes int
	mem   []uint64 // 8-byte aligned backing
}

// NewFake returns an empty fake device.
func NewFake() *Fake { return &Fake{next: 1 << 20} }

var _ Device = (*Fake)(nil)

// Info implements Device.
func (f *Fake) Info() Info {
	return Info{Kind: "cuda-fake", Name: "fake CUDA device (Go twins of the kernels)", Arch: "sm_90", SMs: 1,
		Engine: "fake device: Go twins of the CUDA kernels, Go loop matmul"}
}

// Alloc implements Device (256-byte aligned, with a guard gap between allocations).
func (f *Fake) Alloc(bytes int) (Ptr, error) {
	if bytes < 0 {
		return 0, fmt.Errorf("alloc of %d bytes", bytes)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	a := fakeAlloc{base: f.next, bytes: bytes, mem: make([]uint64, (bytes+7)/8)}
	f.next += Ptr((bytes+255)/256*256 + 256)
	f.allocs = append(f.allocs, a)
	f.live += bytes
	f.peak = max(f.peak, f.live)
	return a.base, nil
}

// Free implements Device.
func (f *Fake) Free(p Ptr) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	i := sort.Search(len(f.allocs), func(i int) bool { return f.allocs[i].base >= p })
	if i == len(f.allocs) || f.allocs[i].base != p {
		return fmt.Errorf("free of %#x: not an allocation", uint64(p))
	}
	f.live -= f.allocs[i].bytes
	f.allocs = append(f.allocs[:i], f.allocs[i+1:]...)
	return nil
}

// bytesAt returns the memory from p to the end of its allocation (nil for p == 0); it
// panics on an address outside every allocation, as a GPU would fault.
func (f *Fake) bytesAt(p Ptr) []byte {
	if p == 0 {
		return nil
	}
	i := sort.Search(len(f.allocs), func(i int) bool { return f.allocs[i].base > p }) - 1
	if i < 0 || p >= f.allocs[i].base+Ptr(f.allocs[i].bytes) {
		panic(fmt.Sprintf("fake device: address %#x is outside every allocation", uint64(p)))
	}
	a := f.allocs[i]
	all := unsafe.Slice((*byte)(unsafe.Pointer(&a.mem[0])), a.bytes)
	return all[p-a.base:]
}

func (f *Fake) f32(p Ptr) []float32 {
	b := f.bytesAt(p)
	if b == nil {
		return nil
	}
	return unsafe.Slice((*float32)(unsafe.Pointer(&b[0])), len(b)/4)
}

func (f *Fake) i32(p Ptr) []int32 {
	b := f.bytesAt(p)
	if b == nil {
		return nil
	}
	return unsafe.Slice((*int32)(unsafe.Pointer(&b[0])), len(b)/4)
}

func (f *Fake) f64(p Ptr) []float64 {
	b := f.bytesAt(p)
	if b == nil {
		return nil
	}
	return unsafe.Slice((*float64)(unsafe.Pointer(&b[0])), len(b)/8)
}

func (f *Fake) u16(p Ptr) []uint16 {
	b := f.bytesAt(p)
	if b == nil {
		return nil
	}
	return unsafe.Slice((*uint16)(unsafe.Pointer(&b[0])), len(b)/2)
}

// HtoD implements Device.
func (f *Fake) HtoD(dst Ptr, src []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	d := f.bytesAt(dst)
	if len(d) < len(src) {
		return fmt.Errorf("HtoD of %d bytes overruns the allocation at %#x", len(src), uint64(dst))
	}
	copy(d, src)
	return nil
}

// DtoH implements Device.
func (f *Fake) DtoH(dst []byte, src Ptr) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.bytesAt(src)
	if len(s) < len(dst) {
		return fmt.Errorf("DtoH of %d bytes overruns the allocation at %#x", len(dst), uint64(src))
	}
	copy(dst, s)
	return nil
}

// Zero implements Device.
func (f *Fake) Zero(p Ptr, bytes int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	d := f.bytesAt(p)
	if len(d) < bytes {
		return fmt.Errorf("zero of %d bytes overruns the allocation at %#x", bytes, uint64(p))
	}
	clear(d[:bytes])
	return nil
}

// Launch implements Device: checks the arguments, then runs the twin block by block.
func (f *Fake) Launch(name string, grid, block Dim3, args ...any) (err error) {
	if err := CheckArgs(name, grid, block, args); err != nil {
		return err
	}
	tw, ok := twins[name]
	if !ok {
		return fmt.Errorf("fake device: kernel %s has no Go twin", name)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("kernel %s: %v", name, r)
		}
	}()
	f.trace = append(f.trace, name)
	k := &kctx{dev: f, grid: grid, block: block, args: args}
	for z := 0; z < grid.Z; z++ {
		for y := 0; y < grid.Y; y++ {
			for x := 0; x < grid.X; x++ {
				k.bid = Dim3{x, y, z}
				tw(k)
			}
		}
	}
	return nil
}

// Gemm implements Device with a plain loop accumulating in float32.
func (f *Fake) Gemm(g Gemm) (err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("gemm: %v", r)
		}
	}()
	f.trace = append(f.trace, "gemm")
	a, b, c := f.f32(g.A), f.f32(g.B), f.f32(g.C)
	in := func(x float32) float32 { return x }
	if f.bf16 {
		in = RoundBF16
	}
	for i := 0; i < g.M; i++ {
		for j := 0; j < g.N; j++ {
			var s float32
			for p := 0; p < g.K; p++ {
				var av, bv float32
				if g.TransA {
					av = a[p*g.LDA+i]
				} else {
					av = a[i*g.LDA+p]
				}
				if g.TransB {
					bv = b[j*g.LDB+p]
				} else {
					bv = b[p*g.LDB+j]
				}
				s += in(av) * in(bv)
			}
			if g.Beta == 0 {
				c[i*g.LDC+j] = g.Alpha * s
			} else {
				c[i*g.LDC+j] = g.Alpha*s + g.Beta*c[i*g.LDC+j]
			}
		}
	}
	return nil
}

// SetBF16 implements Device.
func (f *Fake) SetBF16(on bool) { f.bf16 = on }

// Sync implements Device.
func (f *Fake) Sync() error { return nil }

// Close implements Device.
func (f *Fake) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.allocs = nil
	f.live = 0
	return nil
}

// Trace returns the kernels launched so far ("gemm" for products), in order, and clears it.
func (f *Fake) Trace() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	t := f.trace
	f.trace = nil
	return t
}

// LiveBytes is the memory currently allocated; PeakBytes the most ever allocated at once.
func (f *Fake) LiveBytes() (live, peak int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.live, f.peak
}

// RoundBF16 rounds x to the nearest bfloat16 (ties to even), as cast_bf16 does.
func RoundBF16(x float32) float32 {
	return math.Float32frombits(uint32(BF16Bits(x)) << 16)
}

// BF16Bits is the bfloat16 encoding of x (round to nearest even, NaN kept).
func BF16Bits(x float32) uint16 {
	bits := math.Float32bits(x)
	if x != x {
		bits |= 1 << 22
	} else {
		bits += 0x7FFF + (bits>>16)&1
	}
	return uint16(bits >> 16)
}

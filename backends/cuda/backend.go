// Package cuda is mypt's CUDA backend (plugin mypt-backend-cuda): hand-written CUDA kernels
// (backends/cuda/kernels, compiled at run time by NVRTC) and cuBLASLt matrix products,
// driven from Go through run-time bindings (backends/cuda/driver, no cgo). Without a GPU the
// same kernels.cu runs on backends/cuda/device's emulated device (compiled by a host C++
// compiler against a CUDA execution model), which is how CI checks the kernels and the step
// orchestration against the PyTorch golden vectors. Semantics follow the
// CPU reference backend (docs/CPU_BACKEND.md); see docs/CUDA.md. The RPC shell is
// sdk/backendkit's; this package holds the device work.
package cuda

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/mypt/mypt/backends/cuda/device"
	"github.com/mypt/mypt/backends/cuda/kernels"
	"github.com/mypt/mypt/sdk"
	"github.com/mypt/mypt/sdk/backendkit"
	"github.com/mypt/mypt/sdk/paramstate"
	pb "github.com/mypt/mypt/sdk/proto/backendv1"
)

// Version is the backend's own semantic version.
const Version = "0.2.0"

// Options configure a backend.
type Options struct {
	// Device selects what the backend computes on: "gpu" (the default) or "emulated"
	// (kernels.cu itself run on the CPU by backends/cuda/device's emulator: how the kernels
	// are tested without a GPU; it needs a host C++ compiler).
	Device string
	// Schedule orders the threads of an emulated block between barriers (device.ParseSchedule:
	// "forward", "reverse", "random[:SEED]"); empty means forward.
	Schedule string
	// Ordinal is the GPU to use.
	Ordinal int
	// CacheDir holds compiled kernel modules; empty means $XDG_CACHE_HOME/mypt/cuda (or
	// ~/.cache/mypt/cuda).
	CacheDir string
	// Logger receives diagnostics; nil discards them.
	Logger *slog.Logger
	// NewDevice, when set, opens the device instead of Device: a tool's own device, such
	// as mypt-cuda-kernelcheck's comparison of the GPU with the emulated device. Shutdown
	// closes it.
	NewDevice func() (device.Device, error)
}

// OptionsFromEnv reads the plugin's environment: MYPT_CUDA_DEVICE (gpu or emulated) and
// MYPT_CUDA_EMU_SCHEDULE.
func OptionsFromEnv() Options {
	return Options{Device: os.Getenv("MYPT_CUDA_DEVICE"), Schedule: os.Getenv("MYPT_CUDA_EMU_SCHEDULE")}
}

// New returns a CUDA backend; the device is opened on the first call that needs it.
func New(opts Options) *backendkit.Backend {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.CacheDir == "" {
		if d, err := os.UserCacheDir(); err == nil {
			opts.CacheDir = filepath.Join(d, "mypt", "cuda")
		}
	}
	return backendkit.New(&engine{opts: opts})
}

// engine is the CUDA device, opened on first use and closed by Shutdown. The kit calls it
// under its lock.
type engine struct {
	opts Options
	dev  device.Device
}

// device opens the device once.
func (e *engine) device() (device.Device, error) {
	if e.dev != nil {
		return e.dev, nil
	}
	var err error
	switch {
	case e.opts.NewDevice != nil:
		e.dev, err = e.opts.NewDevice()
	case e.opts.Device == "emulated":
		var sched device.Schedule
		if sched, err = device.ParseSchedule(e.opts.Schedule); err == nil {
			e.dev, err = device.NewEmulated(device.EmulatedOptions{CacheDir: e.opts.CacheDir, Schedule: sched, Logger: e.opts.Logger})
		}
	case e.opts.Device == "" || e.opts.Device == "gpu":
		e.dev, err = device.OpenGPU(e.opts.Ordinal, e.opts.CacheDir, e.opts.Logger)
	default:
		err = fmt.Errorf("device %q: want gpu or emulated", e.opts.Device)
	}
	if err != nil {
		e.dev = nil
		return nil, sdk.FailedPrecondition("CUDA backend unavailable: %v", err)
	}
	return e.dev, nil
}

// Describe implements backendkit.Engine; without a GPU it fails with the reason.
func (e *engine) Describe(context.Context) (backendkit.Description, error) {
	d, err := e.device()
	if err != nil {
		return backendkit.Description{}, err
	}
	in := d.Info()
	return backendkit.Description{
		Name: "cuda", Version: Version, Engine: in.Engine,
		Devices: []*pb.Device{{Kind: in.Kind, Name: in.Name, MemoryBytes: in.MemoryBytes, Cores: uint32(in.SMs)}},
		// bf16 matrix products with fp32 accumulation, or fp32
		ComputeDTypes: []pb.DType{pb.DType_DTYPE_F32, pb.DType_DTYPE_BF16},
		// no kernel uses atomics: every reduction has a fixed order (kernels.cu)
		Features: append(backendkit.CompleteFeatures(), pb.Feature_FEATURE_DETERMINISTIC),
	}, nil
}

// Close implements backendkit.Closer: Shutdown releases the device.
func (e *engine) Close() error {
	if e.dev == nil {
		return nil
	}
	err := e.dev.Close()
	e.dev = nil
	return err
}

// session is one configured model on the device.
type session struct {
	model *model
	opt   backendkit.Optimizer
	state paramstate.Roles[device.Ptr] // the flat device buffers of the state streams
}

// NewSession implements backendkit.Engine.
func (e *engine) NewSession(_ context.Context, cfg backendkit.SessionConfig) (backendkit.Session, error) {
	a := cfg.Arch
	if a.HeadDim > kernels.MaxHeadDim {
		return nil, sdk.Unimplemented(fmt.Sprintf("head dim %d (the attention kernels take at most %d)", a.HeadDim, kernels.MaxHeadDim))
	}
	d, err := e.device()
	if err != nil {
		return nil, err
	}
	d.SetBF16(cfg.Compute == pb.DType_DTYPE_BF16)
	m, err := newModel(d, a, cfg.Layout)
	if err != nil {
		return nil, sdk.ResourceExhausted("%v", err)
	}
	if cfg.MaxBatch > 0 {
		if err := m.ensure(cfg.MaxBatch, cfg.MaxSeqLen); err != nil {
			m.free()
			return nil, sdk.ResourceExhausted("%v", err)
		}
	}
	return &session{model: m, opt: cfg.Optimizer,
		state: paramstate.Roles[device.Ptr]{Param: m.params, AdamM: m.adamM, AdamV: m.adamV, Grad: m.grads}}, nil
}

// MemoryBytes implements backendkit.MemoryReporter.
func (s *session) MemoryBytes() uint64 {
	mem := s.model.mem.size
	if s.model.x != nil {
		mem += s.model.x.mem.size
	}
	return uint64(mem)
}

// Close implements backendkit.Session.
func (s *session) Close() error {
	s.model.free()
	return nil
}

// Has implements paramstate.Store: a role's tensors are ranges of its flat device buffer,
// copied to and from the host.
func (s *session) Has(role pb.TensorRole) bool { return s.state.Has(role) }

// Load implements paramstate.Store.
func (s *session) Load(role pb.TensorRole, i int, values []float32) error {
	p := s.model.lay.Params[i]
	buf, _ := s.state.Of(role)
	if err := s.model.q.d.HtoD(buf.F32(p.Offset), le32(values)); err != nil {
		return fmt.Errorf("uploading %s: %w", p.Name, err)
	}
	return nil
}

// Values implements paramstate.Store.
func (s *session) Values(role pb.TensorRole, i int) ([]float32, error) {
	p := s.model.lay.Params[i]
	buf, _ := s.state.Of(role)
	host, err := s.model.readF32(buf.F32(p.Offset), p.Size)
	if err != nil {
		return nil, fmt.Errorf("downloading %s: %w", p.Name, err)
	}
	return host, nil
}

// ZeroGrads implements backendkit.Trainer.
func (s *session) ZeroGrads() error {
	return s.model.q.d.Zero(s.model.grads, 4*s.model.lay.Total)
}

// passOf is the forward pass over a kit batch.
func passOf(b *backendkit.Batch) *pass {
	return &pass{b: b.B, t: b.T, tokens: b.Tokens, pos: b.Positions, segs: b.Segments}
}

// ForwardBackward implements backendkit.Trainer.
func (s *session) ForwardBackward(_ context.Context, b *backendkit.Batch, gradScale float32, seed uint64) (backendkit.Totals, error) {
	m := s.model
	ps := passOf(b)
	ps.train, ps.seed = true, seed
	if err := m.forward(ps, nil); err != nil {
		return backendkit.Totals{}, err
	}
	tot, err := m.loss(b.B*b.T, b.Targets, b.Weights, float64(gradScale), true)
	if err != nil {
		return backendkit.Totals{}, err
	}
	return tot, m.backward(ps)
}

// OptimizerStep implements backendkit.Trainer.
func (s *session) OptimizerStep(_ context.Context, st backendkit.Step) (float64, error) {
	return s.model.adamStep(s.opt, st)
}

// Evaluate implements backendkit.Session.
func (s *session) Evaluate(_ context.Context, b *backendkit.Batch, rows []int) (backendkit.Totals, []float32, error) {
	m := s.model
	if err := m.forward(passOf(b), nil); err != nil {
		return backendkit.Totals{}, nil, err
	}
	var logits []float32
	V := m.a.VocabSize
	switch {
	case rows == nil:
	case len(rows) == b.B*b.T && inOrder(rows): // every position: one copy
		var err error
		if logits, err = m.readF32(m.x.logits, len(rows)*V); err != nil {
			return backendkit.Totals{}, nil, err
		}
	default:
		logits = make([]float32, len(rows)*V)
		for i, r := range rows {
			if err := m.q.d.DtoH(bytesOf(logits[i*V:(i+1)*V]), m.x.logits.F32(r*V)); err != nil {
				return backendkit.Totals{}, nil, err
			}
		}
	}
	tot, err := m.loss(b.B*b.T, b.Targets, b.Weights, 0, false)
	return tot, logits, err
}

// inOrder reports whether rows are 0, 1, 2, ….
func inOrder(rows []int) bool {
	for i, r := range rows {
		if r != i {
			return false
		}
	}
	return true
}

// kvCache holds one sequence's keys (after RoPE) and values per layer on the device.
type kvCache struct {
	m    *model
	mem  bufs
	k, v []device.Ptr // per layer, [capacity, KVDim]
}

// NewKVCache implements backendkit.KVSession.
func (s *session) NewKVCache(_ context.Context, capacity int) (backendkit.KVCache, error) {
	a := s.model.a
	c := &kvCache{m: s.model, mem: bufs{d: s.model.q.d}}
	for range a.NLayer {
		c.k = append(c.k, c.mem.f32(capacity*a.KVDim()))
		c.v = append(c.v, c.mem.f32(capacity*a.KVDim()))
	}
	if c.mem.err != nil {
		c.mem.free()
		return nil, sdk.ResourceExhausted("KV cache of %d tokens: %v", capacity, c.mem.err)
	}
	return c, nil
}

// Extend implements backendkit.KVCache: the forward pass over tokens at positions
// start…, attending to the cached sequence, appends their keys and values.
func (c *kvCache) Extend(_ context.Context, tokens []int32, start int) ([]float32, error) {
	n := len(tokens)
	pos := make([]int32, n)
	for i := range pos {
		pos[i] = int32(start + i)
	}
	if err := c.m.forward(&pass{b: 1, t: n, tokens: tokens, pos: pos}, c); err != nil {
		return nil, err
	}
	return c.m.readF32(c.m.x.logits, n*c.m.a.VocabSize)
}

// Release implements backendkit.KVCache.
func (c *kvCache) Release() { c.mem.free() }

package xla

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/gomlx/gomlx/backends"
	"github.com/gomlx/gomlx/backends/simplego"
	"github.com/gomlx/gopjrt/dtypes"

	"github.com/mypt/mypt/sdk"
	"github.com/mypt/mypt/sdk/backendkit"
	pb "github.com/mypt/mypt/sdk/proto/backendv1"
)

// PluginEnv names the environment variable that selects a PJRT plugin (a .so file).
const PluginEnv = "PJRT_PLUGIN_LIBRARY_PATH"

// engine implements backendkit.Engine: the GoMLX backend, started by the first call that
// needs it (New does no work, and a bad plugin path is that call's error). The kit calls it
// under its locks (Describe succeeds before any NewSession), so it needs none of its own.
type engine struct {
	opts Options
	log  *slog.Logger
	g    *gomlx // nil until started
	// sliceAlways makes sessions take qkv and RoPE pieces with Slice even where the engine
	// lacks Pad (the gradient of Slice): TestSlicePathForward compares that path's forward
	// programs, the ones PJRT engines run, with the one-hot path on simplego.
	sliceAlways bool
}

// start returns the GoMLX backend, starting it if needed. A failure is not remembered:
// the next call tries again (the plugin may have been installed meanwhile).
func (e *engine) start() (*gomlx, error) {
	if e.g != nil {
		return e.g, nil
	}
	g, err := startGoMLX(e.opts.PJRTPlugin)
	if err != nil {
		return nil, sdk.FailedPrecondition("xla engine: %v", err)
	}
	e.log.Debug("xla backend engine started", "engine", g.name, "device", g.device.Name)
	e.g = g
	return g, nil
}

// Describe implements backendkit.Engine.
func (e *engine) Describe(context.Context) (backendkit.Description, error) {
	g, err := e.start()
	if err != nil {
		return backendkit.Description{}, err
	}
	features := backendkit.CompleteFeatures() // heads without bias: net.linear skips a nil bias
	if g.deterministic {
		features = append(features, pb.Feature_FEATURE_DETERMINISTIC)
	}
	return backendkit.Description{Name: "xla", Version: Version, Engine: g.name,
		Devices: []*pb.Device{g.device}, ComputeDTypes: g.computeDTypes(), Features: features}, nil
}

// NewSession implements backendkit.Engine.
func (e *engine) NewSession(_ context.Context, cfg backendkit.SessionConfig) (backendkit.Session, error) {
	g, err := e.start()
	if err != nil {
		return nil, err
	}
	return newSession(g.be, cfg, e.sliceAlways)
}

// gomlx is the GoMLX backend the programs run on, with what GetInfo reports about it.
type gomlx struct {
	be     backends.Backend
	name   string // "simplego" or "xla-pjrt <plugin path>"
	device *pb.Device
	// deterministic engines give bit-identical results for the same inputs: simplego running
	// ops one at a time (each op's kernels split work the same way every run). XLA on a GPU
	// makes no such promise by default.
	deterministic bool
}

// computeDTypes are the Precision.compute_dtype values the engine runs: F32 always, BF16
// where the engine has bfloat16 DotGeneral and ConvertDType (simplego v0.25.0 has both,
// accumulating bf16 products in float32; so do PJRT engines).
func (g *gomlx) computeDTypes() []pb.DType {
	out := []pb.DType{pb.DType_DTYPE_F32}
	c := g.be.Capabilities()
	if c.DTypes[dtypes.BFloat16] && c.Operations[backends.OpTypeDotGeneral] && c.Operations[backends.OpTypeConvertDType] {
		out = append(out, pb.DType_DTYPE_BF16)
	}
	return out
}

// startGoMLX opens the PJRT plugin at pluginPath, or GoMLX's pure-Go simplego engine when
// pluginPath is empty. It never downloads anything.
func startGoMLX(pluginPath string) (*gomlx, error) {
	// GoMLX/gopjrt versions that can fetch plugins honour this; v0.25.0 never fetches, but
	// be explicit so an upgrade cannot start downloading at run time.
	_ = os.Setenv("GOMLX_NO_AUTO_INSTALL", "1")
	if pluginPath == "" {
		// ops_sequential: simplego v0.25.0's parallel op scheduler runs each op in a worker
		// of a pool of 2·NumCPU, and its DotGeneral waits for workers of the same pool for
		// its batch split without releasing its own: with several matrix products ready at
		// once (the backward pass) every worker ends up waiting and the program deadlocks.
		// Run ops one at a time; each large op still uses all cores.
		be, err := simplego.New("ops_sequential")
		if err != nil {
			return nil, fmt.Errorf("starting the simplego engine: %w", err)
		}
		return &gomlx{be: be, name: "simplego", deterministic: true,
			device: &pb.Device{Kind: "cpu", Name: "simplego (pure Go, " + runtime.GOARCH + ")", Cores: uint32(runtime.GOMAXPROCS(0))}}, nil
	}
	abs, err := filepath.Abs(pluginPath)
	if err != nil {
		return nil, fmt.Errorf("PJRT plugin %q: %w", pluginPath, err)
	}
	st, err := os.Stat(abs)
	if err != nil {
		return nil, fmt.Errorf("PJRT plugin %s (from $%s): %w", abs, PluginEnv, err)
	}
	if st.IsDir() {
		return nil, fmt.Errorf("PJRT plugin %s (from $%s) is a directory: point it at the plugin's .so file, e.g. .../jax_plugins/xla_cuda13/xla_cuda_plugin.so", abs, PluginEnv)
	}
	kind := "xla"
	lower := strings.ToLower(filepath.Base(abs))
	switch {
	case strings.Contains(lower, "cuda"):
		kind = "cuda"
	case strings.Contains(lower, "rocm"):
		kind = "rocm"
	case strings.Contains(lower, "tpu"):
		kind = "tpu"
	case strings.Contains(lower, "cpu"):
		kind = "cpu"
	}
	// GPU plugins reserve 75 % of device memory per client by default; the conformance suite
	// runs a second plugin process beside the first, so allocate on demand instead.
	gpu := kind == "cuda" || kind == "rocm"
	be, err := newPJRT(abs, gpu)
	if err != nil {
		return nil, fmt.Errorf("PJRT plugin %s could not be started: %w", abs, err)
	}
	return &gomlx{be: be, name: "xla-pjrt " + abs,
		device: &pb.Device{Kind: kind, Name: be.DeviceDescription(0)}}, nil
}

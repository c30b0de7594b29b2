package xla

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/gomlx/gomlx/backends"
	"github.com/gomlx/gomlx/backends/simplego"

	pb "github.com/mypt/mypt/sdk/proto/backendv1"
)

// PluginEnv names the environment variable that selects a PJRT plugin (a .so file).
const PluginEnv = "PJRT_PLUGIN_LIBRARY_PATH"

// engine is the GoMLX backend the programs run on, with what GetInfo reports about it.
type engine struct {
	be     backends.Backend
	name   string // "simplego" or "xla-pjrt <plugin path>"
	device *pb.Device
}

// newEngine opens the PJRT plugin at pluginPath, or GoMLX's pure-Go simplego engine when
// pluginPath is empty. It never downloads anything.
func newEngine(pluginPath string) (*engine, error) {
	// GoMLX/gopjrt versions that can fetch plugins honour this; v0.25.0 never fetches, but
	// be explicit so an upgrade cannot start downloading at run time.
	_ = os.Setenv("GOMLX_NO_AUTO_INSTALL", "1")
	if pluginPath == "" {
		be, err := simplego.New("")
		if err != nil {
			return nil, fmt.Errorf("starting the simplego engine: %w", err)
		}
		return &engine{be: be, name: "simplego",
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
	be, err := newPJRT(abs)
	if err != nil {
		return nil, fmt.Errorf("PJRT plugin %s could not be started: %w", abs, err)
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
	return &engine{be: be, name: "xla-pjrt " + abs,
		device: &pb.Device{Kind: kind, Name: be.DeviceDescription(0)}}, nil
}

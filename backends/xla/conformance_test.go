package xla_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/mypt/mypt/conformance"
)

// TestConformance builds ./cmd/mypt-backend-xla and ./cmd/mypt-backend-cpu (the reference for the portability
// checks) and runs the whole conformance suite against the xla plugin on the simplego
// engine, with the suite's default tolerances, in F32 and BF16 (both declared there).
func TestConformance(t *testing.T) {
	if testing.Short() {
		t.Skip("builds plugins; skipped with -short")
	}
	dir := t.TempDir()
	build := func(name string) string {
		out := filepath.Join(dir, "mypt-backend-"+name)
		cmd := exec.Command("go", "build", "-o", out, "github.com/mypt/mypt/cmd/mypt-backend-"+name)
		if msg, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build plugins/%s: %v\n%s", name, err, msg)
		}
		return out
	}
	xlaPlugin, cpuPlugin := build("xla"), build("cpu")
	// The plugin under test must not pick up a PJRT plugin from the environment.
	t.Setenv("PJRT_PLUGIN_LIBRARY_PATH", "")
	os.Unsetenv("PJRT_PLUGIN_LIBRARY_PATH")
	conformance.Run(t, xlaPlugin, conformance.Options{ReferencePlugin: cpuPlugin})
}

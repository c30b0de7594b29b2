package xla_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mypt/mypt/conformance"
)

// TestConformance builds ./cmd/mypt-backend-xla and runs the conformance checks that
// concern the plugin as a process — the protocol contract (handshake, GetInfo naming the
// binary, state streams through a real process) and robustness (the process killed mid
// step) — against it on the simplego engine. The numerical, semantic and portability
// checks run in process in TestGolden (golden_test.go).
func TestConformance(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the plugin; skipped with -short")
	}
	plugin := filepath.Join(t.TempDir(), "mypt-backend-xla")
	cmd := exec.Command("go", "build", "-o", plugin, "github.com/mypt/mypt/cmd/mypt-backend-xla")
	if msg, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build cmd/mypt-backend-xla: %v\n%s", err, msg)
	}
	// The plugin under test must not pick up a PJRT plugin from the environment.
	t.Setenv("PJRT_PLUGIN_LIBRARY_PATH", "")
	os.Unsetenv("PJRT_PLUGIN_LIBRARY_PATH")
	conformance.Run(t, plugin, conformance.Options{Filter: isPluginRunCheck})
}

// isPluginRunCheck selects the checks TestConformance runs on the plugin binary; TestGolden
// runs the rest in process.
func isPluginRunCheck(name string) bool {
	return strings.HasPrefix(name, "protocol/") || strings.HasPrefix(name, "robustness/")
}

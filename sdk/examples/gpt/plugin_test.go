package gpt_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"github.com/mypt/mypt/conformance"
)

// binDir holds the CPU reference plugin and this example's plugin, built once. (The
// end-to-end training test, `mypt train --backend gpt` against the CPU backend, is
// cmd/mypt's TestTrainGPTExampleMatchesCPU.)
var binDir string

var buildBinaries = sync.OnceValue(func() error {
	var err error
	if binDir, err = os.MkdirTemp("", "mypt-gpt-example-"); err != nil {
		return err
	}
	for _, pkg := range []string{"github.com/mypt/mypt/cmd/mypt-backend-cpu", "github.com/mypt/mypt/sdk/examples/gpt/cmd/mypt-backend-gpt"} {
		out, err := exec.Command("go", "build", "-o", filepath.Join(binDir, filepath.Base(pkg)), pkg).CombinedOutput()
		if err != nil {
			return fmt.Errorf("go build %s: %v\n%s", pkg, err, out)
		}
	}
	return nil
})

// bin returns the path of a built binary.
func bin(t *testing.T, name string) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds two plugins; skipped with -short")
	}
	if err := buildBinaries(); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(binDir, name)
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// TestConformance runs the whole conformance suite against the built plugin, with the
// CPU backend as the reference of the portability checks and the default F32
// tolerances. Only the checks of features this backend does not declare (dropout,
// NEFTune, grouped-query attention, other dtypes) may skip.
func TestConformance(t *testing.T) {
	conformance.Run(t, bin(t, "mypt-backend-gpt"), conformance.Options{ReferencePlugin: bin(t, "mypt-backend-cpu")})
}

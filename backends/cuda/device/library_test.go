package device

import (
	"os"
	"strings"
	"testing"

	"github.com/mypt/mypt/backends/cuda/kernels"
)

// A prebuilt emulator library loads where its kernel source is the one wanted, and is
// refused, naming both hashes, where it is not (a stale library would check the GPU
// against other kernels).
func TestEmulatorLibraryHash(t *testing.T) {
	if _, err := EmulatorCompiler(""); err != nil {
		t.Fatal(err)
	}
	old := kernels.Source + "\n// an older kernels.cu\n"
	lib, err := BuildEmulator(EmulatedOptions{Source: old})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(lib); err != nil {
		t.Fatal(err)
	}
	_, err = NewEmulated(EmulatedOptions{Library: lib})
	if err == nil || !strings.Contains(err.Error(), "stale") || !strings.Contains(err.Error(), kernels.Hash()) ||
		!strings.Contains(err.Error(), sourceHash(old)) {
		t.Fatalf("loading a library built from another kernels.cu: %v; want an error naming %s and %s", err, sourceHash(old), kernels.Hash())
	}
	t.Log(err)
	d, err := NewEmulated(EmulatedOptions{Library: lib, Source: old})
	if err != nil {
		t.Fatalf("loading it for its own source: %v", err)
	}
	defer d.Close()
	if !strings.Contains(d.Info().Name, "prebuilt") {
		t.Errorf("info %q does not say the library was prebuilt", d.Info().Name)
	}
}

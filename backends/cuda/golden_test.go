package cuda

import (
	"testing"

	"github.com/mypt/mypt/backends/cpu"
	"github.com/mypt/mypt/backends/cuda/device"
	"github.com/mypt/mypt/conformance"
	"github.com/mypt/mypt/conformance/golden"
	"github.com/mypt/mypt/sdk"
	"github.com/mypt/mypt/sdk/backendkit"
	pb "github.com/mypt/mypt/sdk/proto/backendv1"
)

// TestConformance runs the conformance suite in process on the emulated device (kernels.cu
// itself, compiled for the CPU), in every compute dtype the backend declares (F32 and
// BF16), with the suite's tolerances and the CPU backend in process as the portability
// reference.
func TestConformance(t *testing.T) {
	opts := emulated(t)
	conformance.RunBackend(t, func() sdk.Backend { return New(opts) }, conformance.Options{
		NewReference: func() sdk.Backend { return cpu.New(cpu.Options{Threads: 2}) },
	})
}

// f32 are the suite's float32 tolerances, which this package's own tests hold the
// backend to as well.
var f32 = conformance.DefaultTolerances(pb.DType_DTYPE_F32)

// emulated are the options of a backend on the emulated device. Without a host C++
// compiler the test fails rather than skips: `make test` installs and needs clang-19.
func emulated(t testing.TB) Options {
	t.Helper()
	if _, err := device.EmulatorCompiler(""); err != nil {
		t.Fatal(err)
	}
	return Options{Device: "emulated"}
}

// newGoldenBackend is an emulated-device backend configured for g with its initial parameters.
func newGoldenBackend(t testing.TB, g *golden.Case) *backendkit.Backend {
	return golden.Open(t, g, New(emulated(t)))
}

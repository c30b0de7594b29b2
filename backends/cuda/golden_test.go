package cuda

import (
	"testing"

	"github.com/mypt/mypt/backends/cpu"
	"github.com/mypt/mypt/conformance"
	"github.com/mypt/mypt/conformance/golden"
	"github.com/mypt/mypt/sdk"
	"github.com/mypt/mypt/sdk/backendkit"
	pb "github.com/mypt/mypt/sdk/proto/backendv1"
)

// TestConformance runs the conformance suite on the fake device in process, in every
// compute dtype the backend declares (F32 and BF16), with the suite's tolerances and the
// CPU backend in process as the portability reference.
func TestConformance(t *testing.T) {
	conformance.RunBackend(t, func() sdk.Backend { return New(Options{Device: "fake"}) }, conformance.Options{
		NewReference: func() sdk.Backend { return cpu.New(cpu.Options{Threads: 2}) },
	})
}

// f32 are the suite's float32 tolerances, which this package's own tests hold the
// backend to as well.
var f32 = conformance.DefaultTolerances(pb.DType_DTYPE_F32)

// newGoldenBackend is a fake-device backend configured for g with its initial parameters.
func newGoldenBackend(t testing.TB, g *golden.Case) *backendkit.Backend {
	return golden.Open(t, g, New(Options{Device: "fake"}))
}

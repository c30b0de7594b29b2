package cpu

import (
	"testing"

	"github.com/mypt/mypt/conformance"
	"github.com/mypt/mypt/conformance/golden"
	"github.com/mypt/mypt/sdk"
	"github.com/mypt/mypt/sdk/backendkit"
	pb "github.com/mypt/mypt/sdk/proto/backendv1"
)

// TestConformance runs the conformance suite on the backend in process: the PyTorch
// golden vectors (logits, losses, gradients, AdamW steps, 20-step trajectories) with the
// suite's F32 tolerances, loss masks, packing, accumulation, frozen parameters, the KV
// cache, determinism, dropout and the protocol contract. The CPU backend is its own
// portability reference. The checks that need a plugin process run in conformance's
// TestCPUBackend, on cmd/mypt-backend-cpu.
func TestConformance(t *testing.T) {
	newBackend := func() sdk.Backend { return New(Options{Threads: 2}) }
	conformance.RunBackend(t, newBackend, conformance.Options{NewReference: newBackend})
}

// f32 are the suite's float32 tolerances, which this package's own tests hold the
// backend to as well.
var f32 = conformance.DefaultTolerances(pb.DType_DTYPE_F32)

// newGoldenBackend is a backend configured for g with its initial parameters.
func newGoldenBackend(t testing.TB, g *golden.Case) *backendkit.Backend {
	return golden.Open(t, g, New(Options{Threads: 2}))
}

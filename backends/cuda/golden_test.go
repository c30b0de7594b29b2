package cuda

import (
	"testing"

	"github.com/mypt/mypt/backends/internal/goldentest"
	"github.com/mypt/mypt/conformance/golden"
	"github.com/mypt/mypt/sdk"
	"github.com/mypt/mypt/sdk/backendkit"
)

// The PyTorch golden vectors (backends/internal/goldentest) on the fake device, with the
// float32 tolerances.
var goldenSuite = goldentest.Suite{New: func(testing.TB) sdk.Backend { return New(Options{Fake: true}) }, Tol: goldentest.F32}

func TestGoldenForwardBackward(t *testing.T) { goldenSuite.ForwardBackward(t) }
func TestGoldenAccumulation(t *testing.T)    { goldenSuite.Accumulation(t) }
func TestGoldenAdamW(t *testing.T)           { goldenSuite.AdamW(t) }
func TestGoldenTrajectory(t *testing.T)      { goldenSuite.Trajectory(t) }
func TestZeroWeights(t *testing.T)           { goldenSuite.ZeroWeights(t) }
func TestFrozen(t *testing.T)                { goldenSuite.Frozen(t) }

// newGoldenBackend is a fake-device backend configured for g with its initial parameters.
func newGoldenBackend(t testing.TB, g *golden.Case) *backendkit.Backend {
	return goldentest.Open(t, g, New(Options{Fake: true}))
}

package xla

import (
	"testing"

	"github.com/mypt/mypt/backends/internal/goldentest"
	"github.com/mypt/mypt/sdk"
	"github.com/mypt/mypt/sdk/sdktesting"
)

// The PyTorch golden vectors (backends/internal/goldentest) on the simplego engine,
// reached over a real in-process gRPC connection, with the float32 tolerances.
var goldenSuite = goldentest.Suite{New: func(t testing.TB) sdk.Backend { return sdktesting.Connect(t, New(Options{})) }, Tol: goldentest.F32}

func TestGoldenForwardBackward(t *testing.T) { goldenSuite.ForwardBackward(t) }
func TestGoldenAccumulation(t *testing.T)    { goldenSuite.Accumulation(t) }
func TestGoldenAdamW(t *testing.T)           { goldenSuite.AdamW(t) }
func TestGoldenTrajectory(t *testing.T)      { goldenSuite.Trajectory(t) }
func TestZeroWeights(t *testing.T)           { goldenSuite.ZeroWeights(t) }

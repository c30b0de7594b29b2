package xla_test

import (
	"testing"

	"github.com/mypt/mypt/backends/cpu"
	"github.com/mypt/mypt/backends/xla"
	"github.com/mypt/mypt/conformance"
	"github.com/mypt/mypt/sdk"
	"github.com/mypt/mypt/sdk/sdktesting"
)

// TestGolden runs the conformance suite on the simplego engine, reached over a real
// in-process gRPC connection: the PyTorch golden vectors, loss masks, packing,
// accumulation, frozen parameters, the KV cache, determinism, dropout and portability,
// in F32 and BF16 with the suite's tolerances and the CPU backend in process as the
// portability reference. The protocol and robustness checks run once, against the built
// plugin, in TestConformance; this run leaves them out so that no check runs twice in
// the package.
func TestGolden(t *testing.T) {
	conformance.RunBackend(t, func() sdk.Backend { return sdktesting.Connect(t, xla.New(xla.Options{})) }, conformance.Options{
		NewReference: func() sdk.Backend { return cpu.New(cpu.Options{Threads: 2}) },
		Filter:       func(name string) bool { return !isPluginRunCheck(name) },
	})
}

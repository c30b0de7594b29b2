// Command fakedeterministic is a deliberately broken backend for the
// conformance suite's own tests: the CPU reference backend, which declares
// FEATURE_DETERMINISTIC, with a reported loss that nevertheless moves by a few ulps
// from call to call, as a reduction with atomics would. Results are
// right within tolerance but not bit-identical; determinism/bit-exact must
// catch it (and determinism/repeatable must not).
package main

import (
	"context"
	"math"
	"sync/atomic"

	"github.com/mypt/mypt/backends/cpu"
	"github.com/mypt/mypt/sdk"
	"github.com/mypt/mypt/sdk/backendkit"
	pb "github.com/mypt/mypt/sdk/proto/backendv1"
)

type backend struct {
	*backendkit.Backend
	calls *atomic.Uint64
}

func (b backend) GetInfo(ctx context.Context, req *pb.GetInfoRequest) (*pb.GetInfoResponse, error) {
	info, err := b.Backend.GetInfo(ctx, req)
	if err == nil {
		info.Name = "fakedeterministic"
	}
	return info, err
}

func (b backend) ForwardBackward(ctx context.Context, req *pb.ForwardBackwardRequest) (*pb.ForwardBackwardResponse, error) {
	resp, err := b.Backend.ForwardBackward(ctx, req)
	if err == nil && resp.LossSum != 0 {
		// a few ulps that depend on how many calls came before
		for n := b.calls.Add(1) % 8; n > 0; n-- {
			resp.LossSum = math.Nextafter(resp.LossSum, math.Inf(1))
		}
	}
	return resp, err
}

func main() { sdk.Serve(backend{cpu.New(cpu.Options{}), new(atomic.Uint64)}) }

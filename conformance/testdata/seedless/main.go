// Command seedless is a deliberately broken backend for the conformance
// suite's own tests: the CPU reference backend, except that it draws its
// dropout masks from a counter of its own instead of the request's
// dropout_seed, so the same seed does not give the same mask (and a resumed
// run cannot replay its masks). The dropout checks must catch it.
package main

import (
	"context"
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
		info.Name = "seedless"
	}
	return info, err
}

func (b backend) ForwardBackward(ctx context.Context, req *pb.ForwardBackwardRequest) (*pb.ForwardBackwardResponse, error) {
	req.DropoutSeed = b.calls.Add(1)
	return b.Backend.ForwardBackward(ctx, req)
}

func main() { sdk.Serve(backend{cpu.New(cpu.Options{}), new(atomic.Uint64)}) }

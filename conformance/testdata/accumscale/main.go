// Command accumscale is a deliberately broken backend for the conformance
// suite's own tests: the CPU reference backend, except that it normalises
// every micro-batch by its own weight sum instead of applying the host's
// grad_scale. A single micro-batch per step comes out right; accumulating
// several over-weights them. The accumulation checks must catch it.
package main

import (
	"context"
	"math"

	"github.com/mypt/mypt/backends/cpu"
	"github.com/mypt/mypt/sdk"
	"github.com/mypt/mypt/sdk/backendkit"
	pb "github.com/mypt/mypt/sdk/proto/backendv1"
)

type backend struct{ *backendkit.Backend }

func (b backend) GetInfo(ctx context.Context, req *pb.GetInfoRequest) (*pb.GetInfoResponse, error) {
	info, err := b.Backend.GetInfo(ctx, req)
	if err == nil {
		info.Name = "accumscale"
	}
	return info, err
}

func (b backend) ForwardBackward(ctx context.Context, req *pb.ForwardBackwardRequest) (*pb.ForwardBackwardResponse, error) {
	var sum float64
	for _, w := range req.GetBatch().GetLossWeights() {
		sum += float64(w)
	}
	if !math.IsNaN(sum) && !math.IsInf(sum, 0) && !math.IsNaN(float64(req.GradScale)) && !math.IsInf(float64(req.GradScale), 0) {
		req.GradScale = float32(1 / math.Max(sum, 1))
	}
	return b.Backend.ForwardBackward(ctx, req)
}

func main() { sdk.Serve(backend{cpu.New(cpu.Options{})}) }

// Command ignoreweights is a deliberately broken backend for the conformance
// suite's own tests: the CPU reference backend, except that it ignores the
// loss weights and averages the cross-entropy over every position, as a
// backend written for plain pretraining would. The lossmask checks (and the
// golden numerics of the weighted cases) must catch it.
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
		info.Name = "ignoreweights"
	}
	return info, err
}

// flatten sets every valid weight to 1 (invalid ones are left for the real
// validation to reject).
func flatten(bt *pb.Batch) {
	for i, w := range bt.GetLossWeights() {
		if w >= 0 && !math.IsInf(float64(w), 0) {
			bt.LossWeights[i] = 1
		}
	}
}

func (b backend) ForwardBackward(ctx context.Context, req *pb.ForwardBackwardRequest) (*pb.ForwardBackwardResponse, error) {
	flatten(req.GetBatch())
	return b.Backend.ForwardBackward(ctx, req)
}

func (b backend) Evaluate(ctx context.Context, req *pb.EvaluateRequest) (*pb.EvaluateResponse, error) {
	flatten(req.GetBatch())
	return b.Backend.Evaluate(ctx, req)
}

func main() { sdk.Serve(backend{cpu.New(cpu.Options{})}) }

// Command leakysegments is a deliberately broken backend for the conformance
// suite's own tests: the CPU reference backend, declaring packed segments
// but ignoring Batch.segment_ids, so packed episodes attend to each other.
// The packing checks (and the golden numerics of the packed cases) must
// catch it.
package main

import (
	"context"

	"github.com/mypt/mypt/backends/cpu"
	"github.com/mypt/mypt/sdk"
	"github.com/mypt/mypt/sdk/backendkit"
	pb "github.com/mypt/mypt/sdk/proto/backendv1"
)

type backend struct{ *backendkit.Backend }

func (b backend) GetInfo(ctx context.Context, req *pb.GetInfoRequest) (*pb.GetInfoResponse, error) {
	info, err := b.Backend.GetInfo(ctx, req)
	if err == nil {
		info.Name = "leakysegments"
	}
	return info, err
}

// strip drops well-formed segment ids (malformed ones are left for the real
// validation to reject).
func strip(bt *pb.Batch) {
	if bt != nil && len(bt.SegmentIds) == len(bt.Tokens) {
		bt.SegmentIds = nil
	}
}

func (b backend) ForwardBackward(ctx context.Context, req *pb.ForwardBackwardRequest) (*pb.ForwardBackwardResponse, error) {
	strip(req.GetBatch())
	return b.Backend.ForwardBackward(ctx, req)
}

func (b backend) Evaluate(ctx context.Context, req *pb.EvaluateRequest) (*pb.EvaluateResponse, error) {
	strip(req.GetBatch())
	return b.Backend.Evaluate(ctx, req)
}

func main() { sdk.Serve(backend{cpu.New(cpu.Options{})}) }

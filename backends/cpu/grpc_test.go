package cpu

import (
	"context"
	"strings"
	"testing"

	"github.com/mypt/mypt/conformance"
	"github.com/mypt/mypt/conformance/golden"
	"github.com/mypt/mypt/sdk"
	pb "github.com/mypt/mypt/sdk/proto/backendv1"
	"github.com/mypt/mypt/sdk/sdktesting"
	"google.golang.org/grpc/codes"
)

// The backend behind the real gRPC adapter: state streams, gradients and status codes.
func TestOverGRPC(t *testing.T) {
	ctx := context.Background()
	g := golden.Cases(t)[0]
	c := sdktesting.Connect(t, New(Options{Threads: 2}))
	info, err := c.GetInfo(ctx, nil)
	if err != nil || info.Name != "cpu" {
		t.Fatalf("GetInfo: %v %v", info, err)
	}
	if _, err := c.Configure(ctx, &pb.ConfigureRequest{Model: g.Spec(), Optimizer: g.OptimizerSpec()}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.SetState(ctx, g.InitState()); err != nil {
		t.Fatal(err)
	}
	fb, err := c.ForwardBackward(ctx, &pb.ForwardBackwardRequest{Batch: g.NewBatch(), GradScale: g.GradScale()})
	if err != nil {
		t.Fatal(err)
	}
	if conformance.RelErr(fb.LossSum, g.LossSum, 1e-12) > f32.Loss {
		t.Errorf("loss_sum %v, want %v", fb.LossSum, g.LossSum)
	}
	grads := sdktesting.State(t, c, pb.TensorRole_TENSOR_ROLE_GRAD)
	for _, p := range g.Model.Params {
		conformance.AssertClose(t, "grad "+p.Name, grads["TENSOR_ROLE_GRAD/"+p.Name], g.F32("grad."+p.Name), f32.Grads)
	}
	bad := g.NewBatch()
	bad.Tokens[17] = -1
	_, err = c.ForwardBackward(ctx, &pb.ForwardBackwardRequest{Batch: bad, GradScale: 1})
	if sdk.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "batch.tokens[17]") {
		t.Errorf("bad token over gRPC: %v", err)
	}
}

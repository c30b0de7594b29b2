package cpu

import (
	"context"
	"math"
	"strings"
	"testing"

	"github.com/mypt/mypt/sdk"
	pb "github.com/mypt/mypt/sdk/proto/backendv1"
	"github.com/mypt/mypt/sdk/sdktesting"
	"google.golang.org/grpc/codes"
)

// The backend behind the real gRPC adapter: state streams, gradients and status codes.
func TestOverGRPC(t *testing.T) {
	ctx := context.Background()
	g := loadGoldenCases(t)[0]
	c := sdktesting.Connect(t, New(Options{Threads: 2}))
	info, err := c.GetInfo(ctx)
	if err != nil || info.Name != "cpu" {
		t.Fatalf("GetInfo: %v %v", info, err)
	}
	if _, err := c.Configure(ctx, &pb.ConfigureRequest{Model: g.spec(),
		Optimizer: &pb.OptimizerSpec{Beta1: g.Optimizer.Beta1, Beta2: g.Optimizer.Beta2, Eps: g.Optimizer.Eps}}); err != nil {
		t.Fatal(err)
	}
	r := &sliceReader{header: &pb.StateHeader{}}
	for _, p := range g.Model.Params {
		r.tensors = append(r.tensors, f32Tensor(p.Name, pb.TensorRole_TENSOR_ROLE_PARAM, p.Shape, g.tensors["init."+p.Name].f32))
	}
	r.header.TensorCount = uint32(len(r.tensors))
	if _, err := c.SetState(ctx, r); err != nil {
		t.Fatal(err)
	}
	fb, err := c.ForwardBackward(ctx, &pb.ForwardBackwardRequest{Batch: g.batch(), GradScale: float32(1 / math.Max(g.WeightSum, 1))})
	if err != nil {
		t.Fatal(err)
	}
	if relErr(fb.LossSum, g.LossSum) > lossRtol {
		t.Errorf("loss_sum %v, want %v", fb.LossSum, g.LossSum)
	}
	w := &mapWriter{}
	if err := c.GetState(ctx, &pb.GetStateRequest{Roles: []pb.TensorRole{pb.TensorRole_TENSOR_ROLE_GRAD}}, w); err != nil {
		t.Fatal(err)
	}
	for _, p := range g.Model.Params {
		assertClose(t, "grad "+p.Name, w.tensors["TENSOR_ROLE_GRAD/"+p.Name], g.tensors["grad."+p.Name].f32, gradAtol, gradRtol)
	}
	bad := g.batch()
	bad.Tokens = append([]int32{}, bad.Tokens...)
	bad.Tokens[17] = -1
	_, err = c.ForwardBackward(ctx, &pb.ForwardBackwardRequest{Batch: bad, GradScale: 1})
	if sdk.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "batch.tokens[17]") {
		t.Errorf("bad token over gRPC: %v", err)
	}
}

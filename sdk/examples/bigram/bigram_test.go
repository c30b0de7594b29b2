package bigram

import (
	"context"
	"testing"

	"github.com/mypt/mypt/sdk"
	pb "github.com/mypt/mypt/sdk/proto/backendv1"
	"google.golang.org/grpc/codes"
)

// TestFrozenRefused: the bigram backend does not declare FEATURE_FROZEN_PARAMS, so a frozen
// parameter is refused with UNIMPLEMENTED rather than trained.
func TestFrozenRefused(t *testing.T) {
	req := func(frozen bool) *pb.ConfigureRequest {
		return &pb.ConfigureRequest{
			Model: &pb.ModelSpec{VocabSize: 4, BlockSize: 4,
				Params: []*pb.ParamSpec{{Name: WeightName, Shape: []int64{4, 4}, Dtype: pb.DType_DTYPE_F32, Frozen: frozen}}},
			Optimizer: &pb.OptimizerSpec{Beta1: 0.9, Beta2: 0.95, Eps: 1e-8},
		}
	}
	b := New()
	if _, err := b.Configure(context.Background(), req(true)); sdk.Code(err) != codes.Unimplemented {
		t.Fatalf("Configure with a frozen parameter: %v, want UNIMPLEMENTED", err)
	}
	if _, err := b.Configure(context.Background(), req(false)); err != nil {
		t.Fatalf("Configure: %v", err)
	}
}

package sdk

import (
	"testing"

	pb "github.com/mypt/mypt/sdk/proto/backendv1"
	"google.golang.org/grpc/codes"
)

func TestCacheTable(t *testing.T) {
	var tb CacheTable[string]
	if _, err := tb.Get(1); Code(err) != codes.NotFound {
		t.Fatalf("Get on an empty table: %v", err)
	}
	a, b := tb.Add("a"), tb.Add("b")
	if a != 1 || b != 2 {
		t.Fatalf("handles %d %d, want 1 2", a, b)
	}
	if c, err := tb.Remove(a); c != "a" || err != nil {
		t.Fatalf("Remove(%d): %q %v", a, c, err)
	}
	if _, err := tb.Remove(a); Code(err) != codes.NotFound {
		t.Fatalf("Remove of a released handle: %v", err)
	}
	if h := tb.Add("c"); h != 3 {
		t.Fatalf("handle %d after a release, want 3 (never reused)", h)
	}
	n := 0
	for range tb.All() {
		n++
	}
	if c, err := tb.Get(b); c != "b" || err != nil || n != 2 {
		t.Fatalf("Get(%d): %q %v; %d caches", b, c, err, n)
	}
}

func TestRequestValidators(t *testing.T) {
	for _, c := range []struct {
		err  error
		code codes.Code
	}{
		{ValidateOptimizer(&pb.OptimizerSpec{Beta1: 0.9, Beta2: 0.95, Eps: 1e-8}), codes.OK},
		{ValidateOptimizer(nil), codes.InvalidArgument},
		{ValidateOptimizer(&pb.OptimizerSpec{Beta1: 1, Beta2: 0.95, Eps: 1e-8}), codes.InvalidArgument},
		{ValidateOptimizerStep(&pb.OptimizerStepRequest{LearningRate: 1e-3, ClipNorm: 1}), codes.OK},
		{ValidateOptimizerStep(&pb.OptimizerStepRequest{LearningRate: -1}), codes.InvalidArgument},
		{ValidateDecode(&pb.DecodeRequest{Token: 3}, 4, 1, 2), codes.OK},
		{ValidateDecode(&pb.DecodeRequest{Token: 4}, 4, 1, 2), codes.InvalidArgument},
		{ValidateDecode(&pb.DecodeRequest{Token: 3}, 4, 2, 2), codes.FailedPrecondition},
	} {
		if Code(c.err) != c.code {
			t.Errorf("got %v, want %v", c.err, c.code)
		}
	}
	if n, err := PrefillCapacity(&pb.PrefillRequest{Tokens: []int32{1, 2}}, 8); n != 8 || err != nil {
		t.Errorf("default capacity: %d %v", n, err)
	}
	if _, err := PrefillCapacity(&pb.PrefillRequest{Tokens: []int32{1, 2}, Capacity: 9}, 8); Code(err) != codes.InvalidArgument {
		t.Errorf("capacity over block_size: %v", err)
	}
	if _, err := PrefillCapacity(&pb.PrefillRequest{Tokens: []int32{1, 2, 3}, Capacity: 2}, 8); Code(err) != codes.InvalidArgument {
		t.Errorf("prompt over capacity: %v", err)
	}
}

func TestValidatePrecision(t *testing.T) {
	f32, bf16 := pb.DType_DTYPE_F32, pb.DType_DTYPE_BF16
	declared := []pb.DType{f32, bf16}
	for _, c := range []struct {
		pr   *pb.Precision
		want pb.DType
		code codes.Code
	}{
		{nil, f32, codes.OK},
		{&pb.Precision{}, f32, codes.OK},
		{&pb.Precision{ParamDtype: f32, ComputeDtype: bf16}, bf16, codes.OK},
		{&pb.Precision{ParamDtype: bf16}, 0, codes.Unimplemented},
		{&pb.Precision{ComputeDtype: pb.DType_DTYPE_F16}, 0, codes.Unimplemented},
	} {
		got, err := ValidatePrecision(c.pr, declared)
		if Code(err) != c.code || (err == nil && got != c.want) {
			t.Errorf("%v: got %v, %v; want %v, %v", c.pr, got, err, c.want, c.code)
		}
	}
	if _, err := ValidatePrecision(&pb.Precision{ComputeDtype: bf16}, []pb.DType{f32}); Code(err) != codes.Unimplemented {
		t.Errorf("bf16 on an F32-only backend: %v, want Unimplemented", err)
	}
}

// Command bf16sim is a test backend for the conformance suite's own tests:
// the CPU reference backend, additionally declaring BF16 compute. Configured
// for BF16, it rounds every logit and gradient it returns to bfloat16, about
// the error a real BF16 backend makes. It must pass the BF16 checks and
// fail the same checks held to F32 tolerances: the tolerances follow the
// dtype in use.
package main

import (
	"context"
	"slices"

	"github.com/mypt/mypt/backends/cpu"
	"github.com/mypt/mypt/core/checkpoint"
	"github.com/mypt/mypt/sdk"
	"github.com/mypt/mypt/sdk/backendkit"
	pb "github.com/mypt/mypt/sdk/proto/backendv1"
)

type backend struct {
	*backendkit.Backend
	bf16 bool
}

func (b *backend) GetInfo(ctx context.Context, req *pb.GetInfoRequest) (*pb.GetInfoResponse, error) {
	info, err := b.Backend.GetInfo(ctx, req)
	if err == nil {
		info.Name = "bf16sim"
		info.Capabilities.ComputeDtypes = append(slices.Clone(info.Capabilities.ComputeDtypes), pb.DType_DTYPE_BF16)
	}
	return info, err
}

func (b *backend) Configure(ctx context.Context, req *pb.ConfigureRequest) (*pb.ConfigureResponse, error) {
	bf16 := req.GetPrecision().GetComputeDtype() == pb.DType_DTYPE_BF16
	if bf16 {
		req.Precision.ComputeDtype = pb.DType_DTYPE_F32
	}
	resp, err := b.Backend.Configure(ctx, req)
	if err == nil {
		b.bf16 = bf16
	}
	return resp, err
}

func (b *backend) round(v []float32) {
	if b.bf16 {
		for i, x := range v {
			v[i] = checkpoint.BF16ToF32(sdk.F32ToBF16(x))
		}
	}
}

func (b *backend) Evaluate(ctx context.Context, req *pb.EvaluateRequest) (*pb.EvaluateResponse, error) {
	resp, err := b.Backend.Evaluate(ctx, req)
	if err == nil {
		b.round(resp.Logits)
	}
	return resp, err
}

func (b *backend) Prefill(ctx context.Context, req *pb.PrefillRequest) (*pb.PrefillResponse, error) {
	resp, err := b.Backend.Prefill(ctx, req)
	if err == nil {
		b.round(resp.Logits)
	}
	return resp, err
}

func (b *backend) Decode(ctx context.Context, req *pb.DecodeRequest) (*pb.DecodeResponse, error) {
	resp, err := b.Backend.Decode(ctx, req)
	if err == nil {
		b.round(resp.Logits)
	}
	return resp, err
}

// roundGrads rounds F32 gradient tensors on their way out.
type roundGrads struct {
	sdk.StateWriter
	b *backend
}

func (w roundGrads) WriteTensor(t *sdk.Tensor) error {
	if t.Role == pb.TensorRole_TENSOR_ROLE_GRAD && t.DType == pb.DType_DTYPE_F32 {
		v, err := sdk.F32Values(t.Data)
		if err != nil {
			return err
		}
		w.b.round(v)
		t.Data = sdk.F32Bytes(v)
	}
	return w.StateWriter.WriteTensor(t)
}

func (b *backend) GetState(ctx context.Context, req *pb.GetStateRequest, w sdk.StateWriter) error {
	return b.Backend.GetState(ctx, req, roundGrads{w, b})
}

func main() { sdk.Serve(&backend{Backend: cpu.New(cpu.Options{})}) }

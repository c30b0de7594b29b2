package cpu

import (
	"context"
	"strings"
	"testing"

	"github.com/mypt/mypt/conformance"
	"github.com/mypt/mypt/conformance/golden"
	"github.com/mypt/mypt/sdk"
	pb "github.com/mypt/mypt/sdk/proto/backendv1"
	"google.golang.org/grpc/codes"
)

// Prefill + Decode logits equal the full forward's logits at every position.
func TestKVCacheMatchesFullForward(t *testing.T) {
	ctx := context.Background()
	for _, g := range golden.Cases(t) {
		t.Run(g.Case, func(t *testing.T) {
			b := newGoldenBackend(t, g)
			T := int(g.Batch.SeqLen)
			V := int(g.Model.VocabSize)
			tokens := g.I32("batch.tokens")[:T]
			full, err := b.Evaluate(ctx, &pb.EvaluateRequest{ReturnLogits: true, Batch: &pb.Batch{
				BatchSize: 1, SeqLen: uint32(T), Tokens: tokens, Targets: make([]int32, T), LossWeights: make([]float32, T)}})
			if err != nil {
				t.Fatal(err)
			}
			prompt := 3
			pre, err := b.Prefill(ctx, &pb.PrefillRequest{Tokens: tokens[:prompt], AllLogits: true})
			if err != nil {
				t.Fatal(err)
			}
			conformance.AssertClose(t, "prefill logits", pre.Logits, full.Logits[:prompt*V], conformance.Tolerance{Atol: 1e-5, Rtol: 1e-4})
			for i := prompt; i < T; i++ {
				d, err := b.Decode(ctx, &pb.DecodeRequest{CacheHandle: pre.CacheHandle, Token: tokens[i]})
				if err != nil {
					t.Fatal(err)
				}
				if d.Length != uint32(i+1) {
					t.Fatalf("length %d, want %d", d.Length, i+1)
				}
				conformance.AssertClose(t, "decode logits", d.Logits, full.Logits[i*V:(i+1)*V], conformance.Tolerance{Atol: 1e-5, Rtol: 1e-4})
			}
			// a cache of capacity T is now full
			small, err := b.Prefill(ctx, &pb.PrefillRequest{Tokens: tokens[:2], Capacity: 2})
			if err != nil {
				t.Fatal(err)
			}
			if len(small.Logits) != V {
				t.Fatalf("last-position logits: %d values, want %d", len(small.Logits), V)
			}
			if _, err := b.Decode(ctx, &pb.DecodeRequest{CacheHandle: small.CacheHandle, Token: 1}); sdk.Code(err) != codes.FailedPrecondition {
				t.Fatalf("Decode on a full cache: %v, want FAILED_PRECONDITION", err)
			}
			if _, err := b.ReleaseCache(ctx, &pb.ReleaseCacheRequest{CacheHandle: pre.CacheHandle}); err != nil {
				t.Fatal(err)
			}
			if _, err := b.Decode(ctx, &pb.DecodeRequest{CacheHandle: pre.CacheHandle, Token: 1}); sdk.Code(err) != codes.NotFound {
				t.Fatalf("Decode on a released cache: %v, want NOT_FOUND", err)
			}
		})
	}
}

// Same dropout seed ⇒ same result; another seed ⇒ another result; dropout off in Evaluate.
func TestDropoutSeeded(t *testing.T) {
	ctx := context.Background()
	g := golden.Cases(t)[0]
	g.Model.Dropout = 0.3
	b := newGoldenBackend(t, g)
	run := func(seed uint64) float64 {
		fb, err := b.ForwardBackward(ctx, &pb.ForwardBackwardRequest{Batch: g.NewBatch(), GradScale: 1, DropoutSeed: seed})
		if err != nil {
			t.Fatal(err)
		}
		return fb.LossSum
	}
	a1, a2, c := run(1), run(1), run(2)
	if a1 != a2 || a1 == c {
		t.Fatalf("losses seed1 %v %v seed2 %v: want equal, then different", a1, a2, c)
	}
	if a1 == g.LossSum {
		t.Fatal("dropout had no effect on the training loss")
	}
	ev, err := b.Evaluate(ctx, &pb.EvaluateRequest{Batch: g.NewBatch()})
	if err != nil {
		t.Fatal(err)
	}
	if conformance.RelErr(ev.LossSum, g.LossSum, 1e-12) > f32.Loss {
		t.Fatalf("Evaluate with dropout configured: %v, want the dropout-free %v", ev.LossSum, g.LossSum)
	}
}

func TestValidation(t *testing.T) {
	ctx := context.Background()
	g := golden.Cases(t)[0]

	if _, err := New(Options{}).ForwardBackward(ctx, &pb.ForwardBackwardRequest{Batch: g.NewBatch()}); sdk.Code(err) != codes.FailedPrecondition {
		t.Errorf("ForwardBackward before Configure: %v", err)
	}

	// parameter list mismatches name the tensor
	spec := g.Spec()
	spec.Params[3].Shape = []int64{1, 2}
	_, err := New(Options{}).Configure(ctx, &pb.ConfigureRequest{Model: spec, Optimizer: &pb.OptimizerSpec{Beta1: 0.9, Beta2: 0.95, Eps: 1e-8}})
	if sdk.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), spec.Params[3].Name) {
		t.Errorf("bad shape: %v", err)
	}
	spec = g.Spec()
	missing := spec.Params[len(spec.Params)-1].Name
	spec.Params = spec.Params[:len(spec.Params)-1]
	_, err = New(Options{}).Configure(ctx, &pb.ConfigureRequest{Model: spec, Optimizer: &pb.OptimizerSpec{Beta1: 0.9, Beta2: 0.95, Eps: 1e-8}})
	if sdk.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), missing) {
		t.Errorf("missing tensor: %v", err)
	}

	b := newGoldenBackend(t, g)
	cases := []struct {
		field  string
		mutate func(*pb.Batch)
	}{
		{"batch.tokens[17]", func(x *pb.Batch) { x.Tokens[17] = int32(g.Model.VocabSize) }},
		{"batch.tokens", func(x *pb.Batch) { x.Tokens = x.Tokens[1:] }},
		{"batch.seq_len", func(x *pb.Batch) { x.SeqLen = g.Model.BlockSize + 1 }},
		{"batch.loss_weights[3]", func(x *pb.Batch) { x.LossWeights[3] = -1 }},
		{"batch.targets[4]", func(x *pb.Batch) { x.Targets[4] = -1; x.LossWeights[4] = 1 }},
		{"batch.segment_ids", func(x *pb.Batch) { x.SegmentIds = []int32{1} }},
	}
	for _, c := range cases {
		batch := g.NewBatch()
		c.mutate(batch)
		_, err := b.ForwardBackward(ctx, &pb.ForwardBackwardRequest{Batch: batch, GradScale: 1})
		if sdk.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), c.field+":") {
			t.Errorf("%s: got %v", c.field, err)
		}
	}
	// unknown tensor in SetState
	_, err = b.SetState(ctx, sdk.NewTensorList(0,
		sdk.F32Tensor("nope.weight", pb.TensorRole_TENSOR_ROLE_PARAM, []int64{1}, []float32{0})))
	if sdk.Code(err) != codes.NotFound {
		t.Errorf("unknown tensor: %v", err)
	}
}

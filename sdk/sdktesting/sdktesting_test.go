package sdktesting_test

import (
	"context"
	"slices"
	"testing"

	"github.com/mypt/mypt/sdk"
	"github.com/mypt/mypt/sdk/examples/bigram"
	pb "github.com/mypt/mypt/sdk/proto/backendv1"
	"github.com/mypt/mypt/sdk/sdktesting"
)

// TestTrainsInProcess runs a short training loop over the in-process
// harness: a bigram model on a deterministic cycle 0→1→2→3→0 must learn to
// predict it (loss falls far below ln 4 and every prediction is right).
func TestTrainsInProcess(t *testing.T) {
	ctx := context.Background()
	c := sdktesting.Connect(t, bigram.New())
	const v = 4
	_, err := c.Configure(ctx, &pb.ConfigureRequest{
		Model: &pb.ModelSpec{VocabSize: v, BlockSize: 8, Params: []*pb.ParamSpec{
			{Name: bigram.WeightName, Shape: []int64{v, v}, Dtype: pb.DType_DTYPE_F32},
		}},
		Optimizer: &pb.OptimizerSpec{Beta1: 0.9, Beta2: 0.95, Eps: 1e-8},
	})
	if err != nil {
		t.Fatal(err)
	}
	batch := &pb.Batch{BatchSize: 2, SeqLen: 4,
		Tokens:      []int32{0, 1, 2, 3, 2, 3, 0, 1},
		Targets:     []int32{1, 2, 3, 0, 3, 0, 1, 2},
		LossWeights: []float32{1, 1, 1, 1, 1, 1, 1, 1},
	}
	var first, last float64
	for step := range 200 {
		fb, err := c.ForwardBackward(ctx, &pb.ForwardBackwardRequest{Batch: batch, GradScale: 1.0 / 8})
		if err != nil {
			t.Fatal(err)
		}
		if step == 0 {
			first = fb.GetLossSum() / fb.GetWeightSum()
		}
		last = fb.GetLossSum() / fb.GetWeightSum()
		if _, err := c.OptimizerStep(ctx, &pb.OptimizerStepRequest{LearningRate: 0.05, ClipNorm: 1}); err != nil {
			t.Fatal(err)
		}
	}
	ev, err := c.Evaluate(ctx, &pb.EvaluateRequest{Batch: batch})
	if err != nil {
		t.Fatal(err)
	}
	if first < 1.38 || last > 0.05 || ev.GetCorrect() != 8 {
		t.Fatalf("loss %.4f → %.4f, %d/8 correct; want ln 4 → < 0.05 and 8/8", first, last, ev.GetCorrect())
	}
	if sdk.Code(nil) != 0 {
		t.Fatal("Code(nil) is not OK")
	}
}

// TestState reads back, keyed "ROLE/name", exactly the tensor SetState sent.
func TestState(t *testing.T) {
	ctx := context.Background()
	c := sdktesting.Connect(t, bigram.New())
	const v = 2
	if _, err := c.Configure(ctx, &pb.ConfigureRequest{
		Model: &pb.ModelSpec{VocabSize: v, BlockSize: 4, Params: []*pb.ParamSpec{
			{Name: bigram.WeightName, Shape: []int64{v, v}, Dtype: pb.DType_DTYPE_F32},
		}},
		Optimizer: &pb.OptimizerSpec{Beta1: 0.9, Beta2: 0.95, Eps: 1e-8},
	}); err != nil {
		t.Fatal(err)
	}
	want := []float32{1.5, -2, 0.25, 3}
	if _, err := c.SetState(ctx, sdk.NewTensorList(0,
		sdk.F32Tensor(bigram.WeightName, pb.TensorRole_TENSOR_ROLE_PARAM, []int64{v, v}, want))); err != nil {
		t.Fatal(err)
	}
	got := sdktesting.State(t, c, pb.TensorRole_TENSOR_ROLE_PARAM)
	if w := got["TENSOR_ROLE_PARAM/"+bigram.WeightName]; len(got) != 1 || !slices.Equal(w, want) {
		t.Errorf("State = %v, want {TENSOR_ROLE_PARAM/%s: %v}", got, bigram.WeightName, want)
	}
}

package xla

import (
	"context"
	"math"
	"strings"
	"testing"

	"github.com/mypt/mypt/sdk"
	pb "github.com/mypt/mypt/sdk/proto/backendv1"
)

// Float32 tolerances against the float64 PyTorch oracle (conformance/golden). An element
// passes when |got − want| ≤ atol + rtol·|want|.
const (
	logitAtol, logitRtol = 2e-5, 1e-4
	gradAtol, gradRtol   = 2e-6, 2e-3
	// After 3 AdamW steps: Adam divides by √v, so an element's update error is about
	// lr·(relative error of its gradient); atol is 0.5% of the largest possible movement.
	paramAtolPerLRStep, paramRtol = 5e-3, 1e-4
	lossRtol                      = 1e-5 // loss sums and gradient norms
	trajRtol                      = 2e-3 // 20-step loss trajectory (Adam amplifies rounding)
)

func relErr(got, want float64) float64 { return math.Abs(got-want) / math.Max(math.Abs(want), 1e-12) }

func TestGoldenForwardBackward(t *testing.T) {
	ctx := context.Background()
	for _, g := range loadGoldenCases(t) {
		t.Run(g.Case, func(t *testing.T) {
			b := newGoldenBackend(t, g)
			batch := g.batch()
			ev, err := b.Evaluate(ctx, &pb.EvaluateRequest{Batch: batch, ReturnLogits: true})
			if err != nil {
				t.Fatal(err)
			}
			assertClose(t, "logits", ev.Logits, g.tensors["logits"].f32, logitAtol, logitRtol)
			if e := relErr(ev.LossSum, g.LossSum); e > lossRtol || ev.WeightSum != g.WeightSum {
				t.Errorf("Evaluate loss_sum %v weight_sum %v, want %v %v", ev.LossSum, ev.WeightSum, g.LossSum, g.WeightSum)
			}

			scale := float32(1 / math.Max(g.WeightSum, 1))
			fb, err := b.ForwardBackward(ctx, &pb.ForwardBackwardRequest{Batch: batch, GradScale: scale})
			if err != nil {
				t.Fatal(err)
			}
			if e := relErr(fb.LossSum, g.LossSum); e > lossRtol {
				t.Errorf("ForwardBackward loss_sum %v, want %v", fb.LossSum, g.LossSum)
			}
			grads := getState(t, b, pb.TensorRole_TENSOR_ROLE_GRAD)
			for _, p := range g.Model.Params {
				assertClose(t, "grad "+p.Name, grads["TENSOR_ROLE_GRAD/"+p.Name], g.tensors["grad."+p.Name].f32, gradAtol, gradRtol)
			}
		})
	}
}

// Gradient accumulation: the batch's rows as two micro-batches with the global scale add up
// to the whole batch's gradients.
func TestGoldenAccumulation(t *testing.T) {
	ctx := context.Background()
	for _, g := range loadGoldenCases(t) {
		t.Run(g.Case, func(t *testing.T) {
			b := newGoldenBackend(t, g)
			full := g.batch()
			T := int(full.SeqLen)
			scale := float32(1 / math.Max(g.WeightSum, 1))
			var lossSum float64
			for r := 0; r < int(full.BatchSize); r++ {
				row := &pb.Batch{BatchSize: 1, SeqLen: full.SeqLen, Tokens: full.Tokens[r*T : (r+1)*T],
					Targets: full.Targets[r*T : (r+1)*T], LossWeights: full.LossWeights[r*T : (r+1)*T]}
				if full.SegmentIds != nil {
					row.SegmentIds = full.SegmentIds[r*T : (r+1)*T]
				}
				fb, err := b.ForwardBackward(ctx, &pb.ForwardBackwardRequest{Batch: row, GradScale: scale, DropoutSeed: uint64(r)})
				if err != nil {
					t.Fatal(err)
				}
				lossSum += fb.LossSum
			}
			if e := relErr(lossSum, g.LossSum); e > lossRtol {
				t.Errorf("Σ loss_sum %v, want %v", lossSum, g.LossSum)
			}
			grads := getState(t, b, pb.TensorRole_TENSOR_ROLE_GRAD)
			for _, p := range g.Model.Params {
				assertClose(t, "grad "+p.Name, grads["TENSOR_ROLE_GRAD/"+p.Name], g.tensors["grad."+p.Name].f32, gradAtol, gradRtol)
			}
		})
	}
}

func trainSteps(t *testing.T, b *sdk.Client, g *goldenCase, steps int, lr, wd, clip float64) (losses, norms []float64) {
	t.Helper()
	ctx := context.Background()
	batch := g.batch()
	scale := float32(1 / math.Max(g.WeightSum, 1))
	for s := 0; s < steps; s++ {
		fb, err := b.ForwardBackward(ctx, &pb.ForwardBackwardRequest{Batch: batch, GradScale: scale})
		if err != nil {
			t.Fatal(err)
		}
		losses = append(losses, fb.LossSum/math.Max(fb.WeightSum, 1))
		st, err := b.OptimizerStep(ctx, &pb.OptimizerStepRequest{LearningRate: lr, WeightDecay: wd, ClipNorm: clip})
		if err != nil {
			t.Fatal(err)
		}
		if st.OptimizerSteps != uint64(s+1) {
			t.Fatalf("optimizer_steps %d after step %d", st.OptimizerSteps, s+1)
		}
		norms = append(norms, st.GradNorm)
	}
	return losses, norms
}

func TestGoldenAdamW(t *testing.T) {
	for _, g := range loadGoldenCases(t) {
		t.Run(g.Case, func(t *testing.T) {
			b := newGoldenBackend(t, g)
			a := g.AdamW
			losses, norms := trainSteps(t, b, g, a.Steps, a.LearningRate, a.WeightDecay, a.ClipNorm)
			for i := range norms {
				if e := relErr(norms[i], a.GradNorms[i]); e > 1e-4 {
					t.Errorf("step %d grad_norm %v, want %v", i+1, norms[i], a.GradNorms[i])
				}
				if e := relErr(losses[i], a.Losses[i]); e > 1e-4 {
					t.Errorf("step %d loss %v, want %v", i+1, losses[i], a.Losses[i])
				}
			}
			st := getState(t, b)
			atol := paramAtolPerLRStep * a.LearningRate * float64(a.Steps)
			for _, p := range g.Model.Params {
				got, want := st["TENSOR_ROLE_PARAM/"+p.Name], g.tensors["step3."+p.Name].f32
				if strings.HasSuffix(p.Name, "sa.qkv.bias") {
					// The key bias shifts every score of a softmax row equally, so its exact
					// gradient is 0 and Adam turns rounding noise into steps of up to lr: the
					// key third may move at most lr per step; q and v are held to atol.
					C := len(got) / 3
					assertClose(t, "param "+p.Name+" (k part)", got[C:2*C], want[C:2*C], a.LearningRate*float64(a.Steps), 0)
					got = append(append([]float32{}, got[:C]...), got[2*C:]...)
					want = append(append([]float32{}, want[:C]...), want[2*C:]...)
				}
				assertClose(t, "param "+p.Name, got, want, atol, paramRtol)
				assertClose(t, "adam_m "+p.Name, st["TENSOR_ROLE_ADAM_M/"+p.Name], g.tensors["step3.adam_m."+p.Name].f32, 1e-7, 2e-3)
				assertClose(t, "adam_v "+p.Name, st["TENSOR_ROLE_ADAM_V/"+p.Name], g.tensors["step3.adam_v."+p.Name].f32, 1e-10, 4e-3)
			}
			// gradients are zero after a step
			for name, v := range getState(t, b, pb.TensorRole_TENSOR_ROLE_GRAD) {
				for _, x := range v {
					if x != 0 {
						t.Fatalf("%s not zeroed after OptimizerStep", name)
					}
				}
			}
		})
	}
}

func TestGoldenTrajectory(t *testing.T) {
	for _, g := range loadGoldenCases(t) {
		t.Run(g.Case, func(t *testing.T) {
			b := newGoldenBackend(t, g)
			tr := g.Trajectory
			losses, _ := trainSteps(t, b, g, tr.Steps, tr.LearningRate, tr.WeightDecay, tr.ClipNorm)
			worst := 0.0
			for i := range losses {
				// relative to the loss, with a floor for the near-zero tail
				e := math.Abs(losses[i]-tr.Losses[i]) / math.Max(tr.Losses[i], 0.1)
				worst = max(worst, e)
				if e > trajRtol {
					t.Errorf("step %d loss %v, want %v", i+1, losses[i], tr.Losses[i])
				}
			}
			t.Logf("20-step trajectory worst relative error %.2g", worst)
		})
	}
}

// All-zero loss weights: loss 0, weight 0 and zero gradients, never NaN.
func TestZeroWeights(t *testing.T) {
	ctx := context.Background()
	g := loadGoldenCases(t)[0]
	b := newGoldenBackend(t, g)
	batch := g.batch()
	batch.LossWeights = make([]float32, len(batch.LossWeights))
	fb, err := b.ForwardBackward(ctx, &pb.ForwardBackwardRequest{Batch: batch, GradScale: 1})
	if err != nil {
		t.Fatal(err)
	}
	if fb.LossSum != 0 || fb.WeightSum != 0 {
		t.Fatalf("loss_sum %v weight_sum %v, want 0 0", fb.LossSum, fb.WeightSum)
	}
	for name, v := range getState(t, b, pb.TensorRole_TENSOR_ROLE_GRAD) {
		for _, x := range v {
			if x != 0 {
				t.Fatalf("%s: gradient %v, want 0", name, x)
			}
		}
	}
	st, err := b.OptimizerStep(ctx, &pb.OptimizerStepRequest{LearningRate: 1e-3, ClipNorm: 1})
	if err != nil || st.GradNorm != 0 {
		t.Fatalf("OptimizerStep: norm %v err %v", st.GetGradNorm(), err)
	}
	for name, v := range getState(t, b, pb.TensorRole_TENSOR_ROLE_PARAM) {
		for _, x := range v {
			if math.IsNaN(float64(x)) {
				t.Fatalf("%s: NaN after a zero-gradient step", name)
			}
		}
	}
}

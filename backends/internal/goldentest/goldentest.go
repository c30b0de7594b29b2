// Package goldentest checks a backend against the PyTorch golden vectors
// (conformance/golden) as Go tests: Evaluate's logits and ForwardBackward's loss and
// gradients, gradient accumulation over micro-batches, three AdamW steps, a 20-step loss
// trajectory and an all-zero-weight batch. A backend's golden_test.go picks the backend
// and its tolerances (Suite); the helpers serve its other tests.
package goldentest

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/mypt/mypt/conformance"
	"github.com/mypt/mypt/conformance/golden"
	"github.com/mypt/mypt/sdk"
	pb "github.com/mypt/mypt/sdk/proto/backendv1"
)

// Tolerances bound a backend's errors against the float64 oracle. An element passes
// when |got − want| ≤ atol + rtol·|want|; the *Rtol fields alone are relative errors.
type Tolerances struct {
	LogitAtol, LogitRtol float64 // Evaluate's logits
	GradAtol, GradRtol   float64 // accumulated gradients
	// After the AdamW steps the parameters' atol is ParamAtolPerLRStep·lr·steps.
	ParamAtolPerLRStep, ParamRtol float64
	AdamMAtol, AdamMRtol          float64 // first Adam moments after the AdamW steps
	AdamVAtol, AdamVRtol          float64 // second Adam moments after the AdamW steps
	LossRtol                      float64 // loss sums
	StepRtol                      float64 // gradient norms and losses of the AdamW steps
	TrajectoryRtol                float64 // the trajectory's losses, relative to max(loss, 0.1)
}

// F32 are the tolerances of a float32 backend: the conformance suite's
// (conformance.DefaultTolerances), so the backends' own tests and the suite hold them to
// the same bounds.
var F32 = fromConformance(conformance.DefaultTolerances(pb.DType_DTYPE_F32))

// fromConformance takes the conformance suite's tolerances into this package's form
// (their AtolOfMax terms, used only for 16-bit dtypes, have no counterpart here).
func fromConformance(c conformance.Tolerances) Tolerances {
	return Tolerances{
		LogitAtol: c.Logits.Atol, LogitRtol: c.Logits.Rtol,
		GradAtol: c.Grads.Atol, GradRtol: c.Grads.Rtol,
		ParamAtolPerLRStep: c.ParamPerLRStep, ParamRtol: c.ParamRtol,
		AdamMAtol: c.AdamM.Atol, AdamMRtol: c.AdamM.Rtol,
		AdamVAtol: c.AdamV.Atol, AdamVRtol: c.AdamV.Rtol,
		LossRtol:       c.Loss,
		StepRtol:       c.StepLoss,
		TrajectoryRtol: c.Trajectory,
	}
}

// Suite runs the golden-vector tests on the backends New returns, held to Tol.
type Suite struct {
	// New returns a fresh, unconfigured backend (in process, or an *sdk.Client).
	New func(t testing.TB) sdk.Backend
	Tol Tolerances
}

// Cases loads the golden cases (new ones on every call, so a test may modify them).
func Cases(t testing.TB) []*golden.Case {
	t.Helper()
	cases, err := golden.Load()
	if err != nil {
		t.Fatal(err)
	}
	return cases
}

// Open configures b for g (its model and optimizer, MaxBatchSize its batch size, then
// edit applied to the request), loads g's initial parameters and shuts b down when the
// test ends.
func Open[B sdk.Backend](t testing.TB, g *golden.Case, b B, edit ...func(*pb.ConfigureRequest)) B {
	t.Helper()
	ctx := context.Background()
	req := &pb.ConfigureRequest{Model: g.Spec(), Optimizer: g.OptimizerSpec(), MaxBatchSize: g.Batch.BatchSize}
	for _, e := range edit {
		e(req)
	}
	if _, err := b.Configure(ctx, req); err != nil {
		t.Fatalf("%s: Configure: %v", g.Case, err)
	}
	if _, err := b.SetState(ctx, g.InitState()); err != nil {
		t.Fatalf("%s: SetState: %v", g.Case, err)
	}
	t.Cleanup(func() { _ = b.Shutdown(ctx) })
	return b
}

// State returns b's tensors of the given roles (GetState's default roles when none),
// keyed "ROLE/name", e.g. "TENSOR_ROLE_GRAD/ln_f.weight".
func State(t testing.TB, b sdk.Backend, roles ...pb.TensorRole) map[string][]float32 {
	t.Helper()
	w := &sdk.StateCollector{}
	if err := b.GetState(context.Background(), &pb.GetStateRequest{Roles: roles}, w); err != nil {
		t.Fatal(err)
	}
	out := map[string][]float32{}
	for _, x := range w.Tensors {
		if x.DType != pb.DType_DTYPE_F32 {
			t.Fatalf("GetState: tensor %s is %v, want F32", x.Name, x.DType)
		}
		v, err := sdk.F32Values(x.Data)
		if err != nil {
			t.Fatalf("GetState: tensor %s: %v", x.Name, err)
		}
		out[fmt.Sprintf("%v/%s", x.Role, x.Name)] = v
	}
	return out
}

// RelErr is |got − want| / max(|want|, 1e-12).
func RelErr(got, want float64) float64 {
	return math.Abs(got-want) / math.Max(math.Abs(want), 1e-12)
}

// closeness is max |got−want| / (atol + rtol·|want|) over the elements: ≤ 1 passes.
func closeness(got, want []float32, atol, rtol float64) (worst float64, at int, maxAbs float64) {
	for i := range want {
		d := math.Abs(float64(got[i]) - float64(want[i]))
		if math.IsNaN(d) {
			return math.Inf(1), i, d
		}
		maxAbs = max(maxAbs, d)
		if r := d / (atol + rtol*math.Abs(float64(want[i]))); r > worst {
			worst, at = r, i
		}
	}
	return worst, at, maxAbs
}

// AssertClose fails t unless every element satisfies |got − want| ≤ atol + rtol·|want|
// (and logs the worst error with -v).
func AssertClose(t testing.TB, what string, got, want []float32, atol, rtol float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d values, want %d", what, len(got), len(want))
	}
	worst, at, maxAbs := closeness(got, want, atol, rtol)
	if worst > 1 {
		t.Errorf("%s: [%d] = %v, want %v (max abs err %.3g, atol %g rtol %g)", what, at, got[at], want[at], maxAbs, atol, rtol)
	}
	if testing.Verbose() {
		t.Logf("%s: max abs err %.3g (tolerance ratio %.3f)", what, maxAbs, worst)
	}
}

// open is Open for the suite's backend.
func (s Suite) open(t testing.TB, g *golden.Case) sdk.Backend { return Open(t, g, s.New(t)) }

// ForwardBackward checks Evaluate's logits and loss, then ForwardBackward's loss and
// gradients, on every case.
func (s Suite) ForwardBackward(t *testing.T) {
	ctx := context.Background()
	for _, g := range Cases(t) {
		t.Run(g.Case, func(t *testing.T) {
			b := s.open(t, g)
			batch := g.NewBatch()
			ev, err := b.Evaluate(ctx, &pb.EvaluateRequest{Batch: batch, ReturnLogits: true})
			if err != nil {
				t.Fatal(err)
			}
			AssertClose(t, "logits", ev.Logits, g.Logits(), s.Tol.LogitAtol, s.Tol.LogitRtol)
			if e := RelErr(ev.LossSum, g.LossSum); e > s.Tol.LossRtol || ev.WeightSum != g.WeightSum {
				t.Errorf("Evaluate loss_sum %v weight_sum %v, want %v %v", ev.LossSum, ev.WeightSum, g.LossSum, g.WeightSum)
			}
			fb, err := b.ForwardBackward(ctx, &pb.ForwardBackwardRequest{Batch: batch, GradScale: g.GradScale()})
			if err != nil {
				t.Fatal(err)
			}
			if e := RelErr(fb.LossSum, g.LossSum); e > s.Tol.LossRtol {
				t.Errorf("ForwardBackward loss_sum %v, want %v", fb.LossSum, g.LossSum)
			}
			s.checkGrads(t, b, g)
		})
	}
}

func (s Suite) checkGrads(t *testing.T, b sdk.Backend, g *golden.Case) {
	t.Helper()
	grads := State(t, b, pb.TensorRole_TENSOR_ROLE_GRAD)
	for _, p := range g.Model.Params {
		AssertClose(t, "grad "+p.Name, grads["TENSOR_ROLE_GRAD/"+p.Name], g.F32("grad."+p.Name), s.Tol.GradAtol, s.Tol.GradRtol)
	}
}

// Accumulation checks gradient accumulation: the batch's rows as micro-batches with the
// global scale add up to the whole batch's loss and gradients.
func (s Suite) Accumulation(t *testing.T) {
	ctx := context.Background()
	for _, g := range Cases(t) {
		t.Run(g.Case, func(t *testing.T) {
			b := s.open(t, g)
			full := g.NewBatch()
			T := int(full.SeqLen)
			var lossSum float64
			for r := 0; r < int(full.BatchSize); r++ {
				row := &pb.Batch{BatchSize: 1, SeqLen: full.SeqLen, Tokens: full.Tokens[r*T : (r+1)*T],
					Targets: full.Targets[r*T : (r+1)*T], LossWeights: full.LossWeights[r*T : (r+1)*T]}
				if full.SegmentIds != nil {
					row.SegmentIds = full.SegmentIds[r*T : (r+1)*T]
				}
				fb, err := b.ForwardBackward(ctx, &pb.ForwardBackwardRequest{Batch: row, GradScale: g.GradScale(), DropoutSeed: uint64(r)})
				if err != nil {
					t.Fatal(err)
				}
				lossSum += fb.LossSum
			}
			if e := RelErr(lossSum, g.LossSum); e > s.Tol.LossRtol {
				t.Errorf("Σ loss_sum %v, want %v", lossSum, g.LossSum)
			}
			s.checkGrads(t, b, g)
		})
	}
}

// trainSteps runs steps of ForwardBackward on g's batch then OptimizerStep, returning
// each step's loss (before the update) and gradient norm.
func trainSteps(t *testing.T, b sdk.Backend, g *golden.Case, st golden.Steps) (losses, norms []float64) {
	t.Helper()
	ctx := context.Background()
	batch := g.NewBatch()
	for i := 0; i < st.Steps; i++ {
		fb, err := b.ForwardBackward(ctx, &pb.ForwardBackwardRequest{Batch: batch, GradScale: g.GradScale()})
		if err != nil {
			t.Fatal(err)
		}
		losses = append(losses, fb.LossSum/math.Max(fb.WeightSum, 1))
		r, err := b.OptimizerStep(ctx, &pb.OptimizerStepRequest{LearningRate: st.LearningRate, WeightDecay: st.WeightDecay, ClipNorm: st.ClipNorm})
		if err != nil {
			t.Fatal(err)
		}
		if r.OptimizerSteps != uint64(i+1) {
			t.Fatalf("optimizer_steps %d after step %d", r.OptimizerSteps, i+1)
		}
		norms = append(norms, r.GradNorm)
	}
	return losses, norms
}

// AdamW checks the gradient norms, losses, parameters and Adam moments of the cases'
// AdamW steps, and that the gradients are zero after a step.
func (s Suite) AdamW(t *testing.T) {
	tol := s.Tol
	for _, g := range Cases(t) {
		t.Run(g.Case, func(t *testing.T) {
			b := s.open(t, g)
			a := g.AdamW
			losses, norms := trainSteps(t, b, g, a)
			for i := range norms {
				if e := RelErr(norms[i], a.GradNorms[i]); e > tol.StepRtol {
					t.Errorf("step %d grad_norm %v, want %v", i+1, norms[i], a.GradNorms[i])
				}
				if e := RelErr(losses[i], a.Losses[i]); e > tol.StepRtol {
					t.Errorf("step %d loss %v, want %v", i+1, losses[i], a.Losses[i])
				}
			}
			st := State(t, b)
			atol := tol.ParamAtolPerLRStep * a.LearningRate * float64(a.Steps)
			for _, p := range g.Model.Params {
				got, want := st["TENSOR_ROLE_PARAM/"+p.Name], g.F32("step3."+p.Name)
				if strings.HasSuffix(p.Name, "sa.qkv.bias") {
					// The key bias shifts every score of a softmax row equally, so its exact
					// gradient is 0 and Adam turns rounding noise into steps of up to lr: the
					// key third may move at most lr per step; q and v are held to atol.
					C := len(got) / 3
					AssertClose(t, "param "+p.Name+" (k part)", got[C:2*C], want[C:2*C], a.LearningRate*float64(a.Steps), 0)
					got = append(append([]float32{}, got[:C]...), got[2*C:]...)
					want = append(append([]float32{}, want[:C]...), want[2*C:]...)
				}
				AssertClose(t, "param "+p.Name, got, want, atol, tol.ParamRtol)
				AssertClose(t, "adam_m "+p.Name, st["TENSOR_ROLE_ADAM_M/"+p.Name], g.F32("step3.adam_m."+p.Name), tol.AdamMAtol, tol.AdamMRtol)
				AssertClose(t, "adam_v "+p.Name, st["TENSOR_ROLE_ADAM_V/"+p.Name], g.F32("step3.adam_v."+p.Name), tol.AdamVAtol, tol.AdamVRtol)
			}
			for name, v := range State(t, b, pb.TensorRole_TENSOR_ROLE_GRAD) {
				for _, x := range v {
					if x != 0 {
						t.Fatalf("%s not zeroed after OptimizerStep", name)
					}
				}
			}
		})
	}
}

// Trajectory checks the losses of the cases' 20-step trajectories.
func (s Suite) Trajectory(t *testing.T) {
	for _, g := range Cases(t) {
		t.Run(g.Case, func(t *testing.T) {
			b := s.open(t, g)
			tr := g.Trajectory
			losses, _ := trainSteps(t, b, g, tr)
			worst := 0.0
			for i := range losses {
				// relative to the loss, with a floor for the near-zero tail
				e := math.Abs(losses[i]-tr.Losses[i]) / math.Max(tr.Losses[i], 0.1)
				worst = max(worst, e)
				if e > s.Tol.TrajectoryRtol {
					t.Errorf("step %d loss %v, want %v", i+1, losses[i], tr.Losses[i])
				}
			}
			t.Logf("20-step trajectory worst relative error %.2g", worst)
		})
	}
}

// ZeroWeights checks a batch whose loss weights are all zero: loss 0, weight 0 and zero
// gradients, and a step that leaves no NaN.
func (s Suite) ZeroWeights(t *testing.T) {
	ctx := context.Background()
	g := Cases(t)[0]
	b := s.open(t, g)
	batch := g.NewBatch()
	batch.LossWeights = make([]float32, len(batch.LossWeights))
	fb, err := b.ForwardBackward(ctx, &pb.ForwardBackwardRequest{Batch: batch, GradScale: 1})
	if err != nil {
		t.Fatal(err)
	}
	if fb.LossSum != 0 || fb.WeightSum != 0 {
		t.Fatalf("loss_sum %v weight_sum %v, want 0 0", fb.LossSum, fb.WeightSum)
	}
	for name, v := range State(t, b, pb.TensorRole_TENSOR_ROLE_GRAD) {
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
	for name, v := range State(t, b, pb.TensorRole_TENSOR_ROLE_PARAM) {
		for _, x := range v {
			if math.IsNaN(float64(x)) {
				t.Fatalf("%s: NaN after a zero-gradient step", name)
			}
		}
	}
}

// frozenName is what Frozen freezes: the first block and the embedding tables (MyPT's
// freeze_layers 1 plus freeze_embeddings; with tied weights lm_head.weight too).
func frozenName(name string) bool {
	return strings.HasPrefix(name, "blocks.0.") || name == "token_embedding_table.weight" || name == "position_embedding_table.weight"
}

// Frozen trains every case's AdamW steps with the first block and the embeddings frozen
// (ParamSpec.frozen): frozen tensors stay bit-identical with zero moments, the first
// gradient norm is the norm of the trainable tensors' gradients (read from an unfrozen
// ForwardBackward), and every trainable tensor moves.
func (s Suite) Frozen(t *testing.T) {
	ctx := context.Background()
	for _, g := range Cases(t) {
		t.Run(g.Case, func(t *testing.T) {
			b := s.open(t, g)
			if _, err := b.ForwardBackward(ctx, &pb.ForwardBackwardRequest{Batch: g.NewBatch(), GradScale: g.GradScale()}); err != nil {
				t.Fatal(err)
			}
			var sum float64
			for k, v := range State(t, b, pb.TensorRole_TENSOR_ROLE_GRAD) {
				if !frozenName(strings.TrimPrefix(k, "TENSOR_ROLE_GRAD/")) {
					for _, x := range v {
						sum += float64(x) * float64(x)
					}
				}
			}
			b = Open(t, g, s.New(t), func(r *pb.ConfigureRequest) {
				for _, p := range r.Model.Params {
					p.Frozen = frozenName(p.Name)
				}
			})
			_, norms := trainSteps(t, b, g, g.AdamW)
			if e := RelErr(norms[0], math.Sqrt(sum)); e > s.Tol.LossRtol {
				t.Errorf("first grad_norm %.9g, want the trainable tensors' %.9g (relative error %.3g)", norms[0], math.Sqrt(sum), e)
			}
			st := State(t, b)
			for _, p := range g.Model.Params {
				got, init := st["TENSOR_ROLE_PARAM/"+p.Name], g.F32("init."+p.Name)
				same := slices.EqualFunc(got, init, func(x, y float32) bool { return math.Float32bits(x) == math.Float32bits(y) })
				if !frozenName(p.Name) {
					if same {
						t.Errorf("trainable %s did not move", p.Name)
					}
					continue
				}
				if !same {
					t.Errorf("frozen %s moved", p.Name)
				}
				for _, role := range []string{"TENSOR_ROLE_ADAM_M/", "TENSOR_ROLE_ADAM_V/"} {
					if slices.ContainsFunc(st[role+p.Name], func(x float32) bool { return x != 0 }) {
						t.Errorf("frozen %s: %s not zero", p.Name, role)
					}
				}
			}
		})
	}
}

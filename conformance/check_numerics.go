package conformance

import (
	"math"
	"strconv"

	"github.com/mypt/mypt/conformance/golden"
	"github.com/mypt/mypt/sdk"
	pb "github.com/mypt/mypt/sdk/proto/backendv1"
)

// numericsChecks compares the backend with the PyTorch golden vectors, case
// by case, in compute dtype d.
func (s *suite) numericsChecks(d pb.DType) []check {
	var out []check
	prefix := "numerics/" + dtypeLabel(d) + "/"
	for _, g := range s.golden {
		forward, training := inDType(d, caseProfile(g, ProfileCore)), inDType(d, caseProfile(g, ProfileTraining))
		out = append(out,
			check{prefix + g.Case + "/logits", forward, func(c *chk) { numLogits(c, g, d) }},
			check{prefix + g.Case + "/loss", forward, func(c *chk) { numLoss(c, g, d) }},
			check{prefix + g.Case + "/gradients", training, func(c *chk) { numGradients(c, g, d) }},
			check{prefix + g.Case + "/adamw", training, func(c *chk) { numAdamW(c, g, d) }},
			check{prefix + g.Case + "/trajectory", training, func(c *chk) { numTrajectory(c, g, d) }},
		)
	}
	return out
}

// caseProfile is the profile of a check of profile p on golden case g: a
// packed case's checks certify packing (they run only when the backend
// declares it).
func caseProfile(g *golden.Case, p Profile) Profile {
	if g.Batch.Packed {
		return ProfilePacked
	}
	return p
}

// goldenSetup skips unless the backend can run case g in dtype d, then
// returns the shared backend configured with g's initial parameters.
func (c *chk) goldenSetup(g *golden.Case, d pb.DType, features ...pb.Feature) sdk.Backend {
	c.Helper()
	c.needDType(d)
	c.needCase(g)
	c.need(features...)
	b := c.backend()
	c.openCase(b, g, d)
	return b
}

func numLogits(c *chk, g *golden.Case, d pb.DType) {
	b := c.goldenSetup(g, d, pb.Feature_FEATURE_RETURN_LOGITS)
	tol := c.s.opts.tolerances(d)
	batch := g.NewBatch()
	ev := c.evaluate(b, batch, true)
	c.closeTo("logits", ev.Logits, g.Logits(), tol.Logits)
	// correct: argmax == target where the weight is positive; positions whose
	// top two logits are closer than the tolerance may go either way.
	V := int(g.Model.VocabSize)
	want := g.Logits()
	lo, hi := 0, 0
	for i, w := range batch.LossWeights {
		if w <= 0 {
			continue
		}
		row := want[i*V : (i+1)*V]
		top, second := 0, -1
		for j := range row {
			if row[j] > row[top] {
				top = j
			}
		}
		for j := range row {
			if j != top && (second < 0 || row[j] > row[second]) {
				second = j
			}
		}
		bound := 2 * (tol.Logits.Atol + tol.Logits.Rtol*math.Abs(float64(row[top])) + tol.Logits.AtolOfMax*maxAbs(want))
		tgt := int(batch.Targets[i])
		switch {
		case float64(row[top]-row[second]) > bound:
			if top == tgt {
				lo++
				hi++
			}
		case tgt == top || tgt == second:
			hi++
		}
	}
	if int(ev.Correct) < lo || int(ev.Correct) > hi {
		c.Errorf("Evaluate correct = %d, want %d (from the golden logits; %d with near-ties)", ev.Correct, lo, hi)
	}
}

func maxAbs(v []float32) float64 {
	var m float64
	for _, x := range v {
		m = math.Max(m, math.Abs(float64(x)))
	}
	return m
}

func countPositive(w []float32) uint64 {
	var n uint64
	for _, x := range w {
		if x > 0 {
			n++
		}
	}
	return n
}

func numLoss(c *chk, g *golden.Case, d pb.DType) {
	b := c.goldenSetup(g, d)
	tol := c.s.opts.tolerances(d)
	batch := g.NewBatch()
	ev := c.evaluate(b, batch, false)
	c.relClose("Evaluate loss_sum", ev.LossSum, g.LossSum, tol.Loss, 1e-12)
	exactWeightSum(c, "Evaluate", ev.WeightSum, g.WeightSum)
	if want := countPositive(batch.LossWeights); ev.Counted != want {
		c.Errorf("Evaluate counted = %d, want %d (positions with weight > 0)", ev.Counted, want)
	}
	c.summarize("loss %.6f (golden %.6f)", ev.LossSum/math.Max(ev.WeightSum, 1), g.Loss)
	if !c.has(pb.Feature_FEATURE_TRAINING) {
		return
	}
	fb := c.forwardBackward(b, batch, g.GradScale(), 0)
	c.relClose("ForwardBackward loss_sum", fb.LossSum, g.LossSum, tol.Loss, 1e-12)
	exactWeightSum(c, "ForwardBackward", fb.WeightSum, g.WeightSum)
	if want := uint64(batch.BatchSize) * uint64(batch.SeqLen); fb.Tokens != want {
		c.Errorf("ForwardBackward tokens = %d, want B·T = %d", fb.Tokens, want)
	}
}

// exactWeightSum holds a weight_sum to the golden one exactly: the golden
// loss weights (0, 1, 1.5, 2) and all their partial sums are exact in
// float32, so a correct sum in any order, in float32 or wider, is exact.
func exactWeightSum(c *chk, call string, got, want float64) {
	c.Helper()
	if got != want {
		c.Errorf("%s weight_sum = %v, want exactly %v (the sum of the batch's loss weights)", call, got, want)
	}
}

func numGradients(c *chk, g *golden.Case, d pb.DType) {
	b := c.goldenSetup(g, d, pb.Feature_FEATURE_TRAINING, pb.Feature_FEATURE_GRADIENT_STATE)
	tol := c.s.opts.tolerances(d)
	c.forwardBackward(b, g.NewBatch(), g.GradScale(), 0)
	gs := c.grads(b)
	if len(gs.order) != len(g.Model.Params) {
		c.Errorf("GetState(GRAD) returned %d tensors, the model has %d parameters", len(gs.order), len(g.Model.Params))
	}
	for _, p := range g.Model.Params {
		c.closeTo("grad "+p.Name, c.value(gs, pb.TensorRole_TENSOR_ROLE_GRAD, p.Name), g.F32("grad."+p.Name), tol.Grads)
	}
}

// trainGolden runs steps of ForwardBackward on the case's whole batch and
// OptimizerStep, returning per-step losses (before the update) and norms.
func (c *chk) trainGolden(b sdk.Backend, g *golden.Case, sp golden.Steps, from, steps int) (losses, norms []float64) {
	c.Helper()
	batch := g.NewBatch()
	for i := 0; i < steps; i++ {
		fb := c.forwardBackward(b, batch, g.GradScale(), uint64(from+i))
		losses = append(losses, fb.LossSum/math.Max(fb.WeightSum, 1))
		st := c.step(b, sp.LearningRate, sp.WeightDecay, sp.ClipNorm)
		if st.OptimizerSteps != uint64(from+i+1) {
			c.Errorf("OptimizerStep: optimizer_steps = %d after step %d", st.OptimizerSteps, from+i+1)
		}
		norms = append(norms, st.GradNorm)
	}
	return losses, norms
}

func numAdamW(c *chk, g *golden.Case, d pb.DType) {
	b := c.goldenSetup(g, d, pb.Feature_FEATURE_TRAINING)
	tol := c.s.opts.tolerances(d)
	a := g.AdamW
	losses, norms := c.trainGolden(b, g, a, 0, a.Steps)
	for i := range norms {
		c.relClose("step "+strconv.Itoa(i+1)+" grad_norm", norms[i], a.GradNorms[i], tol.StepLoss, 1e-12)
		c.relClose("step "+strconv.Itoa(i+1)+" loss", losses[i], a.Losses[i], tol.StepLoss, 1e-12)
	}
	st := c.get(b, c.stateRoles()...)
	if st.header.GetOptimizerSteps() != uint64(a.Steps) {
		c.Errorf("GetState: optimizer_steps = %d after %d steps", st.header.GetOptimizerSteps(), a.Steps)
	}
	for _, p := range g.Model.Params {
		c.compareParamsAfterSteps("param "+p.Name, p.Name, c.value(st, pb.TensorRole_TENSOR_ROLE_PARAM, p.Name),
			g.F32("step3."+p.Name), tol, a.LearningRate, a.Steps)
		c.closeTo("adam_m "+p.Name, c.value(st, pb.TensorRole_TENSOR_ROLE_ADAM_M, p.Name), g.F32("step3.adam_m."+p.Name), tol.AdamM)
		c.closeTo("adam_v "+p.Name, c.value(st, pb.TensorRole_TENSOR_ROLE_ADAM_V, p.Name), g.F32("step3.adam_v."+p.Name), tol.AdamV)
	}
	if c.has(pb.Feature_FEATURE_GRADIENT_STATE) {
		gs := c.grads(b)
		for _, k := range gs.order {
			if i := firstNonZero(gs.values[k]); i >= 0 {
				c.Errorf("OptimizerStep did not zero the gradients: %s[%d] = %v", k.name, i, gs.values[k][i])
				break
			}
		}
	}
}

func numTrajectory(c *chk, g *golden.Case, d pb.DType) {
	b := c.goldenSetup(g, d, pb.Feature_FEATURE_TRAINING)
	tol := c.s.opts.tolerances(d)
	tr := g.Trajectory
	normTol := tol.TrajectoryGradNorm
	if normTol == 0 {
		normTol = tol.Trajectory
	}
	losses, norms := c.trainGolden(b, g, tr, 0, tr.Steps)
	worst, worstNorm := 0.0, 0.0
	for i := range losses {
		e := relErr(losses[i], tr.Losses[i], 0.1)
		worst = math.Max(worst, e)
		if e > tol.Trajectory {
			c.Errorf("step %d loss %.6g, want %.6g (error %.3g relative to max(loss, 0.1) > %g)", i+1, losses[i], tr.Losses[i], e, tol.Trajectory)
		}
		en := relErr(norms[i], tr.GradNorms[i], 0.1)
		worstNorm = math.Max(worstNorm, en)
		if en > normTol {
			c.Errorf("step %d grad_norm %.6g, want %.6g (error %.3g relative to max(norm, 0.1) > %g)", i+1, norms[i], tr.GradNorms[i], en, normTol)
		}
	}
	ev := c.evaluate(b, g.NewBatch(), false)
	final := ev.LossSum / math.Max(ev.WeightSum, 1)
	if e := relErr(final, tr.FinalLoss, 0.1); e > tol.Trajectory {
		c.Errorf("loss after %d steps %.6g, want %.6g (error %.3g > %g)", tr.Steps, final, tr.FinalLoss, e, tol.Trajectory)
	}
	c.summarize("%d steps: worst loss error %.2g (tolerance %g), worst grad-norm error %.2g (tolerance %g); final loss %.4g", tr.Steps, worst, tol.Trajectory, worstNorm, normTol, final)
}

package conformance

import (
	"fmt"
	"math"

	"github.com/mypt/mypt/conformance/golden"
	"github.com/mypt/mypt/sdk"
	pb "github.com/mypt/mypt/sdk/proto/backendv1"
)

// semanticsChecks are the behaviours the golden numbers alone do not pin
// down: loss masks, packing, frozen parameters, gradient accumulation and the KV cache.
func (s *suite) semanticsChecks(d pb.DType) []check {
	l := dtypeLabel(d)
	at := func(p Profile) Profile { return inDType(d, p) }
	out := []check{
		{"lossmask/" + l + "/zero-weight-targets-ignored", at(ProfileTraining), func(c *chk) { maskIgnoredTargets(c, d) }},
		{"lossmask/" + l + "/all-zero-weights", at(ProfileCore), func(c *chk) { maskAllZero(c, d) }},
		{"lossmask/" + l + "/packed-sum-of-episodes", at(ProfilePacked), func(c *chk) { maskPackedSum(c, d) }},
		{"lossmask/" + l + "/eot-target-trained", at(ProfileCore), func(c *chk) { maskEOT(c, d) }},
		{"packing/" + l + "/segment-isolation", at(ProfilePacked), func(c *chk) { packingIsolation(c, d) }},
		{"frozen/" + l + "/first-block-and-embeddings", at(ProfileFrozen), func(c *chk) { frozenParams(c, d) }},
	}
	for _, g := range s.golden {
		out = append(out, check{"accumulation/" + l + "/" + g.Case, at(caseProfile(g, ProfileTraining)), func(c *chk) { accumulation(c, g, d) }})
	}
	for _, g := range s.golden {
		out = append(out, check{"kvcache/" + l + "/" + g.Case, at(ProfileKVCache), func(c *chk) { kvCache(c, g, d) }})
	}
	return out
}

// cases returns the golden cases the backend supports that satisfy ok, or
// skips saying none does.
func (c *chk) cases(what string, ok func(*golden.Case) bool) []*golden.Case {
	c.Helper()
	var out []*golden.Case
	for _, g := range c.s.golden {
		if c.s.unsupported(g) == "" && (ok == nil || ok(g)) {
			out = append(out, g)
		}
	}
	if len(out) == 0 {
		c.Skipf("no golden case %sthat the backend's declared architectures and features support", what)
	}
	return out
}

// outcome is what one ForwardBackward left behind.
type outcome struct {
	loss, weight float64
	grads        *stateSnapshot // nil without FEATURE_GRADIENT_STATE
	norm         float64        // grad_norm of an OptimizerStep at lr 0
}

// fbOutcome runs one ForwardBackward from g's initial parameters and
// collects its loss and gradients (or, without FEATURE_GRADIENT_STATE, their
// norm through an OptimizerStep at learning rate 0).
func (c *chk) fbOutcome(b sdk.Backend, g *golden.Case, d pb.DType, batch *pb.Batch, scale float32) outcome {
	c.Helper()
	c.openCase(b, g, d)
	fb := c.forwardBackward(b, batch, scale, 0)
	o := outcome{loss: fb.LossSum, weight: fb.WeightSum}
	if c.has(pb.Feature_FEATURE_GRADIENT_STATE) {
		o.grads = c.grads(b)
	} else {
		o.norm = c.step(b, 0, 0, 0).GradNorm
	}
	return o
}

// sameOutcome compares got with want within the dtype's tolerances.
func (c *chk) sameOutcome(what string, got, want outcome, g *golden.Case, tol Tolerances) {
	c.Helper()
	c.relClose(what+": loss_sum", got.loss, want.loss, tol.Loss, 1e-12)
	c.relClose(what+": weight_sum", got.weight, want.weight, 1e-6, 1e-12)
	if want.grads == nil {
		c.relClose(what+": grad_norm", got.norm, want.norm, tol.Loss, 1e-12)
		return
	}
	for _, p := range g.Model.Params {
		c.closeTo(what+": grad "+p.Name, c.value(got.grads, pb.TensorRole_TENSOR_ROLE_GRAD, p.Name),
			c.value(want.grads, pb.TensorRole_TENSOR_ROLE_GRAD, p.Name), tol.Grads)
	}
}

func maskIgnoredTargets(c *chk, d pb.DType) {
	c.needDType(d)
	c.need(pb.Feature_FEATURE_TRAINING)
	tol := c.s.opts.tolerances(d)
	b := c.backend()
	cs := c.cases("with zero loss weights ", hasZeroWeights)
	defer c.summarize("%d cases: targets under weight 0 set to other ids, -100 and vocab_size+5 change neither loss nor gradients", len(cs))
	for _, g := range cs {
		V := int32(g.Model.VocabSize)
		base := c.fbOutcome(b, g, d, g.NewBatch(), g.GradScale())
		c.setState(b, g.InitState())
		baseEval := c.evaluate(b, g.NewBatch(), false)
		for _, v := range []struct {
			what string
			f    func(t int32) int32
		}{
			{"other valid ids", func(t int32) int32 { return (t + 1) % V }},
			{"-100 (PyTorch's ignore_index)", func(int32) int32 { return -100 }},
			{"vocab_size+5", func(int32) int32 { return V + 5 }},
		} {
			batch := g.NewBatch()
			n := 0
			for i, w := range batch.LossWeights {
				if w == 0 {
					batch.Targets[i] = v.f(batch.Targets[i])
					n++
				}
			}
			what := fmt.Sprintf("%s, targets under weight 0 (%d positions) set to %s", g.Case, n, v.what)
			c.sameOutcome(what, c.fbOutcome(b, g, d, batch, g.GradScale()), base, g, tol)
			ev := c.evaluate(b, batch, false)
			c.relClose(what+": Evaluate loss_sum", ev.LossSum, baseEval.LossSum, tol.Loss, 1e-12)
			if ev.Counted != baseEval.Counted || ev.Correct != baseEval.Correct {
				c.Errorf("%s: Evaluate counted/correct %d/%d, with the original targets %d/%d", what, ev.Counted, ev.Correct,
					baseEval.Counted, baseEval.Correct)
			}
		}
	}
}

func maskAllZero(c *chk, d pb.DType) {
	c.needDType(d)
	b := c.backend()
	cs := c.cases("", nil)
	defer c.summarize("%d cases: all-zero weights give loss 0, weight 0, zero gradients, and a step that moves nothing", len(cs))
	for _, g := range cs {
		batch := g.NewBatch()
		clear(batch.LossWeights)
		c.openCase(b, g, d)
		ev := c.evaluate(b, batch, false)
		if ev.LossSum != 0 || ev.WeightSum != 0 || ev.Counted != 0 || ev.Correct != 0 {
			c.Errorf("%s: Evaluate with all weights 0: loss_sum %v weight_sum %v counted %d correct %d, want all 0",
				g.Case, ev.LossSum, ev.WeightSum, ev.Counted, ev.Correct)
		}
		if !c.has(pb.Feature_FEATURE_TRAINING) {
			continue
		}
		fb := c.forwardBackward(b, batch, 1, 0) // the host's scale: 1/max(Σw, 1)
		if fb.LossSum != 0 || fb.WeightSum != 0 {
			c.Errorf("%s: ForwardBackward with all weights 0: loss_sum %v weight_sum %v, want 0 0 (not NaN)", g.Case, fb.LossSum, fb.WeightSum)
		}
		if c.has(pb.Feature_FEATURE_GRADIENT_STATE) {
			gs := c.grads(b)
			for _, k := range gs.order {
				if i := firstNonZero(gs.values[k]); i >= 0 {
					c.Errorf("%s: gradient %s[%d] = %v with all weights 0, want exactly 0", g.Case, k.name, i, gs.values[k][i])
					break
				}
			}
		}
		st := c.step(b, 1e-3, 0, 1)
		if st.GradNorm != 0 {
			c.Errorf("%s: OptimizerStep after an all-zero-weight batch: grad_norm %v, want 0", g.Case, st.GradNorm)
		}
		ps := c.get(b, pb.TensorRole_TENSOR_ROLE_PARAM)
		for _, p := range g.Model.Params {
			got, init := c.value(ps, pb.TensorRole_TENSOR_ROLE_PARAM, p.Name), g.F32("init."+p.Name)
			if i := hasNaN(got); i >= 0 {
				c.Errorf("%s: %s[%d] = %v after a zero-gradient step", g.Case, p.Name, i, got[i])
				break
			}
			for i := range got {
				if got[i] != init[i] {
					c.Errorf("%s: %s[%d] moved from %v to %v on a zero-gradient step without weight decay", g.Case, p.Name, i, init[i], got[i])
					break
				}
			}
		}
	}
}

// segmentBatch is one packed episode as a batch of its own.
func segmentBatch(full *pb.Batch, s segment) *pb.Batch {
	T := int(full.SeqLen)
	lo, hi := s.row*T+s.start, s.row*T+s.end
	return &pb.Batch{BatchSize: 1, SeqLen: uint32(s.end - s.start),
		Tokens:      append([]int32(nil), full.Tokens[lo:hi]...),
		Targets:     append([]int32(nil), full.Targets[lo:hi]...),
		LossWeights: append([]float32(nil), full.LossWeights[lo:hi]...)}
}

func maskPackedSum(c *chk, d pb.DType) {
	c.needDType(d)
	tol := c.s.opts.tolerances(d)
	b := c.backend()
	for _, g := range c.cases("packed with segment_position_reset ", func(g *golden.Case) bool {
		return g.Batch.Packed && g.Model.SegmentPositionReset
	}) {
		full := g.NewBatch()
		V, T := int(g.Model.VocabSize), int(g.Batch.SeqLen)
		c.openCase(b, g, d)
		var lossSum, weightSum float64
		for _, s := range segments(g) {
			ev := c.evaluate(b, segmentBatch(full, s), c.has(pb.Feature_FEATURE_RETURN_LOGITS))
			lossSum += ev.LossSum
			weightSum += ev.WeightSum
			if c.has(pb.Feature_FEATURE_RETURN_LOGITS) {
				want := g.Logits()[(s.row*T+s.start)*V : (s.row*T+s.end)*V]
				c.closeTo(fmt.Sprintf("%s: logits of episode %d of row %d evaluated alone", g.Case, s.id, s.row), ev.Logits, want, tol.Logits)
			}
		}
		c.relClose(g.Case+": Σ episodes' loss_sum vs the packed loss_sum", lossSum, g.LossSum, tol.Loss, 1e-12)
		c.relClose(g.Case+": Σ episodes' weight_sum vs the packed weight_sum", weightSum, g.WeightSum, 1e-6, 1e-12)
		if !c.has(pb.Feature_FEATURE_TRAINING) || !c.has(pb.Feature_FEATURE_GRADIENT_STATE) {
			continue
		}
		c.setState(b, g.InitState())
		for i, s := range segments(g) {
			c.forwardBackward(b, segmentBatch(full, s), g.GradScale(), uint64(i))
		}
		gs := c.grads(b)
		for _, p := range g.Model.Params {
			c.closeTo(g.Case+": Σ episodes' grad "+p.Name+" vs the packed gradient", c.value(gs, pb.TensorRole_TENSOR_ROLE_GRAD, p.Name),
				g.F32("grad."+p.Name), tol.Grads)
		}
	}
}

// lastPositions are the positions whose target ends an episode: the last of
// each segment in packed cases, the last of each row otherwise.
func lastPositions(g *golden.Case) []int {
	T := int(g.Batch.SeqLen)
	var out []int
	if segs := segments(g); segs != nil {
		for _, s := range segs {
			out = append(out, s.row*T+s.end-1)
		}
		return out
	}
	for r := 0; r < int(g.Batch.BatchSize); r++ {
		out = append(out, r*T+T-1)
	}
	return out
}

func maskEOT(c *chk, d pb.DType) {
	c.needDType(d)
	tol := c.s.opts.tolerances(d)
	b := c.backend()
	for _, g := range c.cases("", nil) {
		V := int(g.Model.VocabSize)
		c.openCase(b, g, d)
		for i, p := range lastPositions(g) {
			// the end-of-turn id is often the last or the first of the vocabulary
			tgt := V - 1
			if i%2 == 1 {
				tgt = 0
			}
			batch := g.NewBatch()
			clear(batch.LossWeights)
			batch.LossWeights[p], batch.Targets[p] = 1, int32(tgt)
			ce, probs := crossEntropy(g.Logits()[p*V:(p+1)*V], tgt)
			what := fmt.Sprintf("%s: only position %d (an episode's last) weighted, target %d", g.Case, p, tgt)
			ev := c.evaluate(b, batch, false)
			c.relClose(what+": Evaluate loss_sum", ev.LossSum, ce, tol.Loss, 1e-12)
			if ev.Counted != 1 || ev.WeightSum != 1 {
				c.Errorf("%s: Evaluate counted %d weight_sum %v, want 1 1", what, ev.Counted, ev.WeightSum)
			}
			if !c.has(pb.Feature_FEATURE_TRAINING) {
				continue
			}
			c.setState(b, g.InitState())
			fb := c.forwardBackward(b, batch, 1, 0)
			c.relClose(what+": ForwardBackward loss_sum", fb.LossSum, ce, tol.Loss, 1e-12)
			if fb.WeightSum != 1 {
				c.Errorf("%s: ForwardBackward weight_sum %v, want 1", what, fb.WeightSum)
			}
			if c.has(pb.Feature_FEATURE_GRADIENT_STATE) && g.HasParam("lm_head.bias") {
				want := make([]float32, V)
				for j := range want {
					want[j] = float32(probs[j])
				}
				want[tgt]--
				got := c.value(c.get(b, pb.TensorRole_TENSOR_ROLE_GRAD), pb.TensorRole_TENSOR_ROLE_GRAD, "lm_head.bias")
				c.closeTo(what+": grad lm_head.bias = softmax − onehot(target)", got, want, tol.Grads)
			}
		}
	}
}

func packingIsolation(c *chk, d pb.DType) {
	c.needDType(d)
	c.need(pb.Feature_FEATURE_RETURN_LOGITS)
	tol := c.s.opts.tolerances(d)
	b := c.backend()
	for _, g := range c.cases("packed ", func(g *golden.Case) bool { return g.Batch.Packed }) {
		V, T := int(g.Model.VocabSize), int(g.Batch.SeqLen)
		c.openCase(b, g, d)
		want := g.Logits()
		for _, s := range segments(g) {
			batch := g.NewBatch()
			for i := s.row*T + s.start; i < s.row*T+s.end; i++ {
				batch.Tokens[i] = (batch.Tokens[i] + 7) % int32(V)
			}
			ev := c.evaluate(b, batch, true)
			if len(ev.Logits) != len(want) {
				c.Fatalf("Evaluate returned %d logits, want %d", len(ev.Logits), len(want))
			}
			var gotOut, wantOut []float32
			moved := 0.0
			for i := 0; i < len(batch.Tokens); i++ {
				in := i >= s.row*T+s.start && i < s.row*T+s.end
				if in {
					for j := i * V; j < (i+1)*V; j++ {
						moved = math.Max(moved, math.Abs(float64(ev.Logits[j]-want[j])))
					}
					continue
				}
				gotOut = append(gotOut, ev.Logits[i*V:(i+1)*V]...)
				wantOut = append(wantOut, want[i*V:(i+1)*V]...)
			}
			c.closeTo(fmt.Sprintf("%s: logits outside episode %d of row %d after changing its tokens", g.Case, s.id, s.row), gotOut, wantOut, tol.Logits)
			if moved == 0 {
				c.Errorf("%s: changing the tokens of episode %d of row %d did not change its own logits", g.Case, s.id, s.row)
			}
		}
	}
}

func accumulation(c *chk, g *golden.Case, d pb.DType) {
	b := c.goldenSetup(g, d, pb.Feature_FEATURE_TRAINING)
	tol := c.s.opts.tolerances(d)
	B := int(g.Batch.BatchSize)
	a := g.AdamW
	// one micro-batch of B rows
	c.forwardBackward(b, g.NewBatch(), g.GradScale(), 0)
	one := c.step(b, a.LearningRate, a.WeightDecay, a.ClipNorm)
	paramsOne := c.get(b, pb.TensorRole_TENSOR_ROLE_PARAM)
	// two micro-batches of B/2 rows with the whole batch's scale, from scratch
	c.openCase(b, g, d)
	full := g.NewBatch()
	var loss, weight float64
	for i, r := range [][2]int{{0, B / 2}, {B / 2, B}} {
		fb := c.forwardBackward(b, rows(full, r[0], r[1]), g.GradScale(), uint64(i+1))
		loss += fb.LossSum
		weight += fb.WeightSum
	}
	c.relClose("Σ micro-batch loss_sum", loss, g.LossSum, tol.Loss, 1e-12)
	c.relClose("Σ micro-batch weight_sum", weight, g.WeightSum, 1e-6, 1e-12)
	if c.has(pb.Feature_FEATURE_GRADIENT_STATE) {
		gs := c.grads(b)
		for _, p := range g.Model.Params {
			c.closeTo("accumulated grad "+p.Name, c.value(gs, pb.TensorRole_TENSOR_ROLE_GRAD, p.Name), g.F32("grad."+p.Name), tol.Grads)
		}
	}
	two := c.step(b, a.LearningRate, a.WeightDecay, a.ClipNorm)
	c.relClose("grad_norm of two micro-batches vs the golden one-batch norm", two.GradNorm, a.GradNorms[0], tol.StepLoss, 1e-12)
	c.relClose("grad_norm of two micro-batches vs one micro-batch on this backend", two.GradNorm, one.GradNorm, tol.StepLoss, 1e-12)
	paramsTwo := c.get(b, pb.TensorRole_TENSOR_ROLE_PARAM)
	for _, p := range g.Model.Params {
		c.compareParamsAfterSteps("param after the step "+p.Name, p.Name, c.value(paramsTwo, pb.TensorRole_TENSOR_ROLE_PARAM, p.Name),
			c.value(paramsOne, pb.TensorRole_TENSOR_ROLE_PARAM, p.Name), tol, a.LearningRate, 1)
	}
}

func kvCache(c *chk, g *golden.Case, d pb.DType) {
	b := c.goldenSetup(g, d, pb.Feature_FEATURE_KV_CACHE)
	tol := c.s.opts.tolerances(d)
	V, T, B := int(g.Model.VocabSize), int(g.Batch.SeqLen), int(g.Batch.BatchSize)
	full := g.NewBatch()
	// the full forward pass: the golden logits, or for packed cases (whose
	// golden rows are segmented) the backend's own unsegmented Evaluate
	ref := g.Logits()
	what := "golden full-forward logits"
	if g.Batch.Packed {
		c.need(pb.Feature_FEATURE_RETURN_LOGITS)
		nb := g.NewBatch()
		nb.SegmentIds = nil
		ref = c.evaluate(b, nb, true).Logits
		what = "the backend's full-forward (Evaluate) logits"
		if len(ref) != B*T*V {
			c.Fatalf("Evaluate returned %d logits, want %d", len(ref), B*T*V)
		}
	}
	rowRef := func(r int) []float32 { return ref[r*T*V : (r+1)*T*V] }
	// 1) one-token prompts, every other position decoded, rows interleaved
	handles := make([]uint64, B)
	got := make([][]float32, B)
	for r := 0; r < B; r++ {
		p, err := b.Prefill(c.ctx, &pb.PrefillRequest{Tokens: full.Tokens[r*T : r*T+1], Capacity: uint32(T)})
		c.must(err, "Prefill")
		handles[r] = p.CacheHandle
		got[r] = append(got[r], p.Logits...)
	}
	for i := 1; i < T; i++ {
		for r := 0; r < B; r++ {
			dr, err := b.Decode(c.ctx, &pb.DecodeRequest{CacheHandle: handles[r], Token: full.Tokens[r*T+i]})
			c.must(err, fmt.Sprintf("Decode at position %d of row %d", i, r))
			if int(dr.Length) != i+1 {
				c.Errorf("Decode at position %d of row %d: length %d, want %d", i, r, dr.Length, i+1)
			}
			got[r] = append(got[r], dr.Logits...)
		}
	}
	for r := 0; r < B; r++ {
		c.closeTo(fmt.Sprintf("row %d: Prefill(1 token) + %d Decodes (two caches interleaved) vs %s%s", r, T-1, what,
			firstBadPosition(got[r], rowRef(r), V, tol.Logits)), got[r], rowRef(r), tol.Logits)
		_, err := b.ReleaseCache(c.ctx, &pb.ReleaseCacheRequest{CacheHandle: handles[r]})
		c.must(err, "ReleaseCache")
	}
	// 2) a half-length prompt with all its logits, then the rest decoded
	k := T / 2
	for r := 0; r < B; r++ {
		p, err := b.Prefill(c.ctx, &pb.PrefillRequest{Tokens: full.Tokens[r*T : r*T+k], AllLogits: true})
		c.must(err, "Prefill(all_logits)")
		if len(p.Logits) != k*V {
			c.Fatalf("Prefill(all_logits) of %d tokens returned %d logits, want %d", k, len(p.Logits), k*V)
		}
		out := append([]float32(nil), p.Logits...)
		for i := k; i < T; i++ {
			dr, err := b.Decode(c.ctx, &pb.DecodeRequest{CacheHandle: p.CacheHandle, Token: full.Tokens[r*T+i]})
			c.must(err, "Decode")
			out = append(out, dr.Logits...)
		}
		c.closeTo(fmt.Sprintf("row %d: Prefill(%d tokens, all_logits) + %d Decodes vs %s%s", r, k, T-k, what,
			firstBadPosition(out, rowRef(r), V, tol.Logits)), out, rowRef(r), tol.Logits)
		_, err = b.ReleaseCache(c.ctx, &pb.ReleaseCacheRequest{CacheHandle: p.CacheHandle})
		c.must(err, "ReleaseCache")
	}
}

// firstBadPosition names the first sequence position whose V logits are out
// of tolerance, or returns "".
func firstBadPosition(got, want []float32, V int, tol Tolerance) string {
	if len(got) != len(want) {
		return ""
	}
	for p := 0; p*V < len(want); p++ {
		if r, _, _ := tol.worst(got[p*V:(p+1)*V], want[p*V:(p+1)*V]); r > 1 {
			return fmt.Sprintf(" (first wrong at position %d)", p)
		}
	}
	return ""
}

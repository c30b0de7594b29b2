package conformance

import (
	"fmt"
	"math"
	"slices"
	"strings"

	"google.golang.org/protobuf/proto"

	"github.com/mypt/mypt/conformance/golden"
	"github.com/mypt/mypt/sdk"
	pb "github.com/mypt/mypt/sdk/proto/backendv1"
)

func (s *suite) randomnessChecks() []check {
	return []check{
		{"determinism/bit-exact", ProfileDeterministic, determinismBitExact},
		{"determinism/repeatable", ProfileTraining, determinismRepeatable},
		{"dropout/eval-off", ProfileDropout, dropoutEvalOff},
		{"dropout/rate", ProfileDropout, dropoutRate},
		{"dropout/same-seed-same-mask", ProfileDropout, dropoutSameSeed},
	}
}

// detResult is everything one short training run exposes.
type detResult struct {
	losses []float64
	norm   float64
	grads  *stateSnapshot
	state  *stateSnapshot
	logits []float32
	eval   float64
}

// detRun configures g (with dropout p), runs two ForwardBackward calls and a
// step, and collects every observable number.
func (c *chk) detRun(b sdk.Backend, g *golden.Case, d pb.DType, deterministic bool, p float64) detResult {
	c.Helper()
	spec := g.Spec()
	spec.Dropout = p
	c.configure(b, spec, g.OptimizerSpec(), d, func(r *pb.ConfigureRequest) {
		r.Deterministic = deterministic
		r.MaxBatchSize = g.Batch.BatchSize
	})
	c.setState(b, g.InitState())
	var r detResult
	batch := g.NewBatch()
	r.losses = append(r.losses, c.forwardBackward(b, batch, g.GradScale(), 42).LossSum)
	r.losses = append(r.losses, c.forwardBackward(b, batch, g.GradScale(), 43).LossSum)
	if c.has(pb.Feature_FEATURE_GRADIENT_STATE) {
		r.grads = c.grads(b)
	}
	r.norm = c.step(b, g.AdamW.LearningRate, g.AdamW.WeightDecay, g.AdamW.ClipNorm).GradNorm
	r.state = c.get(b, c.stateRoles()...)
	ev := c.evaluate(b, batch, c.has(pb.Feature_FEATURE_RETURN_LOGITS))
	r.logits, r.eval = ev.Logits, ev.LossSum
	return r
}

func determinismBitExact(c *chk) {
	c.need(pb.Feature_FEATURE_DETERMINISTIC, pb.Feature_FEATURE_TRAINING)
	g := c.anyCase("", nil)
	p := 0.0
	if c.has(pb.Feature_FEATURE_DROPOUT) {
		p = 0.1
	}
	first := c.detRun(c.backend(), g, c.s.primary, true, p)
	second := c.detRun(c.backend(), g, c.s.primary, true, p)
	third := c.detRun(c.fresh(), g, c.s.primary, true, p)
	for _, o := range []struct {
		what string
		r    detResult
	}{{"a second session", second}, {c.newInstance(), third}} {
		for i := range first.losses {
			if math.Float64bits(first.losses[i]) != math.Float64bits(o.r.losses[i]) {
				c.Errorf("%s: ForwardBackward %d loss_sum %v, first run %v", o.what, i+1, o.r.losses[i], first.losses[i])
			}
		}
		if math.Float64bits(first.norm) != math.Float64bits(o.r.norm) {
			c.Errorf("%s: grad_norm %v, first run %v", o.what, o.r.norm, first.norm)
		}
		if math.Float64bits(first.eval) != math.Float64bits(o.r.eval) {
			c.Errorf("%s: Evaluate loss_sum %v, first run %v", o.what, o.r.eval, first.eval)
		}
		bitsEqual(c, o.what+": Evaluate logits", o.r.logits, first.logits)
		for _, snap := range [][2]*stateSnapshot{{first.grads, o.r.grads}, {first.state, o.r.state}} {
			if snap[0] == nil {
				continue
			}
			for _, k := range snap[0].order {
				bitsEqual(c, fmt.Sprintf("%s: %v %s", o.what, k.role, k.name), snap[1].values[k], snap[0].values[k])
			}
		}
	}
}

func bitsEqual(c *chk, what string, got, want []float32) {
	c.Helper()
	if len(got) != len(want) {
		c.Errorf("%s: %d values, first run %d", what, len(got), len(want))
		return
	}
	for i := range got {
		if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
			c.Errorf("%s: [%d] = %v, first run %v (not bit-identical)", what, i, got[i], want[i])
			return
		}
	}
}

func determinismRepeatable(c *chk) {
	c.need(pb.Feature_FEATURE_TRAINING)
	g := c.anyCase("", nil)
	tol := c.s.opts.tolerances(c.s.primary)
	first := c.detRun(c.backend(), g, c.s.primary, false, 0)
	second := c.detRun(c.fresh(), g, c.s.primary, false, 0)
	for i := range first.losses {
		c.relClose(fmt.Sprintf("ForwardBackward %d loss_sum, second run", i+1), second.losses[i], first.losses[i], tol.Loss, 1e-12)
	}
	c.relClose("grad_norm, second run", second.norm, first.norm, tol.StepLoss, 1e-12)
	c.relClose("Evaluate loss_sum, second run", second.eval, first.eval, tol.Loss, 1e-12)
	if first.logits != nil {
		c.closeTo("Evaluate logits, second run", second.logits, first.logits, tol.Logits)
	}
	if first.grads != nil {
		for _, k := range first.grads.order {
			c.closeTo("grad "+k.name+", second run", c.value(second.grads, k.role, k.name), first.grads.values[k], tol.Grads)
		}
	}
	for _, p := range g.Model.Params {
		c.compareParamsAfterSteps("param "+p.Name+", second run", p.Name, c.value(second.state, pb.TensorRole_TENSOR_ROLE_PARAM, p.Name),
			c.value(first.state, pb.TensorRole_TENSOR_ROLE_PARAM, p.Name), tol, g.AdamW.LearningRate, 1)
	}
}

func dropoutEvalOff(c *chk) {
	c.need(pb.Feature_FEATURE_DROPOUT, pb.Feature_FEATURE_TRAINING)
	g := c.anyCase("", nil)
	tol := c.s.opts.tolerances(c.s.primary)
	b := c.backend()
	spec := g.Spec()
	spec.Dropout = 0.5
	c.configure(b, spec, g.OptimizerSpec(), c.s.primary, func(r *pb.ConfigureRequest) { r.MaxBatchSize = g.Batch.BatchSize })
	c.setState(b, g.InitState())
	logits := c.has(pb.Feature_FEATURE_RETURN_LOGITS)
	for i := 0; i < 2; i++ {
		ev := c.evaluate(b, g.NewBatch(), logits)
		c.relClose(fmt.Sprintf("Evaluate %d loss_sum with dropout 0.5 vs the golden dropout-free loss", i+1), ev.LossSum, g.LossSum, tol.Loss, 1e-12)
		if logits {
			c.closeTo(fmt.Sprintf("Evaluate %d logits with dropout 0.5 vs the golden dropout-free logits", i+1), ev.Logits, g.Logits(), tol.Logits)
		}
	}
	// and training does drop: two dropout seeds give clearly different losses
	// (more than run-to-run noise, whatever the dtype)
	l1 := c.forwardBackward(b, g.NewBatch(), g.GradScale(), 1).LossSum
	l2 := c.forwardBackward(b, g.NewBatch(), g.GradScale(), 2).LossSum
	if e := relErr(l1, l2, 1e-12); e < 1e-4 {
		c.Errorf("ForwardBackward loss_sum with dropout 0.5 is %v with dropout_seed 1 and %v with 2: dropout is not applied in training", l1, l2)
	}
	c.summarize("training losses with dropout 0.5: %.6g and %.6g (dropout-free %.6g)", l1, l2, g.LossSum)
}

// dropoutProbe is a model built so that dropout masks can be read off the
// gradients: with one position, the gradient of a bias feeding a dropout
// site is exactly zero where its mask dropped the element. Embeddings are
// large (std 1) and the residual branches small, so dropout barely perturbs
// the rest of the network and the kept gradients equal the dropout-free
// ones times 1/(1−p).
type dropoutProbe struct {
	spec  *pb.ModelSpec
	init  *sdk.TensorList
	sites []string
	batch *pb.Batch
}

// probeSize is the dropout probe's model: wide enough for a good count of
// mask elements per call, untied so lm_head does not feed the embeddings.
var probeSize = modelSize{vocab: 64, block: 8, layers: 2, heads: 4, embd: 128, untied: true}

func (c *chk) newDropoutProbe(g *golden.Case) dropoutProbe {
	c.Helper()
	spec := c.specLike(g, probeSize)
	init := initState(spec, 7)
	for _, t := range init.Tensors {
		if strings.Contains(t.Name, "embedding") {
			v, err := sdk.F32Values(t.Data)
			c.must(err, "probe init")
			for i := range v {
				v[i] *= 50 // std 0.02 → 1
			}
			t.Data = sdk.F32Bytes(v)
		}
	}
	last := fmt.Sprintf("blocks.%d.", probeSize.layers-1)
	sites := []string{last + "sa.proj.bias"}
	if spec.MlpType == pb.MLPType_MLP_TYPE_GELU {
		sites = append(sites, last+"fwd.net.2.bias")
	}
	return dropoutProbe{spec: spec, init: init, sites: sites,
		batch: &pb.Batch{BatchSize: 1, SeqLen: 1, Tokens: []int32{3}, Targets: []int32{5}, LossWeights: []float32{1}}}
}

// siteGrads runs one ForwardBackward from the probe's initial state and
// returns the gradients of its dropout sites.
func (c *chk) siteGrads(b sdk.Backend, pr dropoutProbe, seed uint64) [][]float32 {
	c.Helper()
	c.setState(b, replay(pr.init))
	c.forwardBackward(b, pr.batch, 1, seed)
	gs := c.getReq(b, &pb.GetStateRequest{Roles: []pb.TensorRole{pb.TensorRole_TENSOR_ROLE_GRAD}, Names: pr.sites, Dtype: pb.DType_DTYPE_F32})
	var out [][]float32
	for _, s := range pr.sites {
		out = append(out, c.value(gs, pb.TensorRole_TENSOR_ROLE_GRAD, s))
	}
	return out
}

func (c *chk) openProbe(b sdk.Backend, pr dropoutProbe, p float64) {
	c.Helper()
	spec := proto.Clone(pr.spec).(*pb.ModelSpec)
	spec.Dropout = p
	c.configure(b, spec, nil, c.s.primary, func(r *pb.ConfigureRequest) { r.MaxBatchSize = 1 })
}

const dropoutP = 0.25

func dropoutRate(c *chk) {
	c.need(pb.Feature_FEATURE_DROPOUT, pb.Feature_FEATURE_TRAINING, pb.Feature_FEATURE_GRADIENT_STATE)
	g := c.anyCase("", nil)
	pr := c.newDropoutProbe(g)
	b := c.backend()
	c.openProbe(b, pr, 0)
	base := c.siteGrads(b, pr, 0)
	c.openProbe(b, pr, dropoutP)
	const calls = 48
	zeros := make([]int, len(pr.sites))
	n := make([]int, len(pr.sites))
	ratios := make([][]float64, len(pr.sites))
	for call := 0; call < calls; call++ {
		gs := c.siteGrads(b, pr, uint64(1000+call))
		for si := range pr.sites {
			for j, v := range gs[si] {
				if base[si][j] == 0 {
					continue
				}
				n[si]++
				if v == 0 {
					zeros[si]++
				} else {
					ratios[si] = append(ratios[si], float64(v)/float64(base[si][j]))
				}
			}
		}
	}
	scale := 1 / (1 - dropoutP)
	var lines []string
	for si, site := range pr.sites {
		if n[si] == 0 {
			c.Errorf("%s: no non-zero dropout-free gradient to observe", site)
			continue
		}
		rate := float64(zeros[si]) / float64(n[si])
		bound := 5*math.Sqrt(dropoutP*(1-dropoutP)/float64(n[si])) + 0.01
		if math.Abs(rate-dropoutP) > bound {
			c.Errorf("%s: %.3f of %d elements dropped, configured dropout %.2f (bound ±%.3f)", site, rate, n[si], dropoutP, bound)
		}
		slices.Sort(ratios[si])
		med := math.NaN()
		if len(ratios[si]) > 0 {
			med = ratios[si][len(ratios[si])/2]
		}
		if !(math.Abs(med-scale) <= 0.1*scale) {
			c.Errorf("%s: kept elements are scaled by %.3f (median), want 1/(1−p) = %.3f ± 10%%", site, med, scale)
		}
		lines = append(lines, fmt.Sprintf("%s dropped %.3f of %d (p = %.2f ± %.3f), kept ×%.3f (want %.3f)", site, rate, n[si], dropoutP, bound, med, scale))
	}
	c.summarize("%s", strings.Join(lines, "; "))
}

func dropoutSameSeed(c *chk) {
	c.need(pb.Feature_FEATURE_DROPOUT, pb.Feature_FEATURE_TRAINING, pb.Feature_FEATURE_GRADIENT_STATE)
	g := c.anyCase("", nil)
	tol := c.s.opts.tolerances(c.s.primary)
	pr := c.newDropoutProbe(g)
	b := c.backend()
	c.openProbe(b, pr, dropoutP)
	a := c.siteGrads(b, pr, 7)
	other := c.siteGrads(b, pr, 8)
	again := c.siteGrads(b, pr, 7)
	differs := false
	for si, site := range pr.sites {
		for j := range a[si] {
			if (a[si][j] == 0) != (again[si][j] == 0) {
				c.Errorf("%s[%d]: dropout_seed 7 dropped it once and kept it once (same seed ⇒ same mask)", site, j)
				break
			}
			if (a[si][j] == 0) != (other[si][j] == 0) {
				differs = true
			}
		}
		c.closeTo(site+" gradient, same seed twice", again[si], a[si], tol.Grads)
	}
	if !differs {
		c.Errorf("dropout_seed 7 and 8 gave identical masks: the request's seed is not used")
	}
}

package conformance

import (
	"fmt"
	"strings"

	"github.com/mypt/mypt/conformance/golden"
	"github.com/mypt/mypt/sdk"
	pb "github.com/mypt/mypt/sdk/proto/backendv1"
)

// headChecks are the checks of ModelSpec.no_lm_head_bias (FEATURE_LM_HEAD_WITHOUT_BIAS).
func (s *suite) headChecks(d pb.DType) []check {
	return []check{{"head/" + dtypeLabel(d) + "/without-bias", inDType(d, ProfileHeadWithoutBias), func(c *chk) { headWithoutBias(c, d) }}}
}

// withoutHeadBias is golden case g's model with no_lm_head_bias: the same tensors but
// lm_head.bias.
func withoutHeadBias(g *golden.Case) (*pb.ModelSpec, *sdk.TensorList) {
	spec := g.Spec()
	spec.NoLmHeadBias = true
	var params []*pb.ParamSpec
	for _, p := range spec.Params {
		if p.Name != "lm_head.bias" {
			params = append(params, p)
		}
	}
	spec.Params = params
	init := g.InitState()
	var ts []*sdk.Tensor
	for _, t := range init.Tensors {
		if t.Name != "lm_head.bias" {
			ts = append(ts, t)
		}
	}
	return spec, sdk.NewTensorList(0, ts...)
}

// headWithoutBias configures the simplest golden case of each architecture without
// lm_head.bias. Its
// logits must be PyTorch's minus the case's bias (the bias adds one vector to every
// row), its loss the cross-entropy of those logits, computed here in float64; with
// training and gradient state, its gradients must equal those of the same backend
// running the case with lm_head.bias present and zero, tensor by tensor.
func headWithoutBias(c *chk, d pb.DType) {
	c.needDType(d)
	c.need(pb.Feature_FEATURE_LM_HEAD_WITHOUT_BIAS)
	tol := c.s.opts.tolerances(d)
	var cs []*golden.Case // the simplest case of each architecture: the head is what is checked
	for _, g := range c.s.casesPerArch() {
		if c.s.unsupported(g) == "" {
			cs = append(cs, g)
		}
	}
	if len(cs) == 0 {
		c.Skipf("no golden case the backend's declared architectures support")
	}
	b := c.backend()
	for _, g := range cs {
		spec, init := withoutHeadBias(g)
		c.configure(b, spec, g.OptimizerSpec(), d, func(r *pb.ConfigureRequest) { r.MaxBatchSize = g.Batch.BatchSize })
		c.setState(b, init)
		batch := g.NewBatch()
		ev := c.evaluate(b, batch, c.has(pb.Feature_FEATURE_RETURN_LOGITS))

		V := int(g.Model.VocabSize)
		bias, logits := g.F32("init.lm_head.bias"), g.Logits()
		want := make([]float32, len(logits))
		var lossSum float64
		for r := range len(logits) / V {
			row := want[r*V : (r+1)*V]
			for v := range row {
				row[v] = logits[r*V+v] - bias[v]
			}
			if w := batch.LossWeights[r]; w > 0 {
				ce, _ := crossEntropy(row, int(batch.Targets[r]))
				lossSum += float64(w) * ce
			}
		}
		if ev.Logits != nil {
			c.closeTo(g.Case+": logits without lm_head.bias vs PyTorch's minus the bias", ev.Logits, want, tol.Logits)
		}
		c.relClose(g.Case+": Evaluate loss_sum without lm_head.bias", ev.LossSum, lossSum, tol.Loss, 1e-12)

		if !c.has(pb.Feature_FEATURE_TRAINING) || !c.has(pb.Feature_FEATURE_GRADIENT_STATE) {
			continue
		}
		c.forwardBackward(b, batch, g.GradScale(), 0)
		got := c.grads(b)
		// the same model with the bias present and zero
		zeroed := g.InitState()
		for i, t := range zeroed.Tensors {
			if t.Name == "lm_head.bias" {
				n, _ := sdk.NumElements(t.Shape)
				zeroed.Tensors[i] = sdk.F32Tensor(t.Name, t.Role, t.Shape, make([]float32, n))
			}
		}
		c.configure(b, g.Spec(), g.OptimizerSpec(), d, func(r *pb.ConfigureRequest) { r.MaxBatchSize = g.Batch.BatchSize })
		c.setState(b, zeroed)
		c.forwardBackward(b, batch, g.GradScale(), 0)
		ref := c.grads(b)
		for _, p := range spec.Params {
			c.closeTo(fmt.Sprintf("%s: grad %s without lm_head.bias vs with a zero one", g.Case, p.Name),
				c.value(got, pb.TensorRole_TENSOR_ROLE_GRAD, p.Name), c.value(ref, pb.TensorRole_TENSOR_ROLE_GRAD, p.Name), tol.Grads)
		}
	}
	names := make([]string, len(cs))
	for i, g := range cs {
		names[i] = g.Case
	}
	c.summarize("%d cases without lm_head.bias (%s): logits = PyTorch's − bias, loss recomputed; gradients = a zero bias's", len(cs), strings.Join(names, ", "))
}

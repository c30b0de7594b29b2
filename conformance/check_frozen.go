package conformance

import (
	"fmt"
	"math"
	"strings"

	"github.com/mypt/mypt/conformance/golden"
	pb "github.com/mypt/mypt/sdk/proto/backendv1"
)

// frozenParam says which tensors the frozen check freezes: what MyPT's freeze_layers 1
// and freeze_embeddings freeze (the first block, the token and position tables — and
// with tied weights lm_head.weight, the same tensor).
func frozenParam(name string) bool {
	return strings.HasPrefix(name, "blocks.0.") || name == "token_embedding_table.weight" || name == "position_embedding_table.weight"
}

// freezeMod marks the frozen check's tensors frozen in a Configure request.
func freezeMod(r *pb.ConfigureRequest) {
	for _, p := range r.Model.Params {
		p.Frozen = frozenParam(p.Name)
	}
}

// frozenParams trains every golden case the backend supports with its first
// block and embeddings frozen (ParamSpec.frozen): the frozen tensors and their
// Adam moments must not move, the first step's gradient norm must cover the
// trainable tensors only, and every trainable tensor must move.
func frozenParams(c *chk, d pb.DType) {
	c.needDType(d)
	c.need(pb.Feature_FEATURE_TRAINING, pb.Feature_FEATURE_FROZEN_PARAMS)
	cs := c.cases("with two blocks ", func(g *golden.Case) bool { return g.Model.NLayer >= 2 })
	var lines []string
	for _, g := range cs {
		lines = append(lines, frozenCase(c, g, d))
	}
	c.summarize("%d cases: %s", len(cs), strings.Join(lines, "; "))
}

// frozenCase is frozenParams on one case; it returns what it measured.
func frozenCase(c *chk, g *golden.Case, d pb.DType) string {
	c.Helper()
	b := c.backend()
	tol := c.s.opts.tolerances(d)
	a := g.AdamW
	batch := g.NewBatch()

	// The norm over the trainable tensors, from the backend's own unfrozen gradients.
	wantNorm := math.NaN()
	if c.has(pb.Feature_FEATURE_GRADIENT_STATE) {
		c.openCase(b, g, d)
		c.forwardBackward(b, batch, g.GradScale(), 0)
		gs := c.grads(b)
		var sum float64
		for _, p := range g.Model.Params {
			if frozenParam(p.Name) {
				continue
			}
			for _, x := range c.value(gs, pb.TensorRole_TENSOR_ROLE_GRAD, p.Name) {
				sum += float64(x) * float64(x)
			}
		}
		wantNorm = math.Sqrt(sum)
	}

	c.openCase(b, g, d, freezeMod)
	_, norms := c.trainGolden(b, g, a, 0, a.Steps)
	normNote := "first norm not checked (no gradient state)"
	if !math.IsNaN(wantNorm) {
		c.relClose(g.Case+": step 1 grad_norm (trainable tensors only)", norms[0], wantNorm, tol.Loss, 1e-12)
		normNote = fmt.Sprintf("first grad_norm %.6g = the trainable tensors' (all tensors' %.6g)", norms[0], a.GradNorms[0])
	}
	st := c.get(b, c.stateRoles()...)
	nFrozen, nTrained := 0, 0
	for _, p := range g.Model.Params {
		init := g.F32("init." + p.Name)
		got := c.value(st, pb.TensorRole_TENSOR_ROLE_PARAM, p.Name)
		if !frozenParam(p.Name) {
			nTrained++
			if same, _ := sameBits(got, init); same {
				c.Errorf("%s: trainable %s did not change in %d AdamW steps", g.Case, p.Name, a.Steps)
			}
			continue
		}
		nFrozen++
		if same, i := sameBits(got, init); !same {
			c.Errorf("%s: frozen %s[%d] = %v after %d steps, want its initial %v bit for bit", g.Case, p.Name, i, got[i], a.Steps, init[i])
		}
		for _, role := range []pb.TensorRole{pb.TensorRole_TENSOR_ROLE_ADAM_M, pb.TensorRole_TENSOR_ROLE_ADAM_V} {
			if i := firstNonZero(c.value(st, role, p.Name)); i >= 0 {
				c.Errorf("%s: frozen %s: %v[%d] = %v, want 0 (frozen tensors get no AdamW update)", g.Case, p.Name, role, i, c.value(st, role, p.Name)[i])
			}
		}
	}
	return fmt.Sprintf("%s %d frozen unchanged, %d trainable moved, %s", g.Case, nFrozen, nTrained, normNote)
}

// sameBits reports whether got and want are bit-identical and, if not, the first
// differing index.
func sameBits(got, want []float32) (bool, int) {
	if len(got) != len(want) {
		return false, 0
	}
	for i := range got {
		if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
			return false, i
		}
	}
	return true, -1
}

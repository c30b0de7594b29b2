package xla

import (
	"slices"
	"sync"

	//lint:ignore ST1001 GoMLX graph code reads best with the dot import (GoMLX's own style)
	. "github.com/gomlx/gomlx/pkg/core/graph"
	"github.com/gomlx/gomlx/pkg/core/shapes"
)

// Matrix products and their gradients.
//
// GoMLX v0.25.0 differentiates DotGeneral by broadcasting: the gradient of out = lhs·rhs is
// ReduceSum(Mul(v, rhs)) over a [batch, lhs free, rhs free, contracting] intermediate — the
// full product space. For the LM head of a 50304-token vocabulary at 16×48 tokens and width
// 64 that is two 2.5·10⁹-element tensors (10 GB each in float32) per backward pass; it made
// one simplego training step take ~35 s and 20 GB, and under XLA it would be a fused
// reduction instead of a GEMM. The gradient of a matrix product is itself a pair of matrix
// products (dlhs = v·rhsᵀ, drhs = lhsᵀ·v, as in JAX's dot_general transpose rules), so this
// file replaces the VJP of the DotGeneral nodes the model builds with exactly that. The
// model's gradients still come from GoMLX's reverse-mode autodiff; only the per-op rule for
// DotGeneral is ours.
//
// GoMLX keeps DotGeneral's axes in an unexported field, so dot records them for the nodes it
// creates while a graph is being differentiated (trackDots … untrackDots), and the VJP
// registered for NodeTypeDotGeneral falls back to GoMLX's own rule for any other node.

// dotAxes are a DotGeneral's contracting and batch axes.
type dotAxes struct {
	lc, lb, rc, rb []int
}

var dotRegistry = struct {
	sync.Mutex
	graphs map[*Graph]map[*Node]dotAxes
}{graphs: map[*Graph]map[*Node]dotAxes{}}

func init() {
	gomlxVJP := VJPRegistration[NodeTypeDotGeneral]
	VJPRegistration[NodeTypeDotGeneral] = func(node *Node, vs []*Node, out shapes.Shape) []*Node {
		if ax, ok := lookupDot(node); ok && out.IsScalar() {
			return ax.vjp(node, vs[0])
		}
		return gomlxVJP(node, vs, out)
	}
}

// trackDots makes dot record the axes of the products it builds in g, so Gradient uses the
// matrix-product VJP for them; untrackDots forgets them once g's gradient is built.
func trackDots(g *Graph) {
	dotRegistry.Lock()
	defer dotRegistry.Unlock()
	dotRegistry.graphs[g] = map[*Node]dotAxes{}
}

func untrackDots(g *Graph) {
	dotRegistry.Lock()
	defer dotRegistry.Unlock()
	delete(dotRegistry.graphs, g)
}

func lookupDot(n *Node) (dotAxes, bool) {
	dotRegistry.Lock()
	defer dotRegistry.Unlock()
	ax, ok := dotRegistry.graphs[n.Graph()][n]
	return ax, ok
}

// dot is DotGeneral(lhs, lc, lb, rhs, rc, rb): the output's axes are the batch axes, then
// lhs's free axes, then rhs's free axes (each in axis order).
func dot(lhs *Node, lc, lb []int, rhs *Node, rc, rb []int) *Node {
	ax := dotAxes{lc: slices.Clone(lc), lb: slices.Clone(lb), rc: slices.Clone(rc), rb: slices.Clone(rb)}
	// Backends may normalise the axis slices they are given in place: pass copies.
	out := DotGeneral(lhs, slices.Clone(lc), slices.Clone(lb), rhs, slices.Clone(rc), slices.Clone(rb))
	dotRegistry.Lock()
	if m, ok := dotRegistry.graphs[out.Graph()]; ok && out.Type() == NodeTypeDotGeneral {
		m[out] = ax
	}
	dotRegistry.Unlock()
	return out
}

// freeAxes are the axes of a rank-r operand that are neither contracting nor batch, in order.
func freeAxes(r int, contracting, batch []int) []int {
	var free []int
	for a := 0; a < r; a++ {
		if !slices.Contains(contracting, a) && !slices.Contains(batch, a) {
			free = append(free, a)
		}
	}
	return free
}

// vjp returns the gradients of Σ v·(lhs·rhs) with respect to lhs and rhs, each one
// DotGeneral of v with the other operand (plus a transpose when the axes need it).
func (ax dotAxes) vjp(node, v *Node) []*Node {
	lhs, rhs := node.Inputs()[0], node.Inputs()[1]
	nb := len(ax.lb)
	lf := freeAxes(lhs.Rank(), ax.lc, ax.lb)
	rf := freeAxes(rhs.Rank(), ax.rc, ax.rb)
	vBatch := iotaFrom(0, nb)
	vL := iotaFrom(nb, len(lf))         // v's axes that came from lhs's free axes
	vR := iotaFrom(nb+len(lf), len(rf)) // … and from rhs's free axes
	// grad(this) = DotGeneral(v, contract v's axes of the other's free axes with those axes,
	// batch with the other's batch axes) → [batch, this free, other's contracting axes in
	// axis order]; then each of this operand's axes is moved back where it belongs.
	grad := func(thisRank int, thisC, thisB, thisF []int, vOther []int, other *Node, otherC, otherB, otherF []int) *Node {
		g := DotGeneral(v, slices.Clone(vOther), slices.Clone(vBatch), other, slices.Clone(otherF), slices.Clone(otherB))
		sortedOtherC := slices.Sorted(slices.Values(otherC))
		perm := make([]int, thisRank) // perm[i]: g's axis that becomes this operand's axis i
		for i, a := range thisB {
			perm[a] = i
		}
		for i, a := range thisF {
			perm[a] = nb + i
		}
		for i, a := range thisC {
			perm[a] = nb + len(thisF) + slices.Index(sortedOtherC, otherC[i])
		}
		if isIdentity(perm) {
			return g
		}
		return TransposeAllAxes(g, perm...)
	}
	return []*Node{
		grad(lhs.Rank(), ax.lc, ax.lb, lf, vR, rhs, ax.rc, ax.rb, rf),
		grad(rhs.Rank(), ax.rc, ax.rb, rf, vL, lhs, ax.lc, ax.lb, lf),
	}
}

func iotaFrom(start, n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = start + i
	}
	return out
}

func isIdentity(perm []int) bool {
	for i, p := range perm {
		if i != p {
			return false
		}
	}
	return true
}

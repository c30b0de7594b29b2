package xla

import (
	"math"
	"slices"

	//lint:ignore ST1001 GoMLX graph code reads best with the dot import (GoMLX's own style)
	. "github.com/gomlx/gomlx/pkg/core/graph"
	"github.com/gomlx/gomlx/pkg/core/shapes"
	"github.com/gomlx/gopjrt/dtypes"

	"github.com/mypt/mypt/sdk/modelspec"
)

// maskedScore is added to attention scores a query may not see: exp underflows to 0 while
// the arithmetic stays finite (no -Inf − -Inf).
const maskedScore = -1e30

// net builds the transformer described by a as GoMLX graph operations. Parameters are
// graph inputs, in the layout's order.
type net struct {
	a   modelspec.Arch
	lay *modelspec.Layout
	// noPad is set on engines without the Pad op (simplego), which the gradient of Slice
	// needs: pieces of an axis are then picked with one-hot masks instead of slices.
	noPad bool
	// noDUS is set on engines without DynamicUpdateSlice (simplego): Decode writes its cache
	// row with a select instead.
	noDUS bool
	// compute is the operand dtype of the linear layers' matrix products: Float32, or
	// BFloat16 (Precision.compute_dtype BF16). Parameters, optimizer state, embeddings,
	// norms, attention, softmax and the loss stay float32; see matmul.
	compute dtypes.DType
}

// matmul is the matrix product of a linear layer (qkv, attention projection, MLP, LM head)
// in the compute dtype. In BFloat16 both operands are rounded to bf16 and the product
// accumulates in float32 inside the engine's DotGeneral; its result is bf16 (GoMLX v0.25.0's
// DotGeneral has no result-type parameter, so this is PyTorch autocast's numerics, not a
// float32-output GEMM) and is widened back to float32 at once. The backward products go
// through the same conversions (bf16 operands, float32 accumulation) and the gradients
// reach the float32 master weights as float32. Attention's two batched products (q·kᵀ and
// weights·v) are not routed here: they stay float32, as in flash attention, where scores
// and softmax are float32 — bf16-rounded scores cost more accuracy than those small
// products save.
func (n *net) matmul(lhs *Node, lc, lb []int, rhs *Node, rc, rb []int) *Node {
	if n.compute != dtypes.BFloat16 {
		return dot(lhs, lc, lb, rhs, rc, rb)
	}
	y := dot(ConvertDType(lhs, dtypes.BFloat16), lc, lb, ConvertDType(rhs, dtypes.BFloat16), rc, rb)
	return ConvertDType(y, dtypes.Float32)
}

// pick returns x's i-th entry along axis (the axis is removed).
func (n *net) pick(x *Node, axis, i int) *Node {
	dims := x.Shape().Dimensions
	if !n.noPad {
		starts := make([]int, len(dims))
		limits := slices.Clone(dims)
		starts[axis], limits[axis] = i, i+1
		ranges := make([]SliceAxisSpec, len(dims))
		for k := range dims {
			ranges[k] = AxisRange(starts[k], limits[k])
		}
		return Squeeze(Slice(x, ranges...), axis)
	}
	sel := make([]float32, dims[axis])
	sel[i] = 1
	bdims := make([]int, len(dims))
	for k := range bdims {
		bdims[k] = 1
	}
	bdims[axis] = dims[axis]
	mask := BroadcastToDims(Reshape(Const(x.Graph(), sel), bdims...), dims...)
	return ReduceSum(Mul(x, mask), axis)
}

// posInputs carry the per-token position information the host computes (positions restart
// in every packed segment): learned position ids or the RoPE cos/sin tables.
type posInputs struct {
	pos      *Node // [B,T] int32 (learned positions)
	cos, sin *Node // [B,T,hd/2] float32 (RoPE)
}

// kvHook lets a caller see (and replace) the keys and values of layer l, [B,T,nh,hd]
// (keys after RoPE), before attention uses them: Prefill records them, Decode swaps in the
// cache.
type kvHook func(l int, k, v *Node) (*Node, *Node)

// dropper draws the training-mode random masks from one RNG state.
type dropper struct {
	rng     *Node
	dropout float64
	neftune float64
}

func (d *dropper) uniform(shape shapes.Shape) *Node {
	var u *Node
	d.rng, u = RandomUniform(d.rng, shape)
	return u
}

// drop applies inverted dropout to x (no-op when d is nil or dropout is 0).
func (d *dropper) drop(x *Node) *Node {
	if d == nil || d.dropout <= 0 {
		return x
	}
	u := d.uniform(x.Shape())
	keep := ConvertDType(GreaterOrEqual(u, Scalar(x.Graph(), dtypes.Float32, d.dropout)), dtypes.Float32)
	return Mul(x, MulScalar(keep, 1/(1-d.dropout)))
}

// weights returns the parameter inputs (nodes, in the layout's order) by their role in the
// network; a tensor the architecture does not have is nil.
func (n *net) weights(nodes []*Node) modelspec.Weights[*Node] {
	return modelspec.ViewWeights(n.a, n.lay, func(p modelspec.Param) *Node {
		i, _ := n.lay.Index(p.Name)
		return nodes[i]
	})
}

// tail reshapes a 1-D vector to rank r ([1,…,1,C]) for broadcasting.
func tail(v *Node, r int) *Node {
	dims := make([]int, r)
	for i := range dims {
		dims[i] = 1
	}
	dims[r-1] = v.Shape().Dimensions[0]
	return Reshape(v, dims...)
}

// linear is x·Wᵀ (+ b): x [B,T,in], W [out,in] (PyTorch layout), b [out] or nil.
func (n *net) linear(x, w, b *Node) *Node {
	y := n.matmul(x, []int{2}, nil, w, []int{1}, nil)
	if b != nil {
		y = Add(y, tail(b, 3))
	}
	return y
}

// norm is LayerNorm (biased variance, weight and bias) or RMSNorm over the last axis.
func (n *net) norm(x, w, b *Node) *Node {
	eps := n.a.NormEps
	if n.a.LayerNorm {
		mean := ReduceAndKeep(x, ReduceMean, -1)
		xc := Sub(x, mean)
		v := ReduceAndKeep(Square(xc), ReduceMean, -1)
		y := Mul(Mul(xc, Reciprocal(Sqrt(AddScalar(v, eps)))), tail(w, 3))
		if b != nil {
			y = Add(y, tail(b, 3))
		}
		return y
	}
	ms := ReduceAndKeep(Square(x), ReduceMean, -1)
	return Mul(Mul(x, Reciprocal(Sqrt(AddScalar(ms, eps)))), tail(w, 3))
}

// rope rotates x [B,T,nh,hd] by the split-half ("rotate_half") convention.
func (n *net) rope(x, cos, sin *Node) *Node {
	dims := x.Shape().Dimensions
	half := dims[3] / 2
	c := BroadcastToDims(InsertAxes(cos, 2), dims[0], dims[1], dims[2], half)
	s := BroadcastToDims(InsertAxes(sin, 2), dims[0], dims[1], dims[2], half)
	halves := Reshape(x, dims[0], dims[1], dims[2], 2, half)
	x1, x2 := n.pick(halves, 3, 0), n.pick(halves, 3, 1)
	return Reshape(Stack([]*Node{Sub(Mul(x1, c), Mul(x2, s)), Add(Mul(x2, c), Mul(x1, s))}, 3), dims...)
}

// gelu is the exact erf GELU.
func gelu(x *Node) *Node {
	return Mul(MulScalar(x, 0.5), OnePlus(Erf(MulScalar(x, 1/math.Sqrt2))))
}

// attentionBias is the additive attention bias [B,T,T] for segment ids [B,T]: 0 where query i
// may see key j (j ≤ i, same segment), maskedScore elsewhere. Built in the graph so that only
// the [B,T] ids travel to the device, not a [B,T,T] mask.
func attentionBias(segs *Node) *Node {
	g := segs.Graph()
	dims := segs.Shape().Dimensions
	B, T := dims[0], dims[1]
	square := shapes.Make(dtypes.Int32, B, T, T)
	causal := GreaterOrEqual(Iota(g, square, 1), Iota(g, square, 2))
	same := Equal(BroadcastToDims(InsertAxes(segs, -1), B, T, T), BroadcastToDims(InsertAxes(segs, 1), B, T, T))
	return Where(LogicalAnd(causal, same), Scalar(g, dtypes.Float32, 0), Scalar(g, dtypes.Float32, maskedScore))
}

// forward returns the logits [B,T,V] for tokens [B,T]. bias [B,T,S] is added to the
// attention scores (0 where allowed, maskedScore elsewhere); S is T unless hook substitutes
// a longer key sequence. d is nil outside training.
func (n *net) forward(w modelspec.Weights[*Node], tokens *Node, pi posInputs, bias *Node, hook kvHook, d *dropper) *Node {
	a := n.a
	B, T := tokens.Shape().Dimensions[0], tokens.Shape().Dimensions[1]
	nh, hd := a.NHead, a.HeadDim
	x := Gather(w.Wte, InsertAxes(tokens, -1)) // [B,T,C]
	if a.LearnedPos {
		x = Add(x, Gather(w.Wpe, InsertAxes(pi.pos, -1)))
	}
	if d != nil && d.neftune > 0 {
		amp := d.neftune / math.Sqrt(float64(T*a.NEmbd))
		u := d.uniform(x.Shape())
		x = Add(x, MulScalar(AddScalar(MulScalar(u, 2), -1), amp))
	}
	biasH := InsertAxes(bias, 1) // [B,1,T,S]
	scale := 1 / math.Sqrt(float64(hd))
	for l, lw := range w.Layers {
		h := n.norm(x, lw.Ln1W, lw.Ln1B)
		qkv := n.linear(h, lw.QkvW, lw.QkvB) // [B,T,3C]
		qkv3 := Reshape(qkv, B, T, 3, nh, hd)
		q, k, v := n.pick(qkv3, 2, 0), n.pick(qkv3, 2, 1), n.pick(qkv3, 2, 2)
		if !a.LearnedPos {
			q, k = n.rope(q, pi.cos, pi.sin), n.rope(k, pi.cos, pi.sin)
		}
		if hook != nil {
			k, v = hook(l, k, v)
		}
		S := k.Shape().Dimensions[1]
		// Attention products in float32 whatever the compute dtype (see matmul).
		scores := MulScalar(dot(q, []int{3}, []int{0, 2}, k, []int{3}, []int{0, 2}), scale) // [B,nh,T,S]
		scores = Add(scores, BroadcastToDims(biasH, B, nh, T, S))
		att := d.drop(Softmax(scores, -1))
		y := dot(att, []int{3}, []int{0, 1}, v, []int{1}, []int{0, 2}) // [B,nh,T,hd]
		y = Reshape(TransposeAllDims(y, 0, 2, 1, 3), B, T, a.NEmbd)    // [B,T,C]
		y = n.linear(y, lw.ProjW, lw.ProjB)
		x = Add(x, d.drop(y))

		h = n.norm(x, lw.Ln2W, lw.Ln2B)
		var m *Node
		if a.SwiGLU {
			gate := n.linear(h, lw.GateW, nil)
			up := n.linear(h, lw.UpW, nil)
			m = n.linear(Mul(Mul(gate, Sigmoid(gate)), up), lw.DownW, nil)
		} else {
			m = n.linear(gelu(n.linear(h, lw.Fc1W, lw.Fc1B)), lw.Fc2W, lw.Fc2B)
		}
		x = Add(x, d.drop(m))
	}
	x = n.norm(x, w.LnfW, w.LnfB)
	return n.linear(x, w.LmW, w.LmB) // LmW is Wte with tied weights
}

// crossEntropy returns the per-token CE [B,T] of logits [B,T,V] against targets [B,T]:
// logsumexp(logits) − logits[target]. It is written to keep few [B,T,V] intermediates (the
// target logit is a gather, not a one-hot product), which matters for large vocabularies.
func crossEntropy(logits, targets *Node) *Node {
	dims := logits.Shape().Dimensions
	B, T, V := dims[0], dims[1], dims[2]
	flat := Reshape(logits, B*T, V)
	mx := StopGradient(ReduceAndKeep(flat, ReduceMax, -1))
	lse := Add(Log(ReduceSum(Exp(Sub(flat, mx)), -1)), Reshape(mx, B*T))
	rows := Iota(logits.Graph(), shapes.Make(dtypes.Int32, B*T, 1), 0)
	idx := Concatenate([]*Node{rows, Reshape(targets, B*T, 1)}, 1)
	picked := Gather(flat, idx) // [B·T]
	return Reshape(Sub(lse, picked), B, T)
}

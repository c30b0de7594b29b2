package xla

import (
	"fmt"

	"github.com/gomlx/gomlx/backends"
	//lint:ignore ST1001 GoMLX graph code reads best with the dot import (GoMLX's own style)
	. "github.com/gomlx/gomlx/pkg/core/graph"
	"github.com/gomlx/gomlx/pkg/core/shapes"
	"github.com/gomlx/gomlx/pkg/core/tensors"
	"github.com/gomlx/gopjrt/dtypes"

	"github.com/mypt/mypt/sdk/modelspec"
)

// maxCachedShapes bounds how many (batch, seq_len) shapes each program keeps compiled.
const maxCachedShapes = 64

// programs are the compiled XLA programs of one session. Each graph.Exec compiles once per
// distinct input shape — i.e. per (batch, seq_len), or per cache capacity — and caches it.
type programs struct {
	n        *net
	be       backends.Backend
	random   bool       // the training graph draws dropout / NEFTune noise
	rope     *ropeTable // nil with learned positions
	train    *Exec
	eval     *Exec
	evalLog  *Exec
	opt      *Exec
	decode   *Exec
	prefills map[int]*Exec // by cache capacity
}

func newPrograms(be backends.Backend, n *net) (*programs, error) {
	pr := &programs{n: n, be: be, random: n.a.Dropout > 0 || n.a.NeftuneAlpha > 0, prefills: map[int]*Exec{}}
	if !n.a.LearnedPos {
		pr.rope = newRopeTable(n.a)
	}
	var err error
	mk := func(name string, fn func([]*Node) []*Node) *Exec {
		if err != nil {
			return nil
		}
		var e *Exec
		e, err = newExec(be, name, fn)
		return e
	}
	pr.train = mk("forward_backward", pr.trainGraph)
	pr.eval = mk("evaluate", func(in []*Node) []*Node { return pr.evalGraph(in, false) })
	pr.evalLog = mk("evaluate_logits", func(in []*Node) []*Node { return pr.evalGraph(in, true) })
	pr.opt = mk("optimizer_step", pr.optGraph)
	pr.decode = mk("decode", pr.decodeGraph)
	if err != nil {
		pr.close()
		return nil, err
	}
	return pr, nil
}

// newExec creates the program called name that fn builds.
func newExec(be backends.Backend, name string, fn func([]*Node) []*Node) (*Exec, error) {
	e, err := NewExec(be, fn)
	if err != nil {
		return nil, fmt.Errorf("creating program %s: %w", name, err)
	}
	return e.WithName(name).SetMaxCache(maxCachedShapes), nil
}

func (pr *programs) close() {
	for _, e := range []*Exec{pr.train, pr.eval, pr.evalLog, pr.opt, pr.decode} {
		if e != nil {
			e.Finalize()
		}
	}
	for _, e := range pr.prefills {
		e.Finalize()
	}
}

// numPos is how many position inputs a forward pass takes.
func (pr *programs) numPos() int {
	if pr.n.a.LearnedPos {
		return 1
	}
	return 2
}

func (pr *programs) posFrom(in []*Node) posInputs {
	if pr.n.a.LearnedPos {
		return posInputs{pos: in[0]}
	}
	return posInputs{cos: in[0], sin: in[1]}
}

// trainGraph: params…, grads…, tokens, targets, weights, grad_scale, positions…, segment ids
// [, rng] → per-token CE [B,T], grads + grad_scale·∂(Σ w·CE)/∂θ ….
func (pr *programs) trainGraph(in []*Node) []*Node {
	np := len(pr.n.lay.Params)
	ps, gs := in[:np], in[np:2*np]
	rest := in[2*np:]
	tokens, targets, weights, scale := rest[0], rest[1], rest[2], rest[3]
	pi := pr.posFrom(rest[4:])
	bias := attentionBias(rest[4+pr.numPos()])
	var d *dropper
	if pr.random {
		d = &dropper{rng: rest[5+pr.numPos()], dropout: pr.n.a.Dropout, neftune: pr.n.a.NeftuneAlpha}
	}
	g := tokens.Graph()
	trackDots(g) // matrix products get matrix-product gradients (see dot.go)
	defer untrackDots(g)
	logits := pr.n.forward(pr.n.weights(ps), tokens, pi, bias, nil, d)
	ce := crossEntropy(logits, targets)
	loss := Mul(ReduceAllSum(Mul(ce, weights)), scale)
	// Frozen parameters get no gradient: their accumulators pass through (zero).
	var trainable []*Node
	for i, prm := range pr.n.lay.Params {
		if !prm.Frozen {
			trainable = append(trainable, ps[i])
		}
	}
	var grads []*Node
	if len(trainable) > 0 {
		grads = Gradient(loss, trainable...)
	}
	out := []*Node{ce}
	for i, prm := range pr.n.lay.Params {
		if prm.Frozen {
			out = append(out, gs[i])
			continue
		}
		out = append(out, Add(gs[i], grads[0]))
		grads = grads[1:]
	}
	return out
}

// evalGraph: params…, tokens, targets, positions…, segment ids → CE [B,T], argmax [B,T] int32
// [, logits [B,T,V]].
func (pr *programs) evalGraph(in []*Node, withLogits bool) []*Node {
	np := len(pr.n.lay.Params)
	rest := in[np:]
	tokens, targets := rest[0], rest[1]
	pi := pr.posFrom(rest[2:])
	bias := attentionBias(rest[2+pr.numPos()])
	logits := pr.n.forward(pr.n.weights(in[:np]), tokens, pi, bias, nil, nil)
	out := []*Node{crossEntropy(logits, targets), ArgMax(logits, -1, dtypes.Int32)}
	if withLogits {
		out = append(out, logits)
	}
	return out
}

// Optimizer hyper-parameters, in the order of the optimizer program's f32 vector input.
const (
	hB1 = iota
	hC1
	hB2
	hC2
	hBC2Sqrt
	hEps
	hStepSize
	hDecay
	numHyper
)

// optGraph: params…, grads…, m…, v…, hyper [numHyper] f32, clip_norm f64 → params'…, m'…,
// v'…, zero grads…, global grad norm (f64, before clipping). It is torch's
// clip_grad_norm_ followed by AdamW, element for element as backends/cpu computes it.
// Frozen parameters are baked in like the decay flags: left out of the norm, and their
// parameters and moments pass through unchanged.
func (pr *programs) optGraph(in []*Node) []*Node {
	np := len(pr.n.lay.Params)
	ps, gs, ms, vs := in[:np], in[np:2*np], in[2*np:3*np], in[3*np:4*np]
	hyper, clip := in[4*np], in[4*np+1]
	g := hyper.Graph()
	h := func(i int) *Node { return Reshape(Slice(hyper, AxisRange(i, i+1))) }
	sumSq := ScalarZero(g, dtypes.Float64)
	for i, gr := range gs {
		if pr.n.lay.Params[i].Frozen {
			continue
		}
		s := ReduceAllSum(Square(ConvertDType(gr, dtypes.Float64)))
		sumSq = Add(sumSq, s)
	}
	norm := Sqrt(sumSq)
	coef := Div(clip, AddScalar(norm, 1e-6))
	one := ScalarOne(g, dtypes.Float64)
	useCoef := And(GreaterThan(clip, ScalarZero(g, dtypes.Float64)), LessThan(coef, one))
	gscale := ConvertDType(Where(useCoef, coef, one), dtypes.Float32)
	b1, c1, b2, c2 := h(hB1), h(hC1), h(hB2), h(hC2)
	bc2Sqrt, eps, stepSize, decay := h(hBC2Sqrt), h(hEps), h(hStepSize), h(hDecay)
	outP, outM, outV, outG := make([]*Node, np), make([]*Node, np), make([]*Node, np), make([]*Node, np)
	for i, prm := range pr.n.lay.Params {
		if prm.Frozen {
			outP[i], outM[i], outV[i], outG[i] = ps[i], ms[i], vs[i], ZerosLike(gs[i])
			continue
		}
		gi := Mul(gs[i], gscale)
		m := Add(Mul(b1, ms[i]), Mul(c1, gi))
		v := Add(Mul(b2, vs[i]), Mul(c2, Square(gi)))
		denom := Add(Div(Sqrt(v), bc2Sqrt), eps)
		p := ps[i]
		if prm.Decay {
			p = Mul(p, decay)
		}
		outP[i] = Sub(p, Div(Mul(stepSize, m), denom))
		outM[i], outV[i], outG[i] = m, v, ZerosLike(gs[i])
	}
	out := append(append(append(outP, outM...), outV...), outG...)
	return append(out, norm)
}

// prefillGraph: params…, tokens [1,P], positions…, segment ids [1,P] → logits [1,P,V], then for
// every layer K and V [1,capacity,nh,hd] (positions ≥ P zero).
func (pr *programs) prefillGraph(capacity int) func([]*Node) []*Node {
	return func(in []*Node) []*Node {
		np := len(pr.n.lay.Params)
		rest := in[np:]
		tokens := rest[0]
		pi := pr.posFrom(rest[1:])
		bias := attentionBias(rest[1+pr.numPos()])
		var kv []*Node
		hook := func(_ int, k, v *Node) (*Node, *Node) {
			for _, x := range []*Node{k, v} {
				d := x.Shape().Dimensions
				padded := x
				if extra := capacity - d[1]; extra > 0 {
					padded = Concatenate([]*Node{x, Zeros(x.Graph(), shapes.Make(x.DType(), d[0], extra, d[2], d[3]))}, 1)
				}
				kv = append(kv, padded)
			}
			return k, v
		}
		logits := pr.n.forward(pr.n.weights(in[:np]), tokens, pi, bias, hook, nil)
		return append([]*Node{logits}, kv...)
	}
}

// decodeGraph: params…, K_0, V_0, …, K_{L-1}, V_{L-1} [1,cap,nh,hd], token [1,1],
// positions…, bias [1,1,cap], at (int32 scalar: the new token's index) → logits [1,1,V] and
// the updated K/V.
func (pr *programs) decodeGraph(in []*Node) []*Node {
	np, L := len(pr.n.lay.Params), pr.n.a.NLayer
	cache := in[np : np+2*L]
	rest := in[np+2*L:]
	tokens := rest[0]
	pi := pr.posFrom(rest[1:])
	bias := rest[1+pr.numPos()]
	at := rest[2+pr.numPos()]
	g := at.Graph()
	zero := ScalarZero(g, dtypes.Int32)
	out := make([]*Node, 2*L)
	update := func(c, x *Node) *Node {
		if !pr.n.noDUS {
			return DynamicUpdateSlice(c, x, []*Node{zero, at, zero, zero})
		}
		// simplego lacks DynamicUpdateSlice: select the new row where the position is at.
		dims := c.Shape().Dimensions
		here := Equal(Iota(g, shapes.Make(dtypes.Int32, dims...), 1), BroadcastToDims(at, dims...))
		return Where(here, BroadcastToDims(x, dims...), c)
	}
	hook := func(l int, k, v *Node) (*Node, *Node) {
		out[2*l] = update(cache[2*l], k)
		out[2*l+1] = update(cache[2*l+1], v)
		return out[2*l], out[2*l+1]
	}
	logits := pr.n.forward(pr.n.weights(in[:np]), tokens, pi, bias, hook, nil)
	return append([]*Node{logits}, out...)
}

// prefill returns (compiling on first use) the prefill program for a cache capacity.
func (pr *programs) prefill(capacity int) (*Exec, error) {
	if e, ok := pr.prefills[capacity]; ok {
		return e, nil
	}
	e, err := newExec(pr.be, fmt.Sprintf("prefill_cap%d", capacity), pr.prefillGraph(capacity))
	if err != nil {
		return nil, err
	}
	pr.prefills[capacity] = e
	return e, nil
}

// run executes e on args, turning GoMLX panics into errors.
func run(e *Exec, args []any) (out []*tensors.Tensor, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%s: %v", e.Name(), r)
		}
	}()
	out, err = e.Exec(args...)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", e.Name(), err)
	}
	return out, nil
}

// runAndRead runs e and copies its first output, a float32 tensor, to the host (what names
// it in the error); the other outputs stay engine tensors, now the caller's.
func runAndRead(e *Exec, args []any, what string) ([]float32, []*tensors.Tensor, error) {
	out, err := run(e, args)
	if err != nil {
		return nil, nil, err
	}
	first, err := hostCopy[float32](out[0])
	_ = out[0].FinalizeAll()
	if err != nil {
		freeAll(out[1:])
		return nil, nil, fmt.Errorf("%s: %w", what, err)
	}
	return first, out[1:], nil
}

// appendArgs appends tensors to the arguments of an Exec.
func appendArgs(args []any, ts ...*tensors.Tensor) []any {
	for _, t := range ts {
		args = append(args, t)
	}
	return args
}

// ropeTable holds cos and sin of (t/scale)·θ^(−2i/hd) for every position t < block_size,
// [block_size·hd/2], computed in float64 like backends/cpu. It is built once per session;
// a batch's RoPE inputs are its rows.
type ropeTable struct {
	half     int
	cos, sin []float32
}

func newRopeTable(a modelspec.Arch) *ropeTable {
	cos, sin := a.RopeTables()
	r := &ropeTable{half: a.HeadDim / 2, cos: make([]float32, len(cos)), sin: make([]float32, len(sin))}
	for i := range cos {
		r.cos[i], r.sin[i] = float32(cos[i]), float32(sin[i])
	}
	return r
}

// positionTensors turns positions [b·t] into the forward pass's position inputs: the
// position ids [b,t] (learned positions), or their rows of the RoPE tables, cos and sin
// [b,t,hd/2].
func (pr *programs) positionTensors(pos []int32, b, t int) []*tensors.Tensor {
	if pr.n.a.LearnedPos {
		return []*tensors.Tensor{tensors.FromFlatDataAndDimensions(pos, b, t)}
	}
	half := pr.rope.half
	cos, sin := make([]float32, len(pos)*half), make([]float32, len(pos)*half)
	for r, p := range pos {
		copy(cos[r*half:(r+1)*half], pr.rope.cos[int(p)*half:])
		copy(sin[r*half:(r+1)*half], pr.rope.sin[int(p)*half:])
	}
	return []*tensors.Tensor{tensors.FromFlatDataAndDimensions(cos, b, t, half),
		tensors.FromFlatDataAndDimensions(sin, b, t, half)}
}

// batchInputs returns the host-computed inputs of a forward pass over a [b,t] batch, in the
// programs' order: the position inputs for positions pos [b·t] (restarting in every segment
// when the model resets positions; the kit computes them), then the segment ids [b,t] (all
// 0 when segs is nil: the batch is not packed), from which the graph builds the attention
// mask (attentionBias).
func (pr *programs) batchInputs(pos, segs []int32, b, t int) []*tensors.Tensor {
	if segs == nil {
		segs = make([]int32, b*t)
	}
	return append(pr.positionTensors(pos, b, t), tensors.FromFlatDataAndDimensions(segs, b, t))
}

package xla

import (
	"fmt"
	"math"

	"github.com/gomlx/gomlx/backends"
	//lint:ignore ST1001 GoMLX graph code reads best with the dot import (GoMLX's own style)
	. "github.com/gomlx/gomlx/pkg/core/graph"
	"github.com/gomlx/gomlx/pkg/core/shapes"
	"github.com/gomlx/gomlx/pkg/core/tensors"
	"github.com/gomlx/gopjrt/dtypes"
)

// maxCachedShapes bounds how many (batch, seq_len) shapes each program keeps compiled.
const maxCachedShapes = 64

// programs are the compiled XLA programs of one session. Each graph.Exec compiles once per
// distinct input shape — i.e. per (batch, seq_len), or per cache capacity — and caches it.
type programs struct {
	n        *net
	be       backends.Backend
	random   bool // the training graph draws dropout / NEFTune noise
	train    *Exec
	eval     *Exec
	evalLog  *Exec
	opt      *Exec
	decode   *Exec
	prefills map[int]*Exec // by cache capacity
}

func newPrograms(be backends.Backend, n *net) (*programs, error) {
	pr := &programs{n: n, be: be, random: n.a.dropout > 0 || n.a.neftune > 0, prefills: map[int]*Exec{}}
	var err error
	mk := func(name string, fn func([]*Node) []*Node) *Exec {
		if err != nil {
			return nil
		}
		var e *Exec
		e, err = NewExec(be, fn)
		if err != nil {
			err = fmt.Errorf("creating program %s: %w", name, err)
			return nil
		}
		return e.WithName(name).SetMaxCache(maxCachedShapes)
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
	if pr.n.a.learnedPos {
		return 1
	}
	return 2
}

func (pr *programs) posFrom(in []*Node) posInputs {
	if pr.n.a.learnedPos {
		return posInputs{pos: in[0]}
	}
	return posInputs{cos: in[0], sin: in[1]}
}

// trainGraph: params…, grads…, tokens, targets, weights, grad_scale, positions…, bias
// [, rng] → per-token CE [B,T], grads + grad_scale·∂(Σ w·CE)/∂θ ….
func (pr *programs) trainGraph(in []*Node) []*Node {
	np := len(pr.n.lay.slots)
	ps, gs := in[:np], in[np:2*np]
	rest := in[2*np:]
	tokens, targets, weights, scale := rest[0], rest[1], rest[2], rest[3]
	pi := pr.posFrom(rest[4:])
	bias := rest[4+pr.numPos()]
	var d *dropper
	if pr.random {
		d = &dropper{rng: rest[5+pr.numPos()], dropout: pr.n.a.dropout, neftune: pr.n.a.neftune}
	}
	g := tokens.Graph()
	trackDots(g) // matrix products get matrix-product gradients (see dot.go)
	defer untrackDots(g)
	logits := pr.n.forward(pr.n.paramMap(ps), tokens, pi, bias, nil, d)
	ce := crossEntropy(logits, targets, pr.n.a.V)
	loss := Mul(ReduceAllSum(Mul(ce, weights)), scale)
	grads := Gradient(loss, ps...)
	out := []*Node{ce}
	for i, g := range grads {
		out = append(out, Add(gs[i], g))
	}
	return out
}

// evalGraph: params…, tokens, targets, positions…, bias → CE [B,T], argmax [B,T] int32
// [, logits [B,T,V]].
func (pr *programs) evalGraph(in []*Node, withLogits bool) []*Node {
	np := len(pr.n.lay.slots)
	rest := in[np:]
	tokens, targets := rest[0], rest[1]
	pi := pr.posFrom(rest[2:])
	bias := rest[2+pr.numPos()]
	logits := pr.n.forward(pr.n.paramMap(in[:np]), tokens, pi, bias, nil, nil)
	out := []*Node{crossEntropy(logits, targets, pr.n.a.V), ArgMax(logits, -1, dtypes.Int32)}
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
func (pr *programs) optGraph(in []*Node) []*Node {
	np := len(pr.n.lay.slots)
	ps, gs, ms, vs := in[:np], in[np:2*np], in[2*np:3*np], in[3*np:4*np]
	hyper, clip := in[4*np], in[4*np+1]
	g := hyper.Graph()
	h := func(i int) *Node { return Reshape(Slice(hyper, AxisRange(i, i+1))) }
	var sumSq *Node
	for _, gr := range gs {
		s := ReduceAllSum(Square(ConvertDType(gr, dtypes.Float64)))
		if sumSq == nil {
			sumSq = s
		} else {
			sumSq = Add(sumSq, s)
		}
	}
	norm := Sqrt(sumSq)
	coef := Div(clip, AddScalar(norm, 1e-6))
	one := ScalarOne(g, dtypes.Float64)
	useCoef := And(GreaterThan(clip, ScalarZero(g, dtypes.Float64)), LessThan(coef, one))
	gscale := ConvertDType(Where(useCoef, coef, one), dtypes.Float32)
	b1, c1, b2, c2 := h(hB1), h(hC1), h(hB2), h(hC2)
	bc2Sqrt, eps, stepSize, decay := h(hBC2Sqrt), h(hEps), h(hStepSize), h(hDecay)
	outP, outM, outV, outG := make([]*Node, np), make([]*Node, np), make([]*Node, np), make([]*Node, np)
	for i, sl := range pr.n.lay.slots {
		gi := Mul(gs[i], gscale)
		m := Add(Mul(b1, ms[i]), Mul(c1, gi))
		v := Add(Mul(b2, vs[i]), Mul(c2, Square(gi)))
		denom := Add(Div(Sqrt(v), bc2Sqrt), eps)
		p := ps[i]
		if sl.decay {
			p = Mul(p, decay)
		}
		outP[i] = Sub(p, Div(Mul(stepSize, m), denom))
		outM[i], outV[i], outG[i] = m, v, ZerosLike(gs[i])
	}
	out := append(append(append(outP, outM...), outV...), outG...)
	return append(out, norm)
}

// prefillGraph: params…, tokens [1,P], positions…, bias [1,P,P] → logits [1,P,V], then for
// every layer K and V [1,capacity,nh,hd] (positions ≥ P zero).
func (pr *programs) prefillGraph(capacity int) func([]*Node) []*Node {
	return func(in []*Node) []*Node {
		np := len(pr.n.lay.slots)
		rest := in[np:]
		tokens := rest[0]
		pi := pr.posFrom(rest[1:])
		bias := rest[1+pr.numPos()]
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
		logits := pr.n.forward(pr.n.paramMap(in[:np]), tokens, pi, bias, hook, nil)
		return append([]*Node{logits}, kv...)
	}
}

// decodeGraph: params…, K_0, V_0, …, K_{L-1}, V_{L-1} [1,cap,nh,hd], token [1,1],
// positions…, bias [1,1,cap], at (int32 scalar: the new token's index) → logits [1,1,V] and
// the updated K/V.
func (pr *programs) decodeGraph(in []*Node) []*Node {
	np, L := len(pr.n.lay.slots), pr.n.a.L
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
	logits := pr.n.forward(pr.n.paramMap(in[:np]), tokens, pi, bias, hook, nil)
	return append([]*Node{logits}, out...)
}

// prefill returns (compiling on first use) the prefill program for a cache capacity.
func (pr *programs) prefill(capacity int) (*Exec, error) {
	if e, ok := pr.prefills[capacity]; ok {
		return e, nil
	}
	e, err := NewExec(pr.be, pr.prefillGraph(capacity))
	if err != nil {
		return nil, fmt.Errorf("creating program prefill: %w", err)
	}
	e = e.WithName(fmt.Sprintf("prefill_cap%d", capacity)).SetMaxCache(maxCachedShapes)
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

// hostInputs are the host-computed per-batch inputs of a forward pass.
type hostInputs struct {
	pos    []*tensors.Tensor // learned: [pos]; RoPE: [cos, sin]
	bias   *tensors.Tensor
	finish func()
}

// ropeTables returns cos and sin of (t/scale)·θ^(−2i/hd) for positions pos, [len(pos)·hd/2],
// computed in float64 like backends/cpu.
func ropeTables(a arch, pos []int32) (cos, sin []float32) {
	half := a.hd / 2
	cos, sin = make([]float32, len(pos)*half), make([]float32, len(pos)*half)
	for r, p := range pos {
		for i := 0; i < half; i++ {
			freq := 1 / math.Pow(a.ropeTheta, float64(2*i)/float64(a.hd))
			ang := float64(p) / a.ropeScale * freq
			cos[r*half+i] = float32(math.Cos(ang))
			sin[r*half+i] = float32(math.Sin(ang))
		}
	}
	return cos, sin
}

// positionTensors turns positions [B·T] into the forward pass's position inputs.
func positionTensors(a arch, pos []int32, b, t int) []*tensors.Tensor {
	if a.learnedPos {
		return []*tensors.Tensor{tensors.FromFlatDataAndDimensions(pos, b, t)}
	}
	cos, sin := ropeTables(a, pos)
	return []*tensors.Tensor{tensors.FromFlatDataAndDimensions(cos, b, t, a.hd/2),
		tensors.FromFlatDataAndDimensions(sin, b, t, a.hd/2)}
}

// batchInputs computes positions (restarting at segment changes when segment_position_reset)
// and the causal, segment-isolated attention bias for a [b,t] batch.
func batchInputs(a arch, b, t int, segs []int32) hostInputs {
	n := b * t
	pos := make([]int32, n)
	bias := make([]float32, b*t*t)
	for r := 0; r < b; r++ {
		start := 0
		for i := 0; i < t; i++ {
			if segs != nil && a.segReset && i > 0 && segs[r*t+i] != segs[r*t+i-1] {
				start = i
			}
			pos[r*t+i] = int32(i - start)
			row := bias[(r*t+i)*t : (r*t+i+1)*t]
			for j := range row {
				if j > i || (segs != nil && segs[r*t+i] != segs[r*t+j]) {
					row[j] = maskedScore
				}
			}
		}
	}
	hi := hostInputs{pos: positionTensors(a, pos, b, t), bias: tensors.FromFlatDataAndDimensions(bias, b, t, t)}
	hi.finish = func() {
		for _, x := range hi.pos {
			_ = x.FinalizeAll()
		}
		_ = hi.bias.FinalizeAll()
	}
	return hi
}

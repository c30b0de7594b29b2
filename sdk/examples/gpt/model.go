package gpt

import (
	"math"

	"github.com/mypt/mypt/sdk/backendkit"
	"github.com/mypt/mypt/sdk/modelspec"
)

// model is the network: its architecture, parameters and gradients (flat buffers in the
// host's parameter order, modelspec.Layout) and views of both by role.
type model struct {
	a                modelspec.Arch
	lay              *modelspec.Layout
	params, grads    []float64
	w, g             modelspec.Weights[[]float64]
	ropeCos, ropeSin []float64 // RoPE tables [BlockSize, HeadDim/2]
}

func newModel(a modelspec.Arch, lay *modelspec.Layout) *model {
	m := &model{a: a, lay: lay, params: make([]float64, lay.Total), grads: make([]float64, lay.Total)}
	// A tensor the architecture lacks (a bias with bias off, …) is a nil slice; with
	// tied weights LmW is Wte, so the LM head's gradient lands in the embedding's.
	view := func(buf []float64) modelspec.Weights[[]float64] {
		return modelspec.ViewWeights(m.a, lay, func(p modelspec.Param) []float64 { return buf[p.Offset : p.Offset+p.Size] })
	}
	m.w, m.g = view(m.params), view(m.grads)
	if !a.LearnedPos {
		m.ropeCos, m.ropeSin = a.RopeTables()
	}
	return m
}

// pass is the input of one forward pass: b rows of t tokens and their positions;
// segs are the packed segment ids (nil: one sequence per row).
type pass struct {
	b, t              int
	tokens, pos, segs []int32
}

// normed is a normalisation's output with the per-row statistics its backward needs.
type normed struct{ y, mean, rstd []float64 }

// layerActs are the activations of one block that the backward pass reads.
type layerActs struct {
	in    []float64 // the block's input (residual stream)
	ln1   normed
	qkv   []float64 // [N, 3C], q and k after RoPE
	att   []float64 // softmax probabilities [B, NH, T, S], 0 where masked
	y     []float64 // attention output before the projection [N, C]
	mid   []float64 // residual stream after attention
	ln2   normed
	h, up []float64 // MLP: fc1 output (GELU) or gate (SwiGLU); SwiGLU's up
	act   []float64 // MLP activation, input of the last linear
	out   []float64 // the block's output
}

// acts are the activations of one forward pass.
type acts struct {
	ps     pass
	layers []layerActs
	lnf    normed
	logits []float64 // [N, V]
}

// forward runs the network over ps and returns its activations, logits included.
// Without a cache attention reads the batch's own keys (training, evaluation). With one
// (b = 1, generation) each layer appends the new keys and values to it and attention
// reads the whole cached sequence, the new tokens being its last t positions.
func (m *model) forward(ps pass, cache *kvCache) *acts {
	a := m.a
	N, C, H := ps.b*ps.t, a.NEmbd, a.MLPHidden
	x := &acts{ps: ps, layers: make([]layerActs, a.NLayer)}

	// token embeddings (+ learned position embeddings)
	res := make([]float64, N*C)
	for r := range N {
		row := res[r*C : (r+1)*C]
		copy(row, m.w.Wte[int(ps.tokens[r])*C:])
		if a.LearnedPos {
			addTo(row, m.w.Wpe[int(ps.pos[r])*C:(int(ps.pos[r])+1)*C])
		}
	}

	for l := range a.NLayer {
		w, la := &m.w.Layers[l], &x.layers[l]
		la.in = res
		// attention: mid = in + proj(attention(norm1(in)))
		la.ln1 = m.norm(res, w.Ln1W, w.Ln1B)
		la.qkv = linear(la.ln1.y, w.QkvW, w.QkvB, N, C, 3*C)
		if !a.LearnedPos {
			m.rope(la.qkv, ps.pos, false)
		}
		k, v, ld, s := la.qkv[C:], la.qkv[2*C:], 3*C, ps.t
		if cache != nil {
			k, v, s = cache.appendKV(l, la.qkv, ps.t)
			ld = C
		}
		la.y, la.att = m.attention(la.qkv, k, v, ld, s, ps)
		la.mid = linear(la.y, w.ProjW, w.ProjB, N, C, C)
		addTo(la.mid, res)
		// MLP: out = mid + mlp(norm2(mid))
		la.ln2 = m.norm(la.mid, w.Ln2W, w.Ln2B)
		if a.SwiGLU {
			la.h = linear(la.ln2.y, w.GateW, nil, N, C, H)
			la.up = linear(la.ln2.y, w.UpW, nil, N, C, H)
			la.act = swiglu(la.h, la.up)
			la.out = linear(la.act, w.DownW, nil, N, H, C)
		} else {
			la.h = linear(la.ln2.y, w.Fc1W, w.Fc1B, N, C, H)
			la.act = gelu(la.h)
			la.out = linear(la.act, w.Fc2W, w.Fc2B, N, H, C)
		}
		addTo(la.out, la.mid)
		res = la.out
	}
	if cache != nil {
		cache.n += ps.t
	}

	x.lnf = m.norm(res, m.w.LnfW, m.w.LnfB)
	x.logits = linear(x.lnf.y, m.w.LmW, m.w.LmB, N, C, a.VocabSize)
	return x
}

// crossEntropy returns the loss statistics of the logits [N, V] over the positions with
// weight > 0: Σ w·CE, Σ w, and how often the argmax (the first maximum) is the target.
// With scale ≠ 0 it also returns scale·∂(Σ w·CE)/∂logits = scale·w·(softmax − onehot).
func crossEntropy(logits []float64, targets []int32, weights []float32, V int, scale float64) (backendkit.Totals, []float64) {
	var tot backendkit.Totals
	var dlogits []float64
	if scale != 0 {
		dlogits = make([]float64, len(logits))
	}
	for r := range len(logits) / V {
		w := float64(weights[r])
		if w <= 0 {
			continue // the target may be out of range; the gradient stays 0
		}
		row, tg := logits[r*V:(r+1)*V], int(targets[r])
		mx, arg := row[0], 0
		for j, z := range row {
			if z > mx {
				mx, arg = z, j
			}
		}
		var sum float64
		for _, z := range row {
			sum += math.Exp(z - mx)
		}
		tot.LossSum += w * (mx + math.Log(sum) - row[tg])
		tot.WeightSum += w
		tot.Counted++
		if arg == tg {
			tot.Correct++
		}
		if dlogits != nil {
			d := dlogits[r*V : (r+1)*V]
			for j, z := range row {
				d[j] = scale * w * math.Exp(z-mx) / sum
			}
			d[tg] -= scale * w
		}
	}
	return tot, dlogits
}

// backward adds the gradients of the pass x, given ∂loss/∂logits, to m.grads: the
// forward pass in reverse, block by block. dres is ∂loss/∂(residual stream).
func (m *model) backward(x *acts, dlogits []float64) {
	a, ps := m.a, x.ps
	N, C, H := ps.b*ps.t, a.NEmbd, a.MLPHidden
	L := a.NLayer

	// LM head and final norm
	dln := linearBackward(m.g.LmW, m.g.LmB, dlogits, x.lnf.y, m.w.LmW, N, C, a.VocabSize)
	dres := make([]float64, N*C)
	normBackward(dres, m.g.LnfW, m.g.LnfB, dln, x.layers[L-1].out, x.lnf, m.w.LnfW, a.LayerNorm)

	for l := L - 1; l >= 0; l-- {
		w, g, la := &m.w.Layers[l], &m.g.Layers[l], &x.layers[l]
		// MLP: dres is ∂/∂out; the skip connection passes it on, the norm adds the branch
		if a.SwiGLU {
			dact := linearBackward(g.DownW, nil, dres, la.act, w.DownW, N, H, C)
			dgate, dup := swigluBackward(dact, la.h, la.up)
			dln = linearBackward(g.GateW, nil, dgate, la.ln2.y, w.GateW, N, C, H)
			addTo(dln, linearBackward(g.UpW, nil, dup, la.ln2.y, w.UpW, N, C, H))
		} else {
			dact := linearBackward(g.Fc2W, g.Fc2B, dres, la.act, w.Fc2W, N, H, C)
			dh := geluBackward(dact, la.h)
			dln = linearBackward(g.Fc1W, g.Fc1B, dh, la.ln2.y, w.Fc1W, N, C, H)
		}
		normBackward(dres, g.Ln2W, g.Ln2B, dln, la.mid, la.ln2, w.Ln2W, a.LayerNorm)

		// attention: dres is now ∂/∂mid and becomes ∂/∂in
		dy := linearBackward(g.ProjW, g.ProjB, dres, la.y, w.ProjW, N, C, C)
		dqkv := m.attentionBackward(dy, la, ps)
		if !a.LearnedPos {
			m.rope(dqkv, ps.pos, true)
		}
		dln = linearBackward(g.QkvW, g.QkvB, dqkv, la.ln1.y, w.QkvW, N, C, 3*C)
		normBackward(dres, g.Ln1W, g.Ln1B, dln, la.in, la.ln1, w.Ln1W, a.LayerNorm)
	}

	// embeddings: scatter-add (rows may share a token or a position)
	for r := range N {
		d := dres[r*C : (r+1)*C]
		tok := int(ps.tokens[r])
		addTo(m.g.Wte[tok*C:(tok+1)*C], d)
		if a.LearnedPos {
			p := int(ps.pos[r])
			addTo(m.g.Wpe[p*C:(p+1)*C], d)
		}
	}
}

// Package generate turns next-token logits into text: MyPT's sampling
// (temperature, repetition penalty over a recent window, top-k, top-p,
// presets), stop tokens and the KV-cache loop over a backend's
// Prefill/Decode. Sampling lives in the core so every backend generates
// with the same semantics. MyPT's generation is described in docs/MYPT.md §18.
package generate

import (
	"fmt"
	"math"
	"math/rand/v2"
	"sort"
)

// Params are the sampling settings.
type Params struct {
	Temperature       float64 // ≤ 0: greedy argmax on the raw logits
	TopK              int     // ≤ 0: off
	TopP              float64 // ≥ 1: off
	RepetitionPenalty float64 // 1: off
	PenaltyWindow     int     // recent tokens the penalty looks at (MyPT: 256)
}

// Presets are MyPT generate.py's --preset values.
var presets = map[string]Params{
	"chat":          {Temperature: 0.7, TopK: 50, TopP: 0.9, RepetitionPenalty: 1.1},
	"creative":      {Temperature: 1.0, TopK: 100, TopP: 0.95, RepetitionPenalty: 1.2},
	"factual":       {Temperature: 0.3, TopK: 10, TopP: 0.8, RepetitionPenalty: 1.0},
	"code":          {Temperature: 0.2, TopK: 40, TopP: 0.95, RepetitionPenalty: 1.0},
	"deterministic": {Temperature: 0.0, TopK: 1, TopP: 1.0, RepetitionPenalty: 1.0},
}

// Preset returns a named preset (chat, creative, factual, code,
// deterministic) with MyPT's 256-token penalty window.
func Preset(name string) (Params, error) {
	p, ok := presets[name]
	if !ok {
		return Params{}, fmt.Errorf("unknown preset %q (want chat, creative, factual, code or deterministic)", name)
	}
	p.PenaltyWindow = 256
	return p, nil
}

// Sampler picks next tokens. It keeps scratch buffers, so it is not safe for
// concurrent use.
type Sampler struct {
	p     Params
	rng   *rand.Rand
	work  []float64
	order []int
}

// NewSampler returns a sampler with its own seeded random stream.
func NewSampler(p Params, seed uint64) *Sampler {
	return &Sampler{p: p, rng: rand.New(rand.NewPCG(seed, 0x6d797074))}
}

// Next returns the next token id given the logits and the recent ids (the
// prompt and what was generated, oldest first). Order of operations as in
// MyPT: temperature, repetition penalty, top-k, top-p, softmax, draw.
func (s *Sampler) Next(logits []float32, recent []int32) int32 {
	if s.p.Temperature <= 0 {
		return argmax(logits)
	}
	v := len(logits)
	if cap(s.work) < v {
		s.work = make([]float64, v)
	}
	x := s.work[:v]
	for i, l := range logits {
		x[i] = float64(l) / s.p.Temperature
	}
	if pen := s.p.RepetitionPenalty; pen != 1 && pen > 0 {
		window := recent
		if s.p.PenaltyWindow > 0 && len(window) > s.p.PenaltyWindow {
			window = window[len(window)-s.p.PenaltyWindow:]
		}
		seen := map[int32]bool{}
		for _, id := range window {
			if seen[id] || id < 0 || int(id) >= v {
				continue
			}
			seen[id] = true
			if x[id] > 0 {
				x[id] /= pen
			} else {
				x[id] *= pen
			}
		}
	}
	filtered := append([]float64(nil), x...)
	if k := s.p.TopK; k > 0 && k < v {
		kth := kthLargest(filtered, k)
		for i := range filtered {
			if filtered[i] < kth {
				filtered[i] = math.Inf(-1)
			}
		}
	}
	if s.p.TopP > 0 && s.p.TopP < 1 {
		s.topP(filtered)
	}
	if allNegInf(filtered) {
		filtered = x // MyPT falls back to the unfiltered logits
	}
	return s.draw(filtered)
}

// topP keeps the smallest set of most likely tokens whose probability
// reaches p (the token that crosses p is kept; the top token always is).
func (s *Sampler) topP(x []float64) {
	if cap(s.order) < len(x) {
		s.order = make([]int, len(x))
	}
	order := s.order[:len(x)]
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool { return x[order[a]] > x[order[b]] })
	probs := softmax(x)
	var cum float64
	for rank, i := range order {
		if rank > 0 && cum > s.p.TopP {
			x[i] = math.Inf(-1)
		}
		cum += probs[i]
	}
}

func (s *Sampler) draw(x []float64) int32 {
	probs := softmax(x)
	u := s.rng.Float64()
	var cum float64
	last := -1
	for i, p := range probs {
		if p == 0 {
			continue
		}
		cum += p
		last = i
		if u < cum {
			return int32(i)
		}
	}
	if last < 0 || math.IsNaN(cum) {
		return argmax64(x)
	}
	return int32(last) // rounding left u ≥ cum
}

func softmax(x []float64) []float64 {
	m := math.Inf(-1)
	for _, v := range x {
		m = math.Max(m, v)
	}
	out := make([]float64, len(x))
	var z float64
	for i, v := range x {
		if !math.IsInf(v, -1) {
			out[i] = math.Exp(v - m)
			z += out[i]
		}
	}
	for i := range out {
		out[i] /= z
	}
	return out
}

func kthLargest(x []float64, k int) float64 {
	c := append([]float64(nil), x...)
	sort.Sort(sort.Reverse(sort.Float64Slice(c)))
	return c[k-1]
}

func allNegInf(x []float64) bool {
	for _, v := range x {
		if !math.IsInf(v, -1) {
			return false
		}
	}
	return true
}

func argmax(x []float32) int32 {
	best := 0
	for i, v := range x {
		if v > x[best] {
			best = i
		}
	}
	return int32(best)
}

func argmax64(x []float64) int32 {
	best := 0
	for i, v := range x {
		if v > x[best] {
			best = i
		}
	}
	return int32(best)
}

package generate

import (
	"math"
	"testing"
)

func TestGreedyAndTopK1(t *testing.T) {
	logits := []float32{0.1, 2.5, -1, 2.4}
	det, _ := Preset("deterministic")
	if got := NewSampler(det, 1).Next(logits, nil); got != 1 {
		t.Fatalf("greedy picked %d, want 1", got)
	}
	p := Params{Temperature: 1.5, TopK: 1}
	for seed := range uint64(20) {
		if got := NewSampler(p, seed).Next(logits, nil); got != 1 {
			t.Fatalf("top_k=1 picked %d, want 1", got)
		}
	}
}

// frequencies draws n samples and returns the empirical distribution.
func frequencies(p Params, logits []float32, recent []int32, n int) []float64 {
	s := NewSampler(p, 42)
	f := make([]float64, len(logits))
	for range n {
		f[s.Next(logits, recent)]++
	}
	for i := range f {
		f[i] /= float64(n)
	}
	return f
}

// TestDistributions compares empirical frequencies with probabilities
// worked out by hand from MyPT's order of operations.
func TestDistributions(t *testing.T) {
	logits := []float32{2, 1, 0, -1}
	ln := func(x float64) float32 { return float32(math.Log(x)) }
	const n = 40000
	tol := 4 * math.Sqrt(0.25/n) // 4 sigma of a Bernoulli frequency

	for _, tc := range []struct {
		name   string
		p      Params
		logits []float32
		recent []int32
		want   []float64
	}{
		{
			name: "temperature 2",
			p:    Params{Temperature: 2},
			// softmax([1, .5, 0, -.5])
			want: normalise([]float64{math.Exp(1), math.Exp(0.5), 1, math.Exp(-0.5)}),
		},
		{
			name: "top-k 2",
			p:    Params{Temperature: 1, TopK: 2},
			want: normalise([]float64{math.Exp(2), math.Exp(1), 0, 0}),
		},
		{
			// probs .5 .3 .15 .05: cumulative .5 .8 .95 → with p=0.6 keep the
			// top two (the token crossing 0.6 is kept).
			name:   "top-p 0.6",
			p:      Params{Temperature: 1, TopP: 0.6},
			logits: []float32{ln(.5), ln(.3), ln(.15), ln(.05)},
			want:   []float64{.5 / .8, .3 / .8, 0, 0},
		},
		{
			// penalty 2 on token 0 (positive logit: divided) and 3 (negative:
			// multiplied), each once however often it recurs.
			name:   "repetition penalty",
			p:      Params{Temperature: 1, RepetitionPenalty: 2, PenaltyWindow: 3},
			recent: []int32{1, 0, 3, 0},
			want:   normalise([]float64{math.Exp(1), math.Exp(1), 1, math.Exp(-2)}),
		},
	} {
		lg := tc.logits
		if lg == nil {
			lg = logits
		}
		got := frequencies(tc.p, lg, tc.recent, n)
		for i := range got {
			if math.Abs(got[i]-tc.want[i]) > tol {
				t.Errorf("%s: P(%d) = %.4f, want %.4f", tc.name, i, got[i], tc.want[i])
			}
		}
	}
}

func normalise(x []float64) []float64 {
	var s float64
	for _, v := range x {
		s += v
	}
	for i := range x {
		x[i] /= s
	}
	return x
}

func TestSameSeedSameDraws(t *testing.T) {
	p, _ := Preset("creative")
	logits := make([]float32, 100)
	for i := range logits {
		logits[i] = float32(math.Sin(float64(i)))
	}
	a, b := NewSampler(p, 7), NewSampler(p, 7)
	for i := range 50 {
		if x, y := a.Next(logits, nil), b.Next(logits, nil); x != y {
			t.Fatalf("draw %d differs: %d vs %d", i, x, y)
		}
	}
}

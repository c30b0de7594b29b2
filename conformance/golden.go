package conformance

import (
	"math"
	"sync"

	"github.com/mypt/mypt/conformance/golden"
)

var (
	goldenOnce  sync.Once
	goldenCases []*golden.Case
	goldenErr   error
)

// loadGolden parses the embedded golden vectors (package golden) once; the checks
// share the cases and must not modify them.
func loadGolden() ([]*golden.Case, error) {
	goldenOnce.Do(func() { goldenCases, goldenErr = golden.Load() })
	return goldenCases, goldenErr
}

// complexity orders cases for checks that need just one: plain batches
// first, then weighted, then packed.
func complexity(g *golden.Case) int {
	n := 0
	if g.Batch.Packed {
		n += 2
	}
	if g.Batch.Weights != "ones" {
		n++
	}
	return n
}

// hasZeroWeights reports whether some positions carry no loss.
func hasZeroWeights(g *golden.Case) bool {
	for _, w := range g.F32("batch.loss_weights") {
		if w == 0 {
			return true
		}
	}
	return false
}

// segment is one packed episode: row and positions [start, end).
type segment struct {
	row, start, end int
	id              int32
}

// segments lists the non-padding segments of a packed case, row by row.
func segments(g *golden.Case) []segment {
	ids := g.I32("batch.segment_ids")
	if ids == nil {
		return nil
	}
	T := int(g.Batch.SeqLen)
	var out []segment
	for r := 0; r < int(g.Batch.BatchSize); r++ {
		row := ids[r*T : (r+1)*T]
		for i := 0; i < T; {
			j := i
			for j < T && row[j] == row[i] {
				j++
			}
			if row[i] != 0 {
				out = append(out, segment{row: r, start: i, end: j, id: row[i]})
			}
			i = j
		}
	}
	return out
}

// crossEntropy returns −log softmax(logits)[target] in float64.
func crossEntropy(logits []float32, target int) (ce float64, probs []float64) {
	mx := math.Inf(-1)
	for _, v := range logits {
		mx = math.Max(mx, float64(v))
	}
	probs = make([]float64, len(logits))
	var sum float64
	for i, v := range logits {
		probs[i] = math.Exp(float64(v) - mx)
		sum += probs[i]
	}
	for i := range probs {
		probs[i] /= sum
	}
	return math.Log(sum) + mx - float64(logits[target]), probs
}

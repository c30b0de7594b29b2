package train

import "math"

// Schedule is MyPT's learning-rate schedule (docs/MYPT.md §15): linear warmup
// to the peak over warmup steps, then cosine decay to min_lr = ratio·peak at
// max_iters.
type Schedule struct {
	Peak     float64
	MinRatio float64
	Warmup   int
	MaxIters int
}

// LR returns the learning rate for optimizer step `step` (0-based).
func (s Schedule) LR(step int) float64 {
	if step < s.Warmup {
		return s.Peak * float64(step+1) / float64(s.Warmup)
	}
	minLR := s.MinRatio * s.Peak
	progress := math.Min(float64(step-s.Warmup)/math.Max(1, float64(s.MaxIters-s.Warmup)), 1)
	return minLR + 0.5*(s.Peak-minLR)*(1+math.Cos(math.Pi*progress))
}

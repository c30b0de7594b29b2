package train

import (
	"math"
	"testing"
)

// TestSchedule checks values worked out by hand from MyPT's get_lr for the
// phase-3a config (peak 3e-5, warmup 150 of 5000).
func TestSchedule(t *testing.T) {
	s := Schedule{Peak: 3e-5, MinRatio: 0.1, Warmup: 150, MaxIters: 5000}
	for _, tc := range []struct {
		step int
		want float64
	}{
		{0, 3e-5 / 150},
		{74, 3e-5 * 75 / 150},
		{149, 3e-5},
		{150, 3e-5}, // cosine at progress 0
		{2575, 3e-6 + 0.5*(2.7e-5)*(1+math.Cos(math.Pi*0.5))}, // halfway: 1.65e-5
		{5000, 3e-6},
		{6000, 3e-6}, // clamped
	} {
		if got := s.LR(tc.step); math.Abs(got-tc.want) > 1e-15 {
			t.Errorf("LR(%d) = %g, want %g", tc.step, got, tc.want)
		}
	}
	if got := (Schedule{Peak: 1, MinRatio: 0.1, MaxIters: 10}).LR(0); got != 1 {
		t.Errorf("no warmup: LR(0) = %g, want the peak", got)
	}
}

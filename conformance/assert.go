package conformance

import (
	"testing"
)

// AssertClose fails t unless every element satisfies |got − want| ≤
// tol.Atol + tol.AtolOfMax·max|want| + tol.Rtol·|want| — the comparison the
// suite's own checks make — and logs the worst element's error with -v. It
// is for backends' unit tests that compare beyond the suite (a backend
// against another, a fast path against a slow one).
func AssertClose(t testing.TB, what string, got, want []float32, tol Tolerance) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d values, want %d", what, len(got), len(want))
	}
	ratio, at, maxAbs := tol.worst(got, want)
	if ratio > 1 {
		t.Errorf("%s", tol.failure(what, got, want, ratio, at, maxAbs))
		return
	}
	if testing.Verbose() {
		t.Logf("%s: max abs error %.3g (%.3f of tolerance)", what, maxAbs, ratio)
	}
}

// RelErr is |got − want| / max(|want|, floor), +Inf for NaN: how the suite
// compares scalars (losses, norms).
func RelErr(got, want, floor float64) float64 { return relErr(got, want, floor) }

package kernels

import (
	"strings"
	"testing"
)

// TestParseSignatures reads every parameter type the kernels use, and refuses a type it
// cannot marshal rather than guessing.
func TestParseSignatures(t *testing.T) {
	src := `// a comment
extern "C" __global__ void k1(float* out, const int* ids, int n, long long total,
                              float eps, double amp, u64 seed) {
}
extern "C" __global__ void k2(unsigned short* dst) {}`
	sigs, err := parseSignatures(src)
	if err != nil {
		t.Fatal(err)
	}
	if sigs["k1"] != "ppilfdu" || sigs["k2"] != "p" || len(sigs) != 2 {
		t.Fatalf("signatures %v, want k1 ppilfdu and k2 p", sigs)
	}
	for _, bad := range []string{
		`extern "C" __global__ void k(short n) {}`,
		`extern "C" __global__ void k(int) {}`,
		`extern "C" __global__ void k(int n) {} extern "C" __global__ void k(int n) {}`,
		`no kernels here`,
	} {
		if _, err := parseSignatures(bad); err == nil {
			t.Errorf("parseSignatures(%q) succeeded", bad)
		}
	}
	if n := strings.Count(Source, "__global__ void "); len(Signatures()) != n {
		t.Errorf("kernels.cu: %d signatures for %d kernels", len(Signatures()), n)
	}
}

package kernels

import (
	"slices"
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
	sigs, err := ParseSignatures(src)
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
		if _, err := ParseSignatures(bad); err == nil {
			t.Errorf("ParseSignatures(%q) succeeded", bad)
		}
	}
	if n := strings.Count(Source, "__global__ void "); len(Signatures()) != n {
		t.Errorf("kernels.cu: %d signatures for %d kernels", len(Signatures()), n)
	}
}

// TestStaticShared sums each kernel's __shared__ arrays from the source.
func TestStaticShared(t *testing.T) {
	got := StaticShared()
	for name, want := range map[string]int{
		"norm_fwd": 4 * 1024, "attn_fwd": 2 * 4 * AttBK * MaxHeadDim, "attn_bwd_dkv": 2*4*AttBQ*MaxHeadDim + 2*4*AttBQ,
		"xent": 8 * 1024, "sumsq": 8 * 256, "embed_fwd": 0,
	} {
		if got[name] != want {
			t.Errorf("%s: %d bytes of static shared memory, want %d", name, got[name], want)
		}
	}
	if len(got) != len(Signatures()) {
		t.Errorf("%d kernels sized, %d declared", len(got), len(Signatures()))
	}
	if _, err := ParseStaticShared(`extern "C" __global__ void k(int n) { __shared__ float x[N]; }`); err == nil {
		t.Error("an undefined array size was accepted")
	}
}

// TestParseParams reads each parameter's name, kind and, for pointers, element type from
// the declaration, and agrees with Signatures on kernels.cu.
func TestParseParams(t *testing.T) {
	src := `extern "C" __global__ void k(double* rowLoss, const int* ids, const unsigned short *dst, float eps) {}`
	params, err := ParseParams(src)
	if err != nil {
		t.Fatal(err)
	}
	want := []Param{{"rowLoss", 'p', "double"}, {"ids", 'p', "int"}, {"dst", 'p', "unsigned short"}, {"eps", 'f', ""}}
	if got := params["k"]; !slices.Equal(got, want) {
		t.Errorf("params %+v, want %+v", got, want)
	}
	for name, ps := range Params() {
		var kinds []byte
		for _, p := range ps {
			kinds = append(kinds, p.Kind)
		}
		if string(kinds) != Signatures()[name] {
			t.Errorf("%s: kinds %s, signature %s", name, kinds, Signatures()[name])
		}
	}
	if got := Params()["xent"][3]; got != (Param{"rowLoss", 'p', "double"}) {
		t.Errorf("xent parameter 3 is %+v, want double* rowLoss (kernels.cu)", got)
	}
}

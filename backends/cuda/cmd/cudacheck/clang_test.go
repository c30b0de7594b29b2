package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/mypt/mypt/backends/cuda/kernels"
)

// clangOrSkip is clang-19's path; without it the test is skipped (make test still fails:
// its cuda-check step needs clang-19).
func clangOrSkip(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath(defaultClang)
	if err != nil {
		t.Skipf("%s is not installed (%s), so kernels.cu is not compile-checked", defaultClang, installHint)
	}
	return p
}

// TestClangKernelsPTX compiles kernels.cu as `make cuda-check` does and reads the PTX
// itself: each file targets its architecture and has one .entry per kernel of kernels.cu.
func TestClangKernelsPTX(t *testing.T) {
	clang := clangOrSkip(t)
	dir := t.TempDir()
	paths, err := compilePTX(context.Background(), clang, kernels.Source, "kernels", dir, clangArchs)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(clangArchs, []string{"sm_80", "sm_90"}) {
		t.Fatalf("clang check archs %v, want sm_80 and sm_90", clangArchs)
	}
	for i, arch := range clangArchs {
		want := filepath.Join(dir, "kernels_"+arch+".ptx")
		if paths[i] != want {
			t.Fatalf("PTX for %s at %s, want %s", arch, paths[i], want)
		}
		b, err := os.ReadFile(paths[i])
		if err != nil {
			t.Fatal(err)
		}
		ptx := string(b)
		if !slices.Contains(strings.Split(ptx, "\n"), ".target "+arch) {
			t.Errorf("%s: no line %q", paths[i], ".target "+arch)
		}
		entries := regexp.MustCompile(`(?m)^\.visible \.entry (\w+)\(`).FindAllStringSubmatch(ptx, -1)
		var got []string
		for _, e := range entries {
			got = append(got, e[1])
		}
		slices.Sort(got)
		var want2 []string
		for k := range kernels.Signatures() {
			want2 = append(want2, k)
		}
		slices.Sort(want2)
		if !slices.Equal(got, want2) {
			t.Errorf("%s: entries %v, want one per kernel %v", arch, got, want2)
		}
		if err := checkPTX(ptx, arch, want2); err != nil {
			t.Error(err)
		}
	}
}

// TestClangPrelude compiles testdata/prelude_use.cu, which uses every declaration of
// nvrtc_prelude.h, and finds the instruction (or libdevice call) each one stands for.
func TestClangPrelude(t *testing.T) {
	clang := clangOrSkip(t)
	src, err := os.ReadFile("testdata/prelude_use.cu")
	if err != nil {
		t.Fatal(err)
	}
	paths, err := compilePTX(context.Background(), clang, string(src), "prelude_use", t.TempDir(), []string{"sm_90"})
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(paths[0])
	if err != nil {
		t.Fatal(err)
	}
	ptx := string(b)
	for _, want := range []string{
		".target sm_90", ".entry prelude_use(", ".maxntid 256",
		"%tid.x", "%ctaid.x", "%ntid.x", "%nctaid.x", "bar.sync", ".shared",
		"sqrt.rn.f32", "sqrt.rn.f64", "rsqrt.approx.f32", "rsqrt.approx.f64",
		"max.f32", "min.f32", "max.f64", "min.f64", "abs.f32", "abs.f64",
		"__nv_expf", "__nv_logf", "__nv_erff", "__nv_tanhf", "__nv_powf",
		"__nv_exp,", "__nv_log,", "__nv_erf,", "__nv_tanh,", "__nv_pow,",
		"shfl.sync.idx.b32", "shfl.sync.up.b32", "shfl.sync.down.b32", "shfl.sync.bfly.b32",
		"vote.sync.ballot.b32", "vote.sync.all.pred", "vote.sync.any.pred", "activemask.b32",
		"bar.warp.sync",
		", 4127,", // __shfl_down_sync(..., width 16): (32-16)<<8 | 31
	} {
		if !strings.Contains(ptx, want) {
			t.Errorf("prelude_use PTX lacks %q", want)
		}
	}
	// The float overloads are the float functions (exp(float) is expf, not a double exp).
	for _, f := range []string{"exp", "log", "erf", "tanh", "pow"} {
		if nf, nd := strings.Count(ptx, "\t__nv_"+f+"f, "), strings.Count(ptx, "\t__nv_"+f+", "); nf != 2 || nd != 1 {
			t.Errorf("%d calls of __nv_%sf and %d of __nv_%s, want 2 and 1", nf, f, nd, f)
		}
	}
}

// TestClangRejects: a warning is an error, a built-in the prelude lacks is undeclared, and
// either diagnostic names kernels.cu with its own line numbers.
func TestClangRejects(t *testing.T) {
	clang := clangOrSkip(t)
	line := strings.Count(kernels.Source, "\n") + 2
	for _, bad := range []struct{ src, want string }{
		{"\n__device__ int f() { int unused; return 0; }\n", "[-Werror,-Wunused-variable]"},
		{"\n__device__ float f(const float* p) { return __ldg(p); }\n", "use of undeclared identifier '__ldg'"},
	} {
		_, err := compilePTX(context.Background(), clang, kernels.Source+bad.src, "kernels", t.TempDir(), []string{"sm_90"})
		if err == nil {
			t.Errorf("clang accepted kernels.cu + %q", bad.src)
			continue
		}
		if msg := err.Error(); !strings.Contains(msg, bad.want) || !strings.Contains(msg, "kernels.cu:"+strconv.Itoa(line)+":") {
			t.Errorf("error %q: want %q at kernels.cu:%d", msg, bad.want, line)
		}
	}
}

// TestCheckPTX: the PTX check wants the architecture's .target and one .entry per kernel.
func TestCheckPTX(t *testing.T) {
	names := []string{"a", "b"}
	good := ".version 7.8\n.target sm_90\n.address_size 64\n.visible .entry a(\n)\n.visible .entry b(\n)\n"
	if err := checkPTX(good, "sm_90", names); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []struct{ ptx, arch, why string }{
		{good, "sm_80", "wrong target"},
		{strings.Replace(good, ".target sm_90\n", "", 1), "sm_90", "no target"},
		{strings.Replace(good, ".visible .entry b(", ".visible .func b(", 1), "sm_90", "missing entry"},
		{good + ".visible .entry b(\n)\n", "sm_90", "duplicate entry"},
		{good + ".visible .entry c(\n)\n", "sm_90", "extra entry"},
	} {
		if err := checkPTX(bad.ptx, bad.arch, names); err == nil {
			t.Errorf("%s: checkPTX accepted it", bad.why)
		}
	}
}

// TestMissingClang: without clang-19 the check fails with a one-line install hint.
func TestMissingClang(t *testing.T) {
	_, err := findClang("clang-19-not-installed")
	if err == nil {
		t.Fatal("found a clang that does not exist")
	}
	if msg := err.Error(); !strings.Contains(msg, "apt-get install clang-19") || strings.Contains(msg, "\n") {
		t.Errorf("message %q: want one line with the install hint", msg)
	}
}

package conformance_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/mypt/mypt/conformance"
	pb "github.com/mypt/mypt/sdk/proto/backendv1"
)

// The plugins these tests run: the CPU backend, and the deliberately broken
// backends of testdata/, each a copy of the CPU backend with one fault. They
// are built once per test binary.
var brokenBackends = []string{
	"ignoreweights", "accumscale", "slidingkv", "leakysegments", "seedless", "fakedeterministic", "bf16sim",
}

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// plugin returns the path of the built plugin binary mypt-backend-NAME.
func plugin(t *testing.T, name string) string {
	t.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "mypt-conformance-plugins-")
		if buildErr != nil {
			return
		}
		pkgs := []string{"github.com/mypt/mypt/cmd/mypt-backend-cpu"}
		for _, b := range brokenBackends {
			pkgs = append(pkgs, "github.com/mypt/mypt/conformance/testdata/"+b)
		}
		build := func(pkg string) error {
			// cmd/mypt-backend-cpu already carries the prefix; testdata/NAME does not
			out := filepath.Join(binDir, "mypt-backend-"+strings.TrimPrefix(filepath.Base(pkg), "mypt-backend-"))
			cmd := exec.Command("go", "build", "-o", out, pkg)
			if msg, err := cmd.CombinedOutput(); err != nil {
				return fmt.Errorf("go build %s: %v\n%s", pkg, err, msg)
			}
			return nil
		}
		// the first build warms the cache for the rest
		if buildErr = build(pkgs[0]); buildErr != nil {
			return
		}
		var wg sync.WaitGroup
		errs := make([]error, len(pkgs))
		for i, p := range pkgs[1:] {
			wg.Add(1)
			go func() { defer wg.Done(); errs[i+1] = build(p) }()
		}
		wg.Wait()
		for _, err := range errs {
			if err != nil && buildErr == nil {
				buildErr = err
			}
		}
	})
	if buildErr != nil {
		t.Fatalf("build plugins: %v", buildErr)
	}
	return filepath.Join(binDir, "mypt-backend-"+name)
}

// TestCPUBackend is the "done when" of the suite: the CPU reference backend
// passes every check (skipping only what it does not declare).
func TestCPUBackend(t *testing.T) {
	cpu := plugin(t, "cpu")
	conformance.Run(t, cpu, conformance.Options{ReferencePlugin: cpu})
}

// certify runs the suite on a backend and returns results by check name.
func certify(t *testing.T, name string, opts conformance.Options) map[string]conformance.Result {
	t.Helper()
	if opts.ReferencePlugin == "" {
		opts.ReferencePlugin = plugin(t, "cpu")
	}
	rep, err := conformance.Certify(context.Background(), plugin(t, name), opts)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]conformance.Result{}
	for _, r := range rep.Results {
		out[r.Name] = r
	}
	if testing.Verbose() {
		var sb strings.Builder
		rep.WriteTable(&sb, false)
		t.Logf("%s", sb.String())
	}
	return out
}

// isPackedOrWeighted matches checks of the golden cases whose loss weights
// are not all 1 or whose rows are packed.
func isPackedOrWeighted(name string) bool {
	for _, c := range []string{"gpt2_packed", "gpt2_tied_nobias_weighted", "llama_untied_bias_packed"} {
		if strings.Contains(name, "/"+c) {
			return true
		}
	}
	return false
}

func isPacked(name string) bool {
	return strings.Contains(name, "/gpt2_packed") || strings.Contains(name, "/llama_untied_bias_packed")
}

// TestBrokenBackendsAreCaught proves the suite can fail: each deliberately
// broken backend in testdata/ fails the checks meant for it, and only checks
// its fault can explain.
func TestBrokenBackendsAreCaught(t *testing.T) {
	for _, tc := range []struct {
		backend string
		caught  []string          // must fail
		also    func(string) bool // may fail too (the fault shows through them)
	}{
		{"ignoreweights", []string{
			"lossmask/f32/zero-weight-targets-ignored", "lossmask/f32/all-zero-weights",
			"lossmask/f32/packed-sum-of-episodes", "lossmask/f32/eot-target-trained",
			"numerics/f32/gpt2_tied_nobias_weighted/loss", "numerics/f32/gpt2_tied_nobias_weighted/gradients",
		}, isPackedOrWeighted},
		{"accumscale", []string{
			"accumulation/f32/gpt2_untied_bias", "accumulation/f32/gpt2_tied_nobias_weighted", "accumulation/f32/gpt2_packed",
			"accumulation/f32/llama_tied", "accumulation/f32/llama_untied_bias_packed",
		}, func(n string) bool { return n == "lossmask/f32/packed-sum-of-episodes" }}, // per-episode calls are accumulation too
		{"slidingkv", []string{
			"kvcache/f32/gpt2_untied_bias", "kvcache/f32/gpt2_tied_nobias_weighted", "kvcache/f32/gpt2_packed",
			"kvcache/f32/llama_tied", "kvcache/f32/llama_untied_bias_packed",
		}, nil},
		{"leakysegments", []string{
			"packing/f32/segment-isolation", "numerics/f32/gpt2_packed/logits", "numerics/f32/llama_untied_bias_packed/logits",
		}, func(n string) bool { return isPacked(n) || n == "lossmask/f32/eot-target-trained" }},
		// Ignoring the seed also breaks the determinism the CPU backend declares.
		{"seedless", []string{"dropout/same-seed-same-mask"}, func(n string) bool { return n == "determinism/bit-exact" }},
		{"fakedeterministic", []string{"determinism/bit-exact"}, nil},
	} {
		t.Run(tc.backend, func(t *testing.T) {
			t.Parallel()
			res := certify(t, tc.backend, conformance.Options{})
			for _, name := range tc.caught {
				r, ok := res[name]
				switch {
				case !ok:
					t.Errorf("%s: check not run", name)
				case r.Status != conformance.StatusFail:
					t.Errorf("%s: %s, want fail (the check meant for this fault)", name, r.Status)
				}
			}
			for name, r := range res {
				if r.Status == conformance.StatusFail && !slices.Contains(tc.caught, name) && (tc.also == nil || !tc.also(name)) {
					t.Errorf("%s failed, but the fault should not show there: %s", name, r.Reason)
				}
			}
		})
	}
}

// TestToleranceFollowsDType runs a backend whose BF16 mode returns logits
// and gradients rounded to bfloat16: it passes under the BF16 tolerances and
// fails the same checks held to the F32 ones.
func TestToleranceFollowsDType(t *testing.T) {
	bf16 := []pb.DType{pb.DType_DTYPE_BF16}
	res := certify(t, "bf16sim", conformance.Options{DTypes: bf16})
	var ran int
	for name, r := range res {
		if r.Status == conformance.StatusFail {
			t.Errorf("%s failed under BF16 tolerances: %s", name, r.Reason)
		}
		if strings.HasPrefix(name, "numerics/bf16/") && r.Status == conformance.StatusPass {
			ran++
		}
	}
	if ran != 25 {
		t.Errorf("%d numerics/bf16 checks passed, want all 25", ran)
	}
	strict := conformance.Options{DTypes: bf16,
		Tolerances: map[pb.DType]conformance.Tolerances{pb.DType_DTYPE_BF16: conformance.DefaultTolerances(pb.DType_DTYPE_F32)},
		Filter:     func(name string) bool { return strings.HasPrefix(name, "numerics/bf16/") }}
	res = certify(t, "bf16sim", strict)
	for name, r := range res {
		if strings.HasSuffix(name, "/logits") || strings.HasSuffix(name, "/gradients") {
			if r.Status != conformance.StatusFail {
				t.Errorf("%s: %s under F32 tolerances, want fail", name, r.Status)
			}
		}
	}
}

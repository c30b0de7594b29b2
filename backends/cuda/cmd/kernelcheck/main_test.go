package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/mypt/mypt/backends/cuda/device"
	"github.com/mypt/mypt/backends/cuda/kernels"
)

// emulated opens an emulated device; without a host C++ compiler the test fails rather
// than skips (make test installs clang-19).
func emulated(t *testing.T, opts device.EmulatedOptions) *device.Emulated {
	t.Helper()
	d, err := device.NewEmulated(opts)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// compare runs the workload on test against ref and returns the report.
func compare(t *testing.T, ref, test *device.Emulated) report {
	t.Helper()
	c := device.NewCompare(ref, test, device.CompareOptions{})
	err := check(context.Background(), c)
	rep := newReport(c, test.Info(), ref.Info(), err)
	if err != nil {
		t.Fatalf("workload: %v", err)
	}
	return rep
}

// The emulated device against itself in the opposite thread order: the workload launches
// every kernel of kernels.cu, and every result is bit-identical, since no kernel uses
// atomics and every reduction has a fixed order (FEATURE_DETERMINISTIC), so the order a
// block's threads run in must not change a bit.
func TestEmulatedAgainstItself(t *testing.T) {
	rep := compare(t, emulated(t, device.EmulatedOptions{}),
		emulated(t, device.EmulatedOptions{Schedule: device.Schedule{Order: "reverse"}}))
	if !rep.Passed || len(rep.NotLaunched) > 0 {
		t.Errorf("%s", rep.summary())
	}
	seen := map[string]bool{}
	for _, k := range rep.Kernels {
		seen[k.name()] = k.Launches > 0
		if k.WorstAbs != 0 {
			t.Errorf("%s: worst difference %g between thread orders, want 0", k.name(), float64(k.WorstAbs))
		}
	}
	for name := range kernels.Signatures() {
		if !seen[name] {
			t.Errorf("kernel %s was never launched", name)
		}
	}
	if !seen["gemm"] || !seen["gemm (bf16)"] {
		t.Errorf("products in fp32 and bf16 not both made: %v", seen)
	}
}

// mutate applies each replacement, which must occur exactly once, to kernels.cu.
func mutate(t *testing.T, edits map[string][2]string) string {
	t.Helper()
	src := kernels.Source
	for kernel, e := range edits {
		if n := strings.Count(src, e[0]); n != 1 {
			t.Fatalf("%s: %q occurs %d times in kernels.cu", kernel, e[0], n)
		}
		src = strings.Replace(src, e[0], e[1], 1)
	}
	return src
}

// Kernels.cu against a mutant of it in which two kernels are wrong (a factor 1.001 in one
// exponential; a loop that stops one row short): exactly those two kernels differ, with
// the first difference in the buffer each writes, and every other kernel matches, though
// it runs on the mutants' outputs: each launch starts from the same memory on both devices.
func TestMutantKernelsFlagged(t *testing.T) {
	mutant := mutate(t, map[string][2]string{
		"swiglu_fwd":  {"1.0f + expf(-g));\n  out[i]", "1.0f + 1.001f * expf(-g));\n  out[i]"},
		"col_sum_add": {"for (int r = 0; r < n; r++) s += d[", "for (int r = 0; r < n - 1; r++) s += d["},
	})
	rep := compare(t, emulated(t, device.EmulatedOptions{}), emulated(t, device.EmulatedOptions{Source: mutant}))
	var failed []string
	for _, k := range rep.Kernels {
		if k.Verdict == "FAIL" {
			failed = append(failed, k.name())
			t.Logf("%s: first failure %+v", k.name(), *k.First)
		}
	}
	if want := []string{"col_sum_add", "swiglu_fwd"}; !slices.Equal(failed, want) {
		t.Fatalf("kernels that differ: %v, want %v\n%s", failed, want, rep.summary())
	}
	for _, k := range rep.Kernels {
		if want := map[string]string{"swiglu_fwd": "out (", "col_sum_add": "db ("}[k.Name]; want != "" && !strings.HasPrefix(k.First.Buffer, want) {
			t.Errorf("%s: first difference in %q, want its output %q", k.Name, k.First.Buffer, want)
		}
	}
	if rep.Passed || !strings.Contains(rep.summary(), "2 differ") {
		t.Errorf("report passed or summary wrong: %s", rep.summary())
	}
}

// The command with a prebuilt emulator library (as on the GPU machine) checks the emulated
// device against itself, exit status 0, and writes the JSON report; bad flags exit 2.
func TestCommand(t *testing.T) {
	dir := t.TempDir()
	lib, js := filepath.Join(dir, "emu.so"), filepath.Join(dir, "k.json")
	var out, errOut bytes.Buffer
	if rc := run(context.Background(), []string{"--build-emu", lib}, &out, &errOut); rc != 0 {
		t.Fatalf("--build-emu: exit %d: %s", rc, errOut.String())
	}
	out.Reset()
	if rc := run(context.Background(), []string{"--device", "emulated", "--emu-lib", lib, "--json", js}, &out, &errOut); rc != 0 {
		t.Fatalf("exit %d:\n%s\n%s", rc, out.String(), errOut.String())
	}
	var rep report
	data, err := os.ReadFile(js)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &rep); err != nil {
		t.Fatal(err)
	}
	if !rep.Passed || len(rep.Kernels) < len(kernels.Signatures()) || !strings.Contains(rep.TestDevice, "prebuilt") {
		t.Errorf("report: %s", data)
	}
	if !strings.Contains(out.String(), "kernelcheck: ") {
		t.Errorf("no summary line:\n%s", out.String())
	}
	if rc := run(context.Background(), []string{"--device", "tpu"}, &out, &errOut); rc != 2 {
		t.Errorf("--device tpu: exit %d, want 2", rc)
	}
}

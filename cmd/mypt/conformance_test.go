package main

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func buildPlugin(t *testing.T, dir, name, pkg string) string {
	t.Helper()
	out := filepath.Join(dir, "mypt-backend-"+name)
	if msg, err := exec.Command("go", "build", "-o", out, pkg).CombinedOutput(); err != nil {
		t.Fatalf("build %s: %v\n%s", pkg, err, msg)
	}
	return out
}

type conformanceReport struct {
	Backend string
	Summary struct{ Passed, Failed, Skipped int }
	Results []struct {
		Name, Status, Reason string
		Details              []string
	}
	Profiles []struct {
		Profile             string
		Declared, Certified bool
	}
	Uses []string
}

func runConformance(t *testing.T, args ...string) (string, conformanceReport, error) {
	t.Helper()
	report := filepath.Join(t.TempDir(), "report.json")
	var out, errOut bytes.Buffer
	root := newRootCmd()
	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetArgs(append([]string{"conformance", "--log-level", "warn", "--report", report}, args...))
	err := root.Execute()
	var rep conformanceReport
	raw, rerr := os.ReadFile(report)
	if rerr != nil {
		t.Fatalf("no report written: %v (command error: %v)", rerr, err)
	}
	if jerr := json.Unmarshal(raw, &rep); jerr != nil {
		t.Fatalf("decode report: %v", jerr)
	}
	if !strings.Contains(errOut.String(), "[1/") {
		t.Errorf("no progress on stderr: %q", errOut.String())
	}
	return out.String(), rep, err
}

// TestConformanceCommand certifies the CPU plugin found by name on
// MYPT_PLUGIN_PATH (the reference found the same way; the portability checks
// hand state over through a checkpoint on disk) and prints its profiles, then
// shows that a broken plugin fails with exit status 1 and a report naming the
// check.
func TestConformanceCommand(t *testing.T) {
	dir := t.TempDir()
	buildPlugin(t, dir, "cpu", "github.com/mypt/mypt/cmd/mypt-backend-cpu")
	buildPlugin(t, dir, "slidingkv", "github.com/mypt/mypt/conformance/testdata/slidingkv")
	t.Setenv("MYPT_PLUGIN_PATH", dir)

	out, rep, err := runConformance(t, "--backend", "cpu", "--run", "^(protocol|kvcache|portability)/")
	if err != nil {
		t.Fatalf("mypt conformance --backend cpu: %v\n%s", err, out)
	}
	if rep.Backend != "cpu" || rep.Summary.Failed != 0 || rep.Summary.Passed < 20 {
		t.Errorf("report: backend %q, summary %+v", rep.Backend, rep.Summary)
	}
	for _, r := range rep.Results {
		if r.Status != "pass" {
			t.Errorf("%s: %s %s", r.Name, r.Status, r.Reason)
		}
	}
	if !strings.Contains(out, "PASS    protocol/handshake") || !strings.Contains(out, "0 failed") {
		t.Errorf("table:\n%s", out)
	}
	portability := 0
	for _, r := range rep.Results {
		if strings.HasPrefix(r.Name, "portability/") {
			portability++
			if len(r.Details) == 0 || !strings.Contains(r.Details[0], "through a checkpoint on disk (core/checkpoint)") {
				t.Errorf("%s: details %q do not say the state went through a checkpoint on disk", r.Name, r.Details)
			}
		}
	}
	if portability != 4 {
		t.Errorf("%d portability checks, want 4 (two cases, both directions)", portability)
	}
	certified := map[string]bool{}
	for _, p := range rep.Profiles {
		certified[p.Profile] = p.Certified
	}
	// the checks run cover these profiles; packed, dropout and the rest had none
	for _, p := range []string{"core", "training", "kv-cache", "portability"} {
		if !certified[p] {
			t.Errorf("profile %s not certified: %+v", p, rep.Profiles)
		}
	}
	if certified["packed"] || certified["bf16"] {
		t.Errorf("profiles certified without checks run, or undeclared: %+v", rep.Profiles)
	}
	if !strings.Contains(out, "PROFILE") || !strings.Contains(out, "mypt can use this backend to: train, generate (with the KV cache)") {
		t.Errorf("no profile table:\n%s", out)
	}

	out, rep, err = runConformance(t, "--backend", "slidingkv", "--run", "^kvcache/f32/llama_tied$")
	if err == nil || !strings.Contains(err.Error(), "1 of 1 checks failed") {
		t.Errorf("broken backend: error %v, want 1 of 1 checks failed", err)
	}
	if len(rep.Results) != 1 || rep.Results[0].Status != "fail" || !strings.Contains(out, "FAIL    kvcache/f32/llama_tied") {
		t.Errorf("broken backend: report %+v, table:\n%s", rep, out)
	}
}

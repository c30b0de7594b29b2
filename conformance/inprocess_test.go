package conformance_test

import (
	"context"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/mypt/mypt/backends/cpu"
	"github.com/mypt/mypt/conformance"
	"github.com/mypt/mypt/sdk"
	"github.com/mypt/mypt/sdk/backendkit"
	pb "github.com/mypt/mypt/sdk/proto/backendv1"
)

// The suite run in process (CertifyBackend, as RunBackend runs it) on the CPU
// backend wrapped with one change each: what the report says about profiles,
// notes and the checks that need a plugin process. backends/cpu runs the
// whole suite on the unwrapped backend.

// certifyInProcess runs the checks filter keeps on the backends newBackend returns.
func certifyInProcess(t *testing.T, newBackend func() sdk.Backend, filter func(string) bool) *conformance.Report {
	t.Helper()
	rep, err := conformance.CertifyBackend(context.Background(), newBackend, conformance.Options{Filter: filter})
	if err != nil {
		t.Fatal(err)
	}
	if testing.Verbose() {
		var sb strings.Builder
		rep.WriteTable(&sb, false)
		t.Logf("%s", sb.String())
	}
	return rep
}

func byName(rep *conformance.Report) map[string]conformance.Result {
	out := map[string]conformance.Result{}
	for _, r := range rep.Results {
		out[r.Name] = r
	}
	return out
}

func profileOf(rep *conformance.Report, p conformance.Profile) conformance.ProfileResult {
	for _, pr := range rep.Profiles {
		if pr.Profile == p {
			return pr
		}
	}
	return conformance.ProfileResult{}
}

func newCPU() sdk.Backend { return cpu.New(cpu.Options{Threads: 2}) }

// newerBackend declares capability values a newer protocol added: a host (and
// this suite) treats them as absent.
type newerBackend struct{ *backendkit.Backend }

const (
	futureFeature  = pb.Feature(1000)
	futureDType    = pb.DType(77)
	futurePosition = pb.PosEncoding(42)
)

func (b newerBackend) GetInfo(ctx context.Context, req *pb.GetInfoRequest) (*pb.GetInfoResponse, error) {
	info, err := b.Backend.GetInfo(ctx, req)
	if err == nil {
		cp := info.Capabilities
		cp.Features = append(cp.Features, futureFeature)
		cp.ComputeDtypes = append(cp.ComputeDtypes, futureDType)
		cp.PosEncodings = append(cp.PosEncodings, futurePosition)
	}
	return info, err
}

// TestUnknownEnumValuesAreNotes: enum values newer than the suite are notes in
// the report, never failures (the protocol evolves by adding them).
func TestUnknownEnumValuesAreNotes(t *testing.T) {
	rep := certifyInProcess(t, func() sdk.Backend { return newerBackend{cpu.New(cpu.Options{Threads: 2})} },
		func(name string) bool { return strings.HasPrefix(name, "protocol/") })
	for _, r := range rep.Results {
		if r.Status == conformance.StatusFail {
			t.Errorf("%s failed: %s", r.Name, r.Reason)
		}
	}
	notes := strings.Join(rep.Notes, "\n")
	for _, want := range []string{"capabilities.features lists 1000", "capabilities.compute_dtypes lists 77", "capabilities.pos_encodings lists 42"} {
		if !strings.Contains(notes, want) {
			t.Errorf("notes %q do not say %q", rep.Notes, want)
		}
	}
	if getinfo := byName(rep)["protocol/getinfo"]; getinfo.Status != conformance.StatusPass || !strings.Contains(getinfo.Details[0], "unknown to this suite") {
		t.Errorf("protocol/getinfo: %s %q, want a pass that notes the unknown values", getinfo.Status, getinfo.Details)
	}
	if !slices.Contains(rep.Certified(), conformance.ProfileCore) || rep.Failed() {
		t.Errorf("certified %v, failed %v: want core certified and a passing report", rep.Certified(), rep.Failed())
	}
	var sb strings.Builder
	rep.WriteTable(&sb, false)
	if !strings.Contains(sb.String(), "note: capabilities.features lists 1000") {
		t.Errorf("the table does not print the notes:\n%s", sb.String())
	}
}

// TestInProcessSkipsWhatNeedsAProcess: in process, the handshake and the
// kill are skipped saying why, and the rest of the protocol checks run.
func TestInProcessSkipsWhatNeedsAProcess(t *testing.T) {
	rep := certifyInProcess(t, newCPU, func(name string) bool {
		return name == "protocol/handshake" || name == "robustness/killed-mid-step" || name == "protocol/shutdown" ||
			name == "robustness/session-after-shutdown"
	})
	res := byName(rep)
	for _, name := range []string{"protocol/handshake", "robustness/killed-mid-step"} {
		if r := res[name]; r.Status != conformance.StatusSkip || !strings.Contains(r.Reason, "separate plugin process") {
			t.Errorf("%s: %s %q, want skipped for needing a plugin process", name, r.Status, r.Reason)
		}
	}
	for _, name := range []string{"protocol/shutdown", "robustness/session-after-shutdown"} {
		if r := res[name]; r.Status != conformance.StatusPass {
			t.Errorf("%s: %s %s, want pass in process", name, r.Status, r.Reason)
		}
	}
	if rep.Plugin != "" || !strings.Contains(rep.Backend, "cpu") {
		t.Errorf("report plugin %q backend %q", rep.Plugin, rep.Backend)
	}
}

// misnamedBackend fails protocol/getinfo (a core check): its name is not a
// plugin name.
type misnamedBackend struct{ *backendkit.Backend }

func (b misnamedBackend) GetInfo(ctx context.Context, req *pb.GetInfoRequest) (*pb.GetInfoResponse, error) {
	info, err := b.Backend.GetInfo(ctx, req)
	if err == nil {
		info.Name = "Not A Name"
	}
	return info, err
}

// overshootingBackend steps with twice the requested learning rate: its
// forward pass is right, its training is not.
type overshootingBackend struct{ *backendkit.Backend }

func (b overshootingBackend) OptimizerStep(ctx context.Context, req *pb.OptimizerStepRequest) (*pb.OptimizerStepResponse, error) {
	req.LearningRate *= 2
	return b.Backend.OptimizerStep(ctx, req)
}

// TestProfiles: a profile is certified only when declared and none of its
// checks failed; a backend failing core certifies nothing and is not usable.
func TestProfiles(t *testing.T) {
	llama := func(name string) bool {
		return name == "protocol/getinfo" || strings.HasPrefix(name, "numerics/f32/llama_tied/") || name == "kvcache/f32/llama_tied"
	}
	t.Run("training-broken", func(t *testing.T) {
		rep := certifyInProcess(t, func() sdk.Backend { return overshootingBackend{cpu.New(cpu.Options{Threads: 2})} }, llama)
		if pr := profileOf(rep, conformance.ProfileTraining); pr.Certified || !pr.Declared || pr.Failed == 0 ||
			!strings.Contains(pr.Reason, "numerics/f32/llama_tied/adamw") {
			t.Errorf("training: %+v, want declared, not certified, naming the failed adamw check", pr)
		}
		if got := rep.Certified(); !slices.Equal(got, []conformance.Profile{conformance.ProfileCore, conformance.ProfileKVCache}) {
			t.Errorf("certified %v, want [core kv-cache]", got)
		}
		if !slices.Equal(rep.Uses, []string{"generate (with the KV cache)"}) || rep.Unusable != "" || !rep.Failed() {
			t.Errorf("uses %q unusable %q failed %v: want generation only, usable, a failed report", rep.Uses, rep.Unusable, rep.Failed())
		}
		if pr := profileOf(rep, conformance.ProfileBF16); pr.Declared || pr.Certified {
			t.Errorf("bf16: %+v, want undeclared", pr)
		}
	})
	t.Run("core-broken", func(t *testing.T) {
		rep := certifyInProcess(t, func() sdk.Backend { return misnamedBackend{cpu.New(cpu.Options{Threads: 2})} }, llama)
		if got := rep.Certified(); len(got) != 0 {
			t.Errorf("certified %v, want nothing", got)
		}
		if pr := profileOf(rep, conformance.ProfileTraining); pr.Failed != 0 || pr.Reason != "core is not certified" {
			t.Errorf("training: %+v, want its checks passing but withheld for core", pr)
		}
		if !strings.Contains(rep.Unusable, "protocol/getinfo") || len(rep.Uses) != 0 || !rep.Failed() {
			t.Errorf("unusable %q uses %q: want unusable naming protocol/getinfo", rep.Unusable, rep.Uses)
		}
		var sb strings.Builder
		rep.WriteTable(&sb, false)
		if !strings.Contains(sb.String(), "not usable by mypt: core: 1 failed: protocol/getinfo") {
			t.Errorf("table:\n%s", sb.String())
		}
	})
	t.Run("no-plugin", func(t *testing.T) {
		rep, err := conformance.Certify(context.Background(), filepath.Join(t.TempDir(), "mypt-backend-missing"), conformance.Options{})
		if err != nil {
			t.Fatal(err)
		}
		if len(rep.Results) != 1 || rep.Results[0].Name != "protocol/handshake" || rep.Unusable == "" || len(rep.Certified()) != 0 {
			t.Errorf("results %+v unusable %q certified %v: want a failed handshake and nothing certified", rep.Results, rep.Unusable, rep.Certified())
		}
	})
	t.Run("core-filtered-out", func(t *testing.T) {
		rep := certifyInProcess(t, newCPU, func(name string) bool { return name == "kvcache/f32/llama_tied" })
		if rep.Unusable != "" || rep.Failed() {
			t.Errorf("unusable %q: a run that checks no core check gives no usability verdict", rep.Unusable)
		}
		if pr := profileOf(rep, conformance.ProfileCore); pr.Certified || pr.Reason != "not checked (no check of it ran)" {
			t.Errorf("core: %+v", pr)
		}
	})
}

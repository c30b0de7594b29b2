// Package pyexample_test runs the Python example backend, mypt-backend-pyexample, the
// way mypt does: started by go-plugin through sdk.Start, certified by the conformance
// suite. It skips when no python3 can import grpc, google.protobuf and numpy (Debian:
// apt-get install python3-grpcio python3-protobuf python3-numpy).
package pyexample_test

import (
	"context"
	"errors"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/mypt/mypt/conformance"
	"github.com/mypt/mypt/core/config"
	"github.com/mypt/mypt/core/model"
	"github.com/mypt/mypt/sdk"
	pb "github.com/mypt/mypt/sdk/proto/backendv1"
)

// launcher is the plugin file mypt's discovery finds.
const launcher = "mypt-backend-pyexample"

var (
	pythonOnce sync.Once
	pythonPath string
	pythonWhy  string
)

// python returns an interpreter that can run the example: $MYPT_PYTHON, python3 from
// PATH or Debian's /usr/bin/python3, the first that imports grpc, google.protobuf and
// numpy. It skips the test when there is none.
func python(t *testing.T) string {
	t.Helper()
	pythonOnce.Do(func() {
		var tried []string
		for _, py := range []string{os.Getenv("MYPT_PYTHON"), "python3", "/usr/bin/python3"} {
			if py == "" || slices.Contains(tried, py) {
				continue
			}
			tried = append(tried, py)
			out, err := exec.Command(py, "-c", "import grpc, google.protobuf, numpy").CombinedOutput()
			if err == nil {
				pythonPath = py
				return
			}
			pythonWhy += "\n    " + py + ": " + strings.TrimSpace(lastLine(string(out), err))
		}
	})
	if pythonPath == "" {
		t.Skipf("no python3 that imports grpc, google.protobuf and numpy (Debian: apt-get install python3-grpcio "+
			"python3-protobuf python3-numpy; or set MYPT_PYTHON):%s", pythonWhy)
	}
	return pythonPath
}

func lastLine(out string, err error) string {
	out = strings.TrimSpace(out)
	if out == "" {
		return err.Error()
	}
	return out[strings.LastIndex(out, "\n")+1:]
}

// plugin returns the launcher's absolute path and the environment that makes it use
// the interpreter python found.
func plugin(t *testing.T) (string, []string) {
	t.Helper()
	py := python(t)
	path, err := filepath.Abs(launcher)
	if err != nil {
		t.Fatal(err)
	}
	// go test caches a result by the files the test itself reads: read the plugin's
	// sources, so that editing them reruns the test.
	stubs, _ := filepath.Glob("gen/*.py")
	for _, f := range append([]string{launcher, "mypt_backend_example.py"}, stubs...) {
		if _, err := os.ReadFile(f); err != nil {
			t.Fatal(err)
		}
	}
	return path, []string{"MYPT_PYTHON=" + py}
}

var (
	f32Evaluate = regexp.MustCompile(`^numerics/f32/[^/]+/(logits|loss)$`)
	// evaluateSemantics are the loss-mask and packing checks, which Evaluate alone can
	// pass (those needing training skip), and the robustness checks.
	evaluateSemantics = regexp.MustCompile(`^(lossmask/f32|packing/f32|robustness)/`)
)

// keep selects the checks of the core profile's calls: the protocol checks, the F32
// numerics of Evaluate (logits and loss of every golden case), loss masks, packed
// segments and robustness.
func keep(name string) bool {
	return strings.HasPrefix(name, "protocol/") || f32Evaluate.MatchString(name) || evaluateSemantics.MatchString(name)
}

// TestConformance certifies the Python backend with the conformance suite. Checks of
// features it does not declare (training, the KV cache) skip themselves.
func TestConformance(t *testing.T) {
	path, env := plugin(t)
	conformance.Run(t, path, conformance.Options{Filter: keep, Env: env})
}

// logRecorder keeps every line the host logs about the plugin: go-plugin's own
// messages and the plugin's stderr lines.
type logRecorder struct {
	mu    sync.Mutex
	lines []string
}

func (r *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *logRecorder) WithAttrs([]slog.Attr) slog.Handler       { return r }
func (r *logRecorder) WithGroup(string) slog.Handler            { return r }

func (r *logRecorder) Handle(_ context.Context, rec slog.Record) error {
	line := rec.Level.String() + " " + rec.Message
	rec.Attrs(func(a slog.Attr) bool {
		line += " " + a.String()
		return true
	})
	r.mu.Lock()
	r.lines = append(r.lines, line)
	r.mu.Unlock()
	return nil
}

func (r *logRecorder) find(sub string) (string, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, l := range r.lines {
		if strings.Contains(l, sub) {
			return l, true
		}
	}
	return "", false
}

// largeSpec is a RoPE/RMSNorm/SwiGLU model whose tied embedding (40000×64 float32,
// 10.2 MB) travels in three 4 MiB chunks.
func largeSpec() *pb.ModelSpec {
	cfg := config.Default()
	cfg.VocabSize, cfg.NEmbd, cfg.NHead, cfg.NLayer, cfg.BlockSize = 40000, 64, 2, 1, 16
	cfg.PosEncoding, cfg.MLPType, cfg.NormType = "rope", "swiglu", "rmsnorm"
	cfg.Bias, cfg.TieWeights, cfg.Dropout = false, true, 0
	return model.NewSpec(cfg).Proto()
}

// randomParams fills every parameter with small normal values and, with specials,
// awkward ones (signed zero, subnormals, extremes) that a round trip must keep bit for bit.
func randomParams(spec *pb.ModelSpec, specials bool) *sdk.TensorList {
	rng := rand.New(rand.NewPCG(7, 11))
	special := []float32{float32(math.Copysign(0, -1)), math.Float32frombits(1), 1e-40, -3.4e38, 3.4e38}
	var ts []*sdk.Tensor
	for _, p := range spec.Params {
		n := 1
		for _, d := range p.Shape {
			n *= int(d)
		}
		v := make([]float32, n)
		for i := range v {
			v[i] = float32(0.02 * rng.NormFloat64())
		}
		for i, x := range special {
			if specials {
				v[(i*7919)%n] = x
			}
		}
		ts = append(ts, sdk.F32Tensor(p.Name, pb.TensorRole_TENSOR_ROLE_PARAM, slices.Clone(p.Shape), v))
	}
	return sdk.NewTensorList(5, ts...)
}

// wantCode checks that err carries code and a status message starting with prefix.
func wantCode(t *testing.T, what string, err error, code codes.Code, prefix string) {
	t.Helper()
	var se interface{ GRPCStatus() *status.Status }
	switch {
	case err == nil:
		t.Errorf("%s: succeeded, want %v", what, code)
	case !errors.As(err, &se) || se.GRPCStatus().Code() != code:
		t.Errorf("%s: %v, want %v", what, err, code)
	case !strings.HasPrefix(se.GRPCStatus().Message(), prefix):
		t.Errorf("%s: message %q does not start with %q", what, se.GRPCStatus().Message(), prefix)
	}
}

// TestStartAndClose starts the plugin as the host does, streams a multi-chunk state
// in and out, evaluates with logit_positions, and checks that Close ends the process
// cleanly (through go-plugin's GRPCController) and leaves nothing behind.
func TestStartAndClose(t *testing.T) {
	path, env := plugin(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rec := &logRecorder{}
	c, err := sdk.Start(ctx, path, sdk.StartOptions{Logger: slog.New(rec), Env: env, CallTimeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	defer func() {
		if !closed {
			c.Kill()
		}
	}()
	pid := c.Pid()

	info, err := c.GetInfo(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if info.Name != "pyexample" || info.ProtocolVersion != sdk.ProtocolVersion {
		t.Errorf("GetInfo: name %q, protocol_version %d", info.Name, info.ProtocolVersion)
	}
	for _, f := range []pb.Feature{pb.Feature_FEATURE_TRAINING, pb.Feature_FEATURE_KV_CACHE} {
		if slices.Contains(info.Capabilities.Features, f) {
			t.Errorf("GetInfo declares %v, which the example does not implement", f)
		}
	}

	spec := largeSpec()
	if _, err := c.Configure(ctx, &pb.ConfigureRequest{Model: spec,
		Optimizer: &pb.OptimizerSpec{Beta1: 0.9, Beta2: 0.95, Eps: 1e-8}}); err != nil {
		t.Fatal(err)
	}
	want := randomParams(spec, true)
	resp, err := c.SetState(ctx, want)
	if err != nil {
		t.Fatal(err)
	}
	if int(resp.TensorsReceived) != len(want.Tensors) {
		t.Errorf("SetState: tensors_received %d, want %d", resp.TensorsReceived, len(want.Tensors))
	}
	got := &sdk.StateCollector{}
	if err := c.GetState(ctx, &pb.GetStateRequest{Roles: []pb.TensorRole{pb.TensorRole_TENSOR_ROLE_PARAM}}, got); err != nil {
		t.Fatal(err)
	}
	if got.Head.GetOptimizerSteps() != 5 || len(got.Tensors) != len(want.Tensors) {
		t.Errorf("GetState: optimizer_steps %d and %d tensors, want 5 and %d", got.Head.GetOptimizerSteps(), len(got.Tensors), len(want.Tensors))
	}
	for i, w := range want.Tensors {
		if i < len(got.Tensors) && (got.Tensors[i].Name != w.Name || string(got.Tensors[i].Data) != string(w.Data)) {
			t.Errorf("GetState tensor %d: %s differs from the %s sent", i, got.Tensors[i].Name, w.Name)
		}
	}

	// This backend keeps parameters only: GetState without roles sends them alone.
	var params sdk.StateCollector
	if err := c.GetState(ctx, &pb.GetStateRequest{}, &params); err != nil || len(params.Tensors) != len(want.Tensors) {
		t.Errorf("GetState without roles: %d tensors (%v), want the %d parameters", len(params.Tensors), err, len(want.Tensors))
	}
	moments := sdk.NewTensorList(0, sdk.F32Tensor(spec.Params[1].Name, pb.TensorRole_TENSOR_ROLE_ADAM_M,
		spec.Params[1].Shape, make([]float32, len(want.Tensors[1].Data)/4)))
	_, err = c.SetState(ctx, moments)
	wantCode(t, "SetState of an AdamW moment", err, codes.InvalidArgument, "tensor["+spec.Params[1].Name+"].role: ")

	// logit_positions returns the requested rows of the full logits, in order.
	if _, err := c.SetState(ctx, randomParams(spec, false)); err != nil {
		t.Fatal(err)
	}
	const T, V = 8, 40000
	batch := &pb.Batch{BatchSize: 1, SeqLen: T, Tokens: []int32{1, 5, 39999, 7, 7, 2, 0, 12},
		Targets: make([]int32, T), LossWeights: make([]float32, T)}
	all, err := c.Evaluate(ctx, &pb.EvaluateRequest{Batch: batch, ReturnLogits: true})
	if err != nil {
		t.Fatal(err)
	}
	for i, x := range all.Logits {
		if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
			t.Fatalf("Evaluate: logit %d is %v", i, x)
		}
	}
	again, err := c.Evaluate(ctx, &pb.EvaluateRequest{Batch: batch, ReturnLogits: true})
	if err != nil {
		t.Fatal(err)
	}
	if again.LossSum != all.LossSum || !slices.Equal(again.Logits, all.Logits) {
		t.Errorf("two Evaluate calls of the same batch differ (the backend declares FEATURE_DETERMINISTIC)")
	}
	rows := []uint32{6, 2}
	some, err := c.Evaluate(ctx, &pb.EvaluateRequest{Batch: batch, ReturnLogits: true, LogitPositions: rows})
	if err != nil {
		t.Fatal(err)
	}
	if len(all.Logits) != T*V || len(some.Logits) != len(rows)*V {
		t.Fatalf("Evaluate: %d and %d logits, want %d and %d", len(all.Logits), len(some.Logits), T*V, len(rows)*V)
	}
	for i, r := range rows {
		if !slices.Equal(some.Logits[i*V:(i+1)*V], all.Logits[int(r)*V:int(r+1)*V]) {
			t.Errorf("logit_positions[%d] = %d: not row %d of the full logits", i, r, r)
		}
	}
	_, err = c.Evaluate(ctx, &pb.EvaluateRequest{Batch: batch, ReturnLogits: true, LogitPositions: []uint32{0, T}})
	wantCode(t, "Evaluate with a logit position past B·T", err, codes.InvalidArgument, "logit_positions[1]: ")

	if l, ok := rec.find("serving on 127.0.0.1:"); !ok || !strings.HasPrefix(l, "DEBUG") {
		t.Errorf("the plugin's hclog line did not reach the host's log at DEBUG (got %q)", l)
	}

	// Close: the backend's Shutdown, then go-plugin's GRPCController.Shutdown; the
	// process must exit by itself (status 0), be reaped, and leave no process behind.
	closed = true
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if !c.Exited() {
		t.Errorf("the plugin process is still running after Close")
	}
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("process %d still exists after Close (kill -0: %v)", pid, err)
	}
	if l, ok := rec.find("failed to exit gracefully"); ok {
		t.Errorf("Close had to kill the plugin: %s", l)
	}
	if l, ok := rec.find("plugin process exited"); !ok || strings.Contains(l, "error=") {
		t.Errorf("the plugin did not exit with status 0: %q", l)
	}
}

// TestRunByHand: without the host's magic cookie the plugin explains itself and exits 1.
func TestRunByHand(t *testing.T) {
	path, env := plugin(t)
	cmd := exec.Command(path)
	cmd.Env = append(slices.DeleteFunc(os.Environ(), func(e string) bool {
		return strings.HasPrefix(e, "MYPT_BACKEND_PLUGIN=")
	}), env...)
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 {
		t.Fatalf("run by hand: %v, want exit status 1\n%s", err, out)
	}
	if !strings.Contains(string(out), "is a mypt backend plugin") {
		t.Errorf("run by hand: %q does not explain what the program is", out)
	}
}

package sdk_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/mypt/mypt/sdk"
	"github.com/mypt/mypt/sdk/examples/bigram"
	pb "github.com/mypt/mypt/sdk/proto/backendv1"
)

// testPlugin is the path of the fault-injecting plugin binary built once for
// this test binary.
var testPlugin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "mypt-sdk-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	testPlugin = filepath.Join(dir, "mypt-backend-testplugin")
	build := exec.Command("go", "build", "-o", testPlugin, "github.com/mypt/mypt/sdk/internal/testplugin")
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build test plugin:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// logRecorder is a slog handler that keeps records for assertions.
type logRecorder struct {
	mu      sync.Mutex
	records []slog.Record
}

func (r *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *logRecorder) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.records = append(r.records, rec)
	return nil
}
func (r *logRecorder) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *logRecorder) WithGroup(string) slog.Handler      { return r }

func (r *logRecorder) find(level slog.Level, substr string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, rec := range r.records {
		if rec.Level == level && strings.Contains(rec.Message, substr) {
			return true
		}
	}
	return false
}

func startPlugin(t *testing.T, fault string, opts sdk.StartOptions) *sdk.Client {
	t.Helper()
	opts.Env = append(opts.Env, "MYPT_TESTPLUGIN_FAULT="+fault)
	c, err := sdk.Start(context.Background(), testPlugin, opts)
	if err != nil {
		t.Fatalf("start plugin: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func bigramConfig(v int) *pb.ConfigureRequest {
	return &pb.ConfigureRequest{
		Model: &pb.ModelSpec{
			VocabSize: uint32(v), BlockSize: 16,
			Params: []*pb.ParamSpec{{Name: bigram.WeightName, Shape: []int64{int64(v), int64(v)}, Dtype: pb.DType_DTYPE_F32, WeightDecay: true}},
		},
		Optimizer: &pb.OptimizerSpec{Beta1: 0.9, Beta2: 0.95, Eps: 1e-8},
		Seed:      1,
	}
}

func wantCode(t *testing.T, err error, code codes.Code, substr string) {
	t.Helper()
	if got := sdk.Code(err); got != code {
		t.Fatalf("error = %v (code %v), want code %v", err, got, code)
	}
	if !strings.Contains(err.Error(), substr) {
		t.Fatalf("error %q does not mention %q", err, substr)
	}
}

// TestEveryRPC drives every call of the protocol through a real plugin
// process and checks results against values computed by hand: with zero
// weights every next-token distribution is uniform, so the loss is ln V per
// weighted token and the gradient of row x is w·(1/V − onehot(target)).
func TestEveryRPC(t *testing.T) {
	ctx := context.Background()
	rec := &logRecorder{}
	c := startPlugin(t, "", sdk.StartOptions{Logger: slog.New(rec)})

	info, err := c.GetInfo(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if info.GetName() != "bigram" || info.GetProtocolVersion() != sdk.ProtocolVersion || len(info.GetDevices()) == 0 {
		t.Fatalf("GetInfo = %v", info)
	}

	batch := &pb.Batch{BatchSize: 1, SeqLen: 4, Tokens: []int32{1, 2, 3, 1}, Targets: []int32{2, 3, 1, 0}, LossWeights: []float32{1, 0, 2, 0.5}}
	_, err = c.ForwardBackward(ctx, &pb.ForwardBackwardRequest{Batch: batch, GradScale: 1})
	wantCode(t, err, codes.FailedPrecondition, "Configure")

	bad := bigramConfig(8)
	bad.Precision = &pb.Precision{ComputeDtype: pb.DType_DTYPE_BF16}
	_, err = c.Configure(ctx, bad)
	wantCode(t, err, codes.Unimplemented, "DTYPE_BF16")
	bad = bigramConfig(8)
	bad.Model.Params[0].Shape = []int64{8, 7}
	_, err = c.Configure(ctx, bad)
	wantCode(t, err, codes.InvalidArgument, "model.params[0].shape")

	const v = 8
	if _, err := c.Configure(ctx, bigramConfig(v)); err != nil {
		t.Fatal(err)
	}
	ln := math.Log(v)
	fb, err := c.ForwardBackward(ctx, &pb.ForwardBackwardRequest{Batch: batch, GradScale: 0.5})
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(fb.GetLossSum()-3.5*ln) > 1e-5 || fb.GetWeightSum() != 3.5 || fb.GetTokens() != 4 {
		t.Fatalf("ForwardBackward = %v, want loss_sum %v, weight_sum 3.5", fb, 3.5*ln)
	}

	bad2 := &pb.Batch{BatchSize: 1, SeqLen: 4, Tokens: []int32{1, 2, 3, v}, Targets: []int32{2, 3, 1, 0}, LossWeights: []float32{1, 0, 2, 0.5}}
	_, err = c.ForwardBackward(ctx, &pb.ForwardBackwardRequest{Batch: bad2, GradScale: 1})
	wantCode(t, err, codes.InvalidArgument, "batch.tokens[3]")

	var grads sdk.StateCollector
	if err := c.GetState(ctx, &pb.GetStateRequest{Roles: []pb.TensorRole{pb.TensorRole_TENSOR_ROLE_GRAD}}, &grads); err != nil {
		t.Fatal(err)
	}
	g, _ := sdk.F32Values(grads.Tensors[0].Data)
	want := make([]float64, v*v)
	for i, x := range batch.Tokens {
		w := 0.5 * float64(batch.LossWeights[i])
		for j := range v {
			d := 1.0 / v
			if j == int(batch.Targets[i]) {
				d--
			}
			want[int(x)*v+j] += w * d
		}
	}
	for i := range want {
		if math.Abs(float64(g[i])-want[i]) > 1e-6 {
			t.Fatalf("grad[%d] = %v, want %v", i, g[i], want[i])
		}
	}

	// One AdamW step from zero moments moves each weight by about −lr·sign(g).
	const lr = 0.01
	step, err := c.OptimizerStep(ctx, &pb.OptimizerStepRequest{LearningRate: lr, WeightDecay: 0.1, ClipNorm: 1})
	if err != nil {
		t.Fatal(err)
	}
	var norm float64
	for _, x := range want {
		norm += x * x
	}
	if math.Abs(step.GetGradNorm()-math.Sqrt(norm)) > 1e-6 || step.GetOptimizerSteps() != 1 {
		t.Fatalf("OptimizerStep = %v, want grad_norm %v", step, math.Sqrt(norm))
	}
	var params sdk.StateCollector
	if err := c.GetState(ctx, &pb.GetStateRequest{Roles: []pb.TensorRole{pb.TensorRole_TENSOR_ROLE_PARAM}}, &params); err != nil {
		t.Fatal(err)
	}
	w, _ := sdk.F32Values(params.Tensors[0].Data)
	for i, gi := range want {
		exp := 0.0
		if gi != 0 {
			exp = -lr * math.Copysign(1, gi)
		}
		if math.Abs(float64(w[i])-exp) > 1e-5 {
			t.Fatalf("weight[%d] after one step = %v, want %v", i, w[i], exp)
		}
	}
	if params.Head.GetOptimizerSteps() != 1 {
		t.Fatalf("state header optimizer_steps = %d, want 1", params.Head.GetOptimizerSteps())
	}

	ev, err := c.Evaluate(ctx, &pb.EvaluateRequest{Batch: batch, ReturnLogits: true})
	if err != nil {
		t.Fatal(err)
	}
	// Row 1 was pushed up at targets 2 and 0 alike; the tie's argmax is 0, so
	// of the three weighted positions (1→2, 3→1, 1→0) two are correct.
	if ev.GetCounted() != 3 || len(ev.GetLogits()) != 4*v || ev.GetCorrect() != 2 {
		t.Fatalf("Evaluate = counted %d correct %d logits %d; want 3, 2, %d", ev.GetCounted(), ev.GetCorrect(), len(ev.GetLogits()), 4*v)
	}
	if ev.GetLossSum() >= fb.GetLossSum() {
		t.Fatalf("loss did not drop after a step: %v → %v", fb.GetLossSum(), ev.GetLossSum())
	}

	pre, err := c.Prefill(ctx, &pb.PrefillRequest{Tokens: []int32{1, 2}, Capacity: 3})
	if err != nil {
		t.Fatal(err)
	}
	if pre.GetCacheHandle() == 0 || len(pre.GetLogits()) != v || pre.GetLogits()[3] != w[2*v+3] {
		t.Fatalf("Prefill = %v", pre)
	}
	dec, err := c.Decode(ctx, &pb.DecodeRequest{CacheHandle: pre.GetCacheHandle(), Token: 3})
	if err != nil {
		t.Fatal(err)
	}
	if dec.GetLength() != 3 || dec.GetLogits()[1] != w[3*v+1] {
		t.Fatalf("Decode = %v", dec)
	}
	_, err = c.Decode(ctx, &pb.DecodeRequest{CacheHandle: pre.GetCacheHandle(), Token: 1})
	wantCode(t, err, codes.FailedPrecondition, "full")
	if _, err := c.ReleaseCache(ctx, &pb.ReleaseCacheRequest{CacheHandle: pre.GetCacheHandle()}); err != nil {
		t.Fatal(err)
	}
	_, err = c.Decode(ctx, &pb.DecodeRequest{CacheHandle: pre.GetCacheHandle(), Token: 1})
	wantCode(t, err, codes.NotFound, "unknown or released")

	if err := c.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	_, err = c.Evaluate(ctx, &pb.EvaluateRequest{Batch: batch})
	wantCode(t, err, codes.FailedPrecondition, "Configure")
	// A fresh session on the same process after Shutdown works.
	if _, err := c.Configure(ctx, bigramConfig(v)); err != nil {
		t.Fatalf("Configure after Shutdown: %v", err)
	}
}

// TestLargeStateRoundTrip streams more than 64 MiB per tensor through the
// plugin (chunked at 4 MiB) and checks every bit comes back.
func TestLargeStateRoundTrip(t *testing.T) {
	ctx := context.Background()
	c := startPlugin(t, "", sdk.StartOptions{})
	const v = 4200 // 4200² float32 = 70.56 MB per tensor, 211 MB in all
	if _, err := c.Configure(ctx, bigramConfig(v)); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	shape := []int64{v, v}
	var sent []*sdk.Tensor
	for _, role := range []pb.TensorRole{pb.TensorRole_TENSOR_ROLE_PARAM, pb.TensorRole_TENSOR_ROLE_ADAM_M, pb.TensorRole_TENSOR_ROLE_ADAM_V} {
		data := make([]byte, v*v*4)
		for i := range data {
			data[i] = byte(rng.Uint32())
		}
		// Keep NaN payloads and signed zeros out of doubt: any bit pattern must survive.
		sent = append(sent, &sdk.Tensor{Name: bigram.WeightName, Role: role, Shape: shape, DType: pb.DType_DTYPE_F32, Data: data})
	}
	resp, err := c.SetState(ctx, sdk.NewTensorList(7, sent...))
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetTensorsReceived() != 3 {
		t.Fatalf("tensors_received = %d, want 3", resp.GetTensorsReceived())
	}
	var got sdk.StateCollector
	if err := c.GetState(ctx, &pb.GetStateRequest{}, &got); err != nil {
		t.Fatal(err)
	}
	if got.Head.GetOptimizerSteps() != 7 || len(got.Tensors) != 3 {
		t.Fatalf("GetState header %v with %d tensors", got.Head, len(got.Tensors))
	}
	for i, tn := range got.Tensors {
		if tn.Role != sent[i].Role || !bytes.Equal(tn.Data, sent[i].Data) {
			t.Fatalf("tensor %d (%v) came back different", i, tn.Role)
		}
	}
}

// TestBadStateNamesTensor checks a mismatching tensor is refused by name.
func TestBadStateNamesTensor(t *testing.T) {
	ctx := context.Background()
	c := startPlugin(t, "", sdk.StartOptions{})
	if _, err := c.Configure(ctx, bigramConfig(4)); err != nil {
		t.Fatal(err)
	}
	_, err := c.SetState(ctx, sdk.NewTensorList(0, sdk.F32Tensor("lm_head.weight", pb.TensorRole_TENSOR_ROLE_PARAM, []int64{4, 4}, make([]float32, 16))))
	wantCode(t, err, codes.InvalidArgument, `"lm_head.weight"`)
	_, err = c.SetState(ctx, sdk.NewTensorList(0, sdk.F32Tensor(bigram.WeightName, pb.TensorRole_TENSOR_ROLE_PARAM, []int64{4, 5}, make([]float32, 20))))
	wantCode(t, err, codes.InvalidArgument, "want [4 4]")
}

func assertReaped(t *testing.T, pid int) {
	t.Helper()
	// The host must have waited for the child: no /proc entry, in
	// particular no zombie ("Z") one.
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if errors.Is(err, os.ErrNotExist) {
			return
		}
		if err == nil && !strings.Contains(string(st), ") Z ") {
			// still running; wait
		}
		time.Sleep(20 * time.Millisecond)
	}
	st, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	t.Fatalf("plugin process %d was not reaped: %s", pid, st)
}

func TestPluginCrashMidCall(t *testing.T) {
	ctx := context.Background()
	rec := &logRecorder{}
	c := startPlugin(t, "crash-in-forward", sdk.StartOptions{Logger: slog.New(rec)})
	if _, err := c.Configure(ctx, bigramConfig(4)); err != nil {
		t.Fatal(err)
	}
	pid := c.Pid()
	_, err := c.ForwardBackward(ctx, &pb.ForwardBackwardRequest{Batch: &pb.Batch{BatchSize: 1, SeqLen: 1, Tokens: []int32{1}, Targets: []int32{2}, LossWeights: []float32{1}}})
	if !errors.Is(err, sdk.ErrPluginExited) {
		t.Fatalf("error = %v, want ErrPluginExited", err)
	}
	for _, s := range []string{"mypt-backend-testplugin", "ForwardBackward", "exit status 3", "simulated crash"} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q does not mention %q", err, s)
		}
	}
	if !rec.find(slog.LevelError, "simulated crash") {
		t.Error("the plugin's error log line did not reach the host logger at error level")
	}
	assertReaped(t, pid)
}

func TestPluginKilledMidCall(t *testing.T) {
	ctx := context.Background()
	c := startPlugin(t, "hang-in-forward", sdk.StartOptions{})
	if _, err := c.Configure(ctx, bigramConfig(4)); err != nil {
		t.Fatal(err)
	}
	pid := c.Pid()
	errc := make(chan error, 1)
	go func() {
		_, err := c.ForwardBackward(ctx, &pb.ForwardBackwardRequest{Batch: &pb.Batch{BatchSize: 1, SeqLen: 1, Tokens: []int32{1}, Targets: []int32{2}, LossWeights: []float32{1}}})
		errc <- err
	}()
	time.Sleep(300 * time.Millisecond)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		if !errors.Is(err, sdk.ErrPluginExited) || !strings.Contains(err.Error(), "signal: killed") ||
			!strings.Contains(err.Error(), "mypt-backend-testplugin") {
			t.Fatalf("error = %v, want the plugin's name, ErrPluginExited and 'signal: killed'", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("ForwardBackward did not return after the plugin was killed")
	}
	assertReaped(t, pid)
}

func TestHungPluginTimesOut(t *testing.T) {
	ctx := context.Background()
	c := startPlugin(t, "hang-in-forward", sdk.StartOptions{CallTimeout: 300 * time.Millisecond})
	if _, err := c.Configure(ctx, bigramConfig(4)); err != nil {
		t.Fatal(err)
	}
	pid := c.Pid()
	_, err := c.ForwardBackward(ctx, &pb.ForwardBackwardRequest{Batch: &pb.Batch{BatchSize: 1, SeqLen: 1, Tokens: []int32{1}, Targets: []int32{2}, LossWeights: []float32{1}}})
	if err == nil || !strings.Contains(err.Error(), "did not answer ForwardBackward within 300ms") || sdk.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("error = %v, want a hung-plugin report", err)
	}
	c.Kill()
	assertReaped(t, pid)
}

func TestWrongProtocolVersionRefused(t *testing.T) {
	_, err := sdk.Start(context.Background(), testPlugin, sdk.StartOptions{Env: []string{"MYPT_TESTPLUGIN_FAULT=protocol-99"}})
	if err == nil {
		t.Fatal("a plugin speaking protocol 99 was accepted")
	}
	for _, s := range []string{"another protocol version", "v1", "99", testPlugin} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q does not mention %q", err, s)
		}
	}
}

func TestNotAPlugin(t *testing.T) {
	script := filepath.Join(t.TempDir(), "mypt-backend-fake")
	if err := os.WriteFile(script, []byte("#!/bin/sh\necho 'I am not a plugin' >&2\nexit 4\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	_, err := sdk.Start(context.Background(), script, sdk.StartOptions{StartTimeout: 5 * time.Second})
	if err == nil || !strings.Contains(err.Error(), script) {
		t.Fatalf("error = %v, want a start failure naming %s", err, script)
	}
}

package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// binaries builds mypt, the CPU plugin and the example GPT plugin side by side, once per
// test binary.
var binaries = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "mypt-e2e-bin")
	if err != nil {
		return "", err
	}
	for pkg, name := range map[string]string{
		"github.com/mypt/mypt/cmd/mypt":                              "mypt",
		"github.com/mypt/mypt/cmd/mypt-backend-cpu":                  "mypt-backend-cpu",
		"github.com/mypt/mypt/sdk/examples/gpt/cmd/mypt-backend-gpt": "mypt-backend-gpt",
	} {
		if out, err := exec.Command("go", "build", "-o", filepath.Join(dir, name), pkg).CombinedOutput(); err != nil {
			return "", fmt.Errorf("build %s: %v\n%s", pkg, err, out)
		}
	}
	return dir, nil
})

func myptCmd(t *testing.T, args ...string) *exec.Cmd {
	t.Helper()
	dir, err := binaries()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(dir, "mypt"), args...)
	cmd.Env = append(os.Environ(), "MYPT_LOG_LEVEL=warn")
	return cmd
}

func runMypt(t *testing.T, args ...string) string {
	t.Helper()
	out, err := myptCmd(t, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("mypt %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// tinyConfig is a small LLaMA-style chat model with dropout on, so exact
// resume also covers the dropout masks.
const tinyConfig = `{
  "batch_size": 4, "block_size": 48, "vocab_size": 50304, "n_embd": 32, "n_head": 2, "n_layer": 1,
  "dropout": 0.1, "bias": false, "tie_weights": true, "pos_encoding": "rope", "mlp_type": "swiglu",
  "norm_type": "rmsnorm", "use_loss_mask": true, "episode_min_tokens": 4, "epoch_seed": 3301,
  "learning_rate": 3e-3, "max_iters": 24, "eval_interval": 8, "eval_iters": 2, "save_every": 4,
  "warmup_iters": 4, "weight_decay": 0.05
}`

func prepareTiny(t *testing.T) (data, cfg string) {
	t.Helper()
	root := t.TempDir()
	data, cfg = filepath.Join(root, "data"), filepath.Join(root, "tiny.json")
	if err := os.WriteFile(cfg, []byte(tinyConfig), 0o644); err != nil {
		t.Fatal(err)
	}
	runMypt(t, "prepare", "--input", "../../configs/data/chat_demo.jsonl", "--output", data,
		"--tokenization", "gpt2", "--val_split", "0.1")
	return data, cfg
}

type metric struct {
	Event   string   `json:"event"`
	Step    int      `json:"step"`
	Loss    *float64 `json:"loss"`
	ValLoss *float64 `json:"val_loss"`
}

// readMetrics decodes every line of a metrics.jsonl file into an M.
func readMetrics[M any](t *testing.T, path string) []M {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []M
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var m M
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		out = append(out, m)
	}
	return out
}

// TestEndToEnd runs the seed's workflow through the real binaries: prepare,
// train a few steps on the CPU plugin, stop, resume with the same command,
// and generate from the result.
func TestEndToEnd(t *testing.T) {
	data, cfg := prepareTiny(t)
	run := filepath.Join(t.TempDir(), "run")
	out := runMypt(t, "train", "--config", cfg, "--dataset", data, "--output", run, "--stop-after", "10", "--no-progress")
	if !strings.Contains(out, "steps 0..10") || !strings.Contains(out, "stop requested") {
		t.Fatalf("first leg: %s", out)
	}
	out = runMypt(t, "train", "--config", cfg, "--dataset", data, "--output", run, "--no-progress")
	if !strings.Contains(out, "steps 10..24") {
		t.Fatalf("resumed leg: %s", out)
	}
	ms := readMetrics[metric](t, filepath.Join(run, "metrics.jsonl"))
	steps := map[int]bool{}
	var first, last float64
	for _, m := range ms {
		if m.Event == "step" {
			if steps[m.Step] {
				t.Fatalf("step %d logged twice", m.Step)
			}
			steps[m.Step] = true
			if m.Step == 1 {
				first = *m.Loss
			}
			last = *m.Loss
		}
	}
	if len(steps) != 24 || !(last < first) {
		t.Fatalf("%d steps logged, loss %.3f → %.3f", len(steps), first, last)
	}
	// A new run initialised from the trained one (--model BASE) starts with
	// its weights: its step-0 val loss is the base's final val loss.
	var baseFinal float64
	for _, m := range ms {
		if m.Event == "eval" && m.Step == 24 {
			baseFinal = *m.ValLoss
		}
	}
	tuned := filepath.Join(t.TempDir(), "tuned")
	runMypt(t, "train", "--config", cfg, "--dataset", data, "--output", tuned, "--model", filepath.Join(run, "latest"),
		"--max_iters", "2", "--no-progress")
	for _, m := range readMetrics[metric](t, filepath.Join(tuned, "metrics.jsonl")) {
		if m.Event == "eval" && m.Step == 0 && *m.ValLoss != baseFinal {
			t.Fatalf("run from --model starts at val loss %v, want the base's final %v", *m.ValLoss, baseFinal)
		}
	}

	gen := runMypt(t, "generate", "--model", run, "--chat", "--user", "Hello!", "--preset", "deterministic", "--max_new_tokens", "8")
	if !strings.HasPrefix(gen, "<myPT_system>You are MyPT.</myPT_system><myPT_user>Hello!</myPT_user><myPT_assistant>") ||
		len(strings.TrimSpace(gen)) <= len("<myPT_system>You are MyPT.</myPT_system><myPT_user>Hello!</myPT_user><myPT_assistant>") {
		t.Fatalf("generate printed %q", gen)
	}
}

// TestKillResumeIsExact kills a training run with SIGKILL mid-way, restarts
// it with the same command and requires the same per-step losses and val
// losses as an uninterrupted run.
func TestKillResumeIsExact(t *testing.T) {
	data, cfg := prepareTiny(t)
	ref := filepath.Join(t.TempDir(), "ref")
	runMypt(t, "train", "--config", cfg, "--dataset", data, "--output", ref, "--no-progress")
	want := lossesByStep(readMetrics[metric](t, filepath.Join(ref, "metrics.jsonl")))

	run := filepath.Join(t.TempDir(), "killed")
	cmd := myptCmd(t, "train", "--config", cfg, "--dataset", data, "--output", run, "--no-progress")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Kill between checkpoints: after step 14 is logged (checkpoints every 4 steps).
	deadline := time.Now().Add(60 * time.Second)
	for {
		b, _ := os.ReadFile(filepath.Join(run, "metrics.jsonl"))
		if bytes.Contains(b, []byte(`"step":14,`)) || bytes.Contains(b, []byte(`"step":14}`)) {
			break
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			t.Fatal("the run never reached step 14")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	runMypt(t, "train", "--config", cfg, "--dataset", data, "--output", run, "--no-progress")
	got := lossesByStep(readMetrics[metric](t, filepath.Join(run, "metrics.jsonl")))
	if len(got) != len(want) {
		t.Fatalf("resumed run logged %d entries, uninterrupted %d", len(got), len(want))
	}
	for k, w := range want {
		if got[k] != w {
			t.Errorf("%s: resumed %v, uninterrupted %v", k, got[k], w)
		}
	}
}

func lossesByStep(ms []metric) map[string]float64 {
	out := map[string]float64{}
	for _, m := range ms {
		switch m.Event {
		case "step":
			out[fmt.Sprintf("step %d loss", m.Step)] = *m.Loss
		case "eval":
			out[fmt.Sprintf("eval %d val_loss", m.Step)] = *m.ValLoss
		}
	}
	return out
}

func TestBadInputErrors(t *testing.T) {
	data, cfg := prepareTiny(t)
	bad := filepath.Join(t.TempDir(), "bad.json")
	os.WriteFile(bad, []byte(`{"n_embd": 32, "learnin_rate": 1e-3}`), 0o644)
	out, err := myptCmd(t, "train", "--config", bad, "--dataset", data, "--output", t.TempDir()).CombinedOutput()
	if err == nil || !strings.Contains(string(out), `unknown key "learnin_rate" (did you mean "learning_rate"?)`) {
		t.Fatalf("bad config: %v\n%s", err, out)
	}

	// A config the backend refuses at Configure: the example GPT backend declares no
	// dropout, and tinyConfig has dropout 0.1. The user reads the backend's reason, not
	// gRPC's wording, and no run directory is left.
	refusedRun := filepath.Join(t.TempDir(), "refused")
	out, err = myptCmd(t, "train", "--config", cfg, "--dataset", data, "--output", refusedRun, "--backend", "gpt", "--no-progress").CombinedOutput()
	const refusal = "mypt: configure backend: backend mypt-backend-gpt: Configure: Unimplemented: model.dropout > 0 (FEATURE_DROPOUT) is not implemented by this backend\n"
	if err == nil || !strings.HasSuffix(string(out), refusal) {
		t.Fatalf("config refused at Configure: %v\n%s\nwant the last line %q", err, out, refusal)
	}
	if _, err := os.Stat(refusedRun); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a run refused at Configure left %s behind (stat: %v)", refusedRun, err)
	}

	// A checkpoint from one model, resumed with another: the error names the tensor.
	run := filepath.Join(t.TempDir(), "run")
	runMypt(t, "train", "--config", cfg, "--dataset", data, "--output", run, "--stop-after", "1", "--no-progress")
	wider := strings.Replace(tinyConfig, `"n_embd": 32`, `"n_embd": 64`, 1)
	widerCfg := filepath.Join(t.TempDir(), "wider.json")
	os.WriteFile(widerCfg, []byte(wider), 0o644)
	out, err = myptCmd(t, "train", "--config", widerCfg, "--dataset", data, "--output", run).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "token_embedding_table.weight") || !strings.Contains(string(out), "[50304 64]") {
		t.Fatalf("mismatching checkpoint: %v\n%s", err, out)
	}

	// A corrupted checkpoint is refused, not loaded.
	st := filepath.Join(run, "latest", "model.safetensors")
	b, err := os.ReadFile(st)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)-3] ^= 0xff
	os.WriteFile(st, b, 0o644)
	out, err = myptCmd(t, "generate", "--model", filepath.Join(run, "latest"), "--prompt", "x").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "is corrupt") {
		t.Fatalf("corrupted checkpoint: %v\n%s", err, out)
	}
}

// TestInterruptSavesAndExitsCleanly sends SIGINT mid-run: the run finishes
// its step, saves, exits 0, and the same command resumes from there.
func TestInterruptSavesAndExitsCleanly(t *testing.T) {
	data, cfg := prepareTiny(t)
	run := filepath.Join(t.TempDir(), "run")
	cmd := myptCmd(t, "train", "--config", cfg, "--dataset", data, "--output", run, "--no-progress")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		b, _ := os.ReadFile(filepath.Join(run, "metrics.jsonl"))
		if bytes.Contains(b, []byte(`"step":6,`)) {
			break
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			t.Fatal("the run never reached step 6")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("interrupted run exited with %v:\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "(interrupted)") {
		t.Fatalf("no interrupted summary:\n%s", out.String())
	}
	var saved struct{ Step int }
	b, err := os.ReadFile(filepath.Join(run, "latest", "training_state.json"))
	if err != nil {
		t.Fatal(err)
	}
	json.Unmarshal(b, &saved)
	if saved.Step < 6 || saved.Step >= 24 {
		t.Fatalf("saved at step %d, want the step the interrupt came at (≥ 6)", saved.Step)
	}
	res := runMypt(t, "train", "--config", cfg, "--dataset", data, "--output", run, "--no-progress")
	if !strings.Contains(res, fmt.Sprintf("steps %d..24", saved.Step)) {
		t.Fatalf("resume after interrupt: %s", res)
	}
}

// TestEvalDatasetDir: MyPT's --eval_dataset_dir DIR is the eval set
// "general" (a relative DIR is relative to the working directory), logged as
// eval_general in metrics.jsonl and on the eval log line; a directory that
// is not a prepared dataset stops the run at start, naming the set.
func TestEvalDatasetDir(t *testing.T) {
	data, cfg := prepareTiny(t)
	work := t.TempDir()
	runMypt(t, "prepare", "--input", "../../configs/data/chat_demo.jsonl", "--output", filepath.Join(work, "evaldata"),
		"--tokenization", "gpt2", "--val_split", "0.2", "--seed", "7")
	out, ok := myptIn(t, work, "train", "--config", cfg, "--dataset", data, "--output", "run", "--max_iters", "2",
		"--eval_dataset_dir", "evaldata", "--no-progress", "--log-level", "info")
	if !ok || !strings.Contains(out, "eval_general=") {
		t.Fatalf("train --eval_dataset_dir: %s", out)
	}
	var evals int
	for _, m := range readMetrics[map[string]any](t, filepath.Join(work, "run", "metrics.jsonl")) {
		if m["event"] != "eval" {
			continue
		}
		evals++
		if g, ok := m["eval_general"].(float64); !ok || !(g > 0) || g == m["val_loss"] {
			t.Errorf("eval at step %v: eval_general = %v (val_loss %v)", m["step"], m["eval_general"], m["val_loss"])
		}
	}
	if evals != 2 {
		t.Fatalf("%d eval events, want 2 (steps 0 and 2)", evals)
	}
	out, ok = myptIn(t, work, "train", "--config", cfg, "--dataset", data, "--output", "run2", "--max_iters", "2",
		"--eval_dataset_dir", "missing", "--no-progress")
	if ok || !strings.Contains(out, `eval set "general" (missing)`) {
		t.Fatalf("--eval_dataset_dir missing: ok=%v\n%s", ok, out)
	}
}

package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// myptIn runs mypt in dir and returns its combined output and whether it
// succeeded.
func myptIn(t *testing.T, dir string, args ...string) (string, bool) {
	t.Helper()
	cmd := myptCmd(t, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		if _, ok := err.(*exec.ExitError); !ok {
			t.Fatal(err)
		}
	}
	return string(out), err == nil
}

// TestMyPTCommandLines runs MyPT's own spellings (docs/MYPT_COMPAT.md):
// train.py's --model_name / --init_from_model NAME / --config_file /
// --dataset_dir, generate.py's --model_name / --mode / --show_info, and the
// advice for MyPT flags mypt does not take.
func TestMyPTCommandLines(t *testing.T) {
	data, cfg := prepareTiny(t)
	work := t.TempDir()

	// python train.py --model_name NAME --config_file C --dataset_dir D
	out, ok := myptIn(t, work, "train", "--model_name", "base", "--config_file", cfg, "--dataset_dir", data,
		"--max_iters", "2", "--no-progress")
	if !ok || !strings.Contains(out, "checkpoints/base/latest") {
		t.Fatalf("train --model_name: %s", out)
	}
	if _, err := os.Stat(filepath.Join(work, "checkpoints", "base", "latest", "manifest.json")); err != nil {
		t.Fatal(err)
	}
	// --init_from_model takes a bare name under checkpoints/, as in MyPT.
	out, ok = myptIn(t, work, "train", "--model_name", "sft", "--init_from_model", "base", "--config_file", cfg,
		"--dataset_dir", data, "--max_iters", "2", "--no-progress", "--log-level", "info")
	if !ok || !strings.Contains(out, "from=checkpoints/base/best") {
		t.Fatalf("train --init_from_model NAME: %s", out)
	}
	if out, ok := myptIn(t, work, "train", "--model_name", "x", "--output", "y", "--dataset", data); ok ||
		!strings.Contains(out, "not both") {
		t.Fatalf("--model_name with --output accepted: %s", out)
	}

	// python generate.py --model_name NAME --prompt P --mode qa --show_info
	out, ok = myptIn(t, work, "generate", "--model_name", "sft", "--prompt", "<myPT_user>Hi</myPT_user><myPT_assistant>",
		"--max_new_tokens", "2", "--mode", "qa", "--show_info")
	if !ok || !strings.Contains(out, "model checkpoints/sft/best: ") || !strings.Contains(out, "temperature 0.3, top_k 10") {
		t.Fatalf("generate --model_name --mode qa --show_info: %s", out)
	}
	if out, ok := myptIn(t, work, "generate", "--model", "sft", "--prompt", "x", "--mode", "poetry"); ok ||
		!strings.Contains(out, `--mode "poetry": want basic, qa, creative, factual or code`) {
		t.Fatalf("bad --mode: %s", out)
	}
	out, ok = myptIn(t, work, "chat", "--model_name", "sft")
	if !ok || !strings.Contains(out, "checkpoints/sft/best (context") {
		t.Fatalf("chat --model_name: %s", out)
	}

	// MyPT flags mypt does not take, and argparse abbreviations, get advice.
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"train", "--dataset", data, "--output", "r", "--n_embd", "64"}, "set n_embd in the --config JSON, or MYPT_N_EMBD=N"},
		{[]string{"train", "--dataset", data, "--output", "r", "--use_amp", "True"}, "--precision auto|fp32|bf16"},
		{[]string{"train", "--dataset", data, "--output", "r", "--terminal_log_file", "t.log"}, "| tee FILE"},
		{[]string{"train", "--dataset", data, "--output", "r", "--learn", "1"}, "did you mean --learning_rate?"},
		{[]string{"generate", "--model", "sft", "--force_fp16"}, "mypt export --dtype f16"},
		{[]string{"generate", "--model", "sft", "--legacy_checkpoint"}, "legacy single-file MyPT checkpoints"},
		{[]string{"prepare", "--input", "in.jsonl", "--out", "d"}, "did you mean one of --output, --output_dir?"},
		{[]string{"serve", "--debug"}, "--log-level debug"},
		{[]string{"serve"}, "MyPT's webapp lists ./checkpoints"},
	} {
		out, ok := myptIn(t, t.TempDir(), c.args...)
		if ok || !strings.Contains(out, c.want) {
			t.Errorf("mypt %s: ok=%v, want an error containing %q, got %s", strings.Join(c.args, " "), ok, c.want, out)
		}
	}

	// The README's prepare line passes a directory as --input.
	dir := filepath.Join(t.TempDir(), "goldset")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "gold.jsonl"), []byte("{}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, ok := myptIn(t, work, "prepare", "--input", dir, "--output", "p"); ok ||
		!strings.Contains(out, "give the JSONL file itself (as MyPT's prepare_chat_sft.py needs too): --input "+filepath.Join(dir, "gold.jsonl")) {
		t.Fatalf("prepare --input DIR: %s", out)
	}

	// A MyPT checkpoint directory as the run directory is refused.
	mp := filepath.Join(work, "checkpoints", "mypt750")
	if err := os.MkdirAll(mp, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"model.pt", "config.json"} {
		if err := os.WriteFile(filepath.Join(mp, f), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if out, ok := myptIn(t, work, "train", "--model_name", "mypt750", "--config", cfg, "--dataset", data); ok ||
		!strings.Contains(out, "mypt does not resume MyPT runs") {
		t.Fatalf("train into a MyPT checkpoint: %s", out)
	}
}

func TestWithHostPort(t *testing.T) {
	for _, c := range []struct {
		addr, host string
		port       int
		want       string
	}{
		{"127.0.0.1:8080", "", 0, "127.0.0.1:8080"},
		{"127.0.0.1:8080", "0.0.0.0", 8000, "0.0.0.0:8000"},
		{"127.0.0.1:8080", "", 8000, "127.0.0.1:8000"},
		{"127.0.0.1:8080", "::1", 0, "[::1]:8080"},
	} {
		got, err := withHostPort(c.addr, c.host, c.port)
		if err != nil || got != c.want {
			t.Errorf("withHostPort(%q, %q, %d) = %q, %v; want %q", c.addr, c.host, c.port, got, err, c.want)
		}
	}
	if _, err := withHostPort("127.0.0.1:8080", "", 70000); err == nil {
		t.Error("port 70000 accepted")
	}
}

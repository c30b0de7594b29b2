package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestEvalPromptsFile: MyPT's --eval_prompts_file generates every prompt at
// every eval with and without the KV cache (gen and gen_nocache in
// metrics.jsonl's eval events, equal on the CPU backend, so no CACHE
// MISMATCH) with a log line per prompt; a malformed file stops mypt train
// before training starts, naming the file.
func TestEvalPromptsFile(t *testing.T) {
	data, cfg := prepareTiny(t)
	work := t.TempDir()
	prompts := filepath.Join(work, "prompts.json")
	if err := os.WriteFile(prompts, []byte(`{"prompts": {
  "hello": "<myPT_system>You are MyPT.</myPT_system><myPT_user>Hello!</myPT_user><myPT_assistant>",
  "capital": "<myPT_user>What is the capital of France?</myPT_user><myPT_assistant>"
}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	out, ok := myptIn(t, work, "train", "--config", cfg, "--dataset", data, "--output", "run", "--max_iters", "4",
		"--eval_interval", "2", "--eval_prompts_file", prompts, "--eval_max_new_tokens", "6", "--no-progress", "--log-level", "info")
	if !ok || !strings.Contains(out, "msg=gen") || !strings.Contains(out, "prompt=capital") || !strings.Contains(out, "prompt=hello") {
		t.Fatalf("train --eval_prompts_file: %s", out)
	}
	if strings.Contains(out, "CACHE MISMATCH") {
		t.Errorf("CACHE MISMATCH on the CPU backend:\n%s", out)
	}
	var evals int
	for _, m := range readMetrics[map[string]any](t, filepath.Join(work, "run", "metrics.jsonl")) {
		if m["event"] != "eval" {
			continue
		}
		evals++
		gen, ok1 := m["gen"].(map[string]any)
		nocache, ok2 := m["gen_nocache"].(map[string]any)
		if !ok1 || !ok2 || len(gen) != 2 || len(nocache) != 2 {
			t.Fatalf("eval at step %v: gen = %v, gen_nocache = %v", m["step"], m["gen"], m["gen_nocache"])
		}
		for _, name := range []string{"hello", "capital"} {
			if s, ok := gen[name].(string); !ok || s == "" || gen[name] != nocache[name] {
				t.Errorf("eval at step %v, %s: gen %q, gen_nocache %q", m["step"], name, gen[name], nocache[name])
			}
		}
	}
	if evals != 3 {
		t.Fatalf("%d eval events, want 3 (steps 0, 2, 4)", evals)
	}

	bad := filepath.Join(work, "bad.json")
	if err := os.WriteFile(bad, []byte(`{"prompts": {"hello": [{"role": "user", "content": "Hello!"}]}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	out, ok = myptIn(t, work, "train", "--config", cfg, "--dataset", data, "--output", "run2", "--max_iters", "2",
		"--eval_prompts_file", bad, "--no-progress", "--log-level", "info")
	if ok || !strings.Contains(out, "eval prompts file "+bad) || !strings.Contains(out, `prompt "hello" is a JSON array`) {
		t.Fatalf("malformed --eval_prompts_file: ok=%v\n%s", ok, out)
	}
	if strings.Contains(out, "msg=training") {
		t.Errorf("training started before the prompts file was checked:\n%s", out)
	}
	if _, err := os.Stat(filepath.Join(work, "run2")); err == nil {
		t.Errorf("the run directory was created before the prompts file was checked")
	}
}

package train_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/mypt/mypt/backends/cpu"
	"github.com/mypt/mypt/core/config"
	"github.com/mypt/mypt/core/generate"
	"github.com/mypt/mypt/core/tokenizer"
	"github.com/mypt/mypt/core/train"
	"github.com/mypt/mypt/sdk"
	pb "github.com/mypt/mypt/sdk/proto/backendv1"
	"github.com/mypt/mypt/sdk/sdktesting"
)

// charVocab96 is a char tokenizer whose 96 characters cover tinyRun's
// vocabulary, so every generated id decodes.
func charVocab96(t *testing.T) (*tokenizer.Tokenizer, []byte) {
	t.Helper()
	var sb strings.Builder
	sb.WriteByte('\n')
	for c := byte(' '); c <= '~'; c++ {
		sb.WriteByte(c)
	}
	tok := tokenizer.NewChar(sb.String())
	if tok.VocabSize() != 96 {
		t.Fatalf("char vocab %d", tok.VocabSize())
	}
	state, err := tokenizer.MarshalState(tok.State())
	if err != nil {
		t.Fatal(err)
	}
	return tok, state
}

func writeFile(t *testing.T, path, text string) string {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// greedyAt is an independent greedy generation: a fresh CPU backend holding
// the given parameters and core/generate's KV-cache loop, up to maxNew
// tokens and MyPT's stop tokens.
func greedyAt(t *testing.T, run *train.Run, params sdk.StateReader, tok *tokenizer.Tokenizer, prompt string, maxNew int) string {
	t.Helper()
	ctx := context.Background()
	b := backendWith(t, run, params)
	ids, err := tok.Encode(prompt)
	if err != nil {
		t.Fatal(err)
	}
	out, err := generate.Generate(ctx, b, generate.Request{
		Prompt: generate.Int32IDs(ids), MaxNewTokens: maxNew, BlockSize: run.Config.BlockSize,
		Stop: generate.StopIDs(), Sampler: generate.NewSampler(generate.Params{Temperature: 0}, 1),
	})
	if err != nil {
		t.Fatal(err)
	}
	u := make([]uint32, len(out))
	for i, id := range out {
		u[i] = uint32(id)
	}
	text, err := tok.Decode(u)
	if err != nil {
		t.Fatal(err)
	}
	return text
}

// TestEvalPrompts: MyPT's --eval_prompts_file generates every prompt
// greedily at every eval, with the KV cache (gen) and by full re-forward
// (gen_nocache); both agree on the CPU backend (no CACHE MISMATCH) and equal
// an independent greedy generation on the weights of that step (the initial
// parameters at step 0, the checkpoint saved when the run stopped at step 4
// and the final one at step 8), across a stop and resume.
func TestEvalPrompts(t *testing.T) {
	tok, state := charVocab96(t)
	prompts := map[string]string{"b_greeting": "Hi, ", "a_math": "2+2=", "c_long": "The cat "}
	file := writeFile(t, filepath.Join(t.TempDir(), "prompts.json"),
		`{"prompts": {"b_greeting": "Hi, ", "a_math": "2+2=", "c_long": "The cat "}}`)
	const maxNew = 10 // c_long (8 tokens) gets only 8 in the 16-token context
	var logBuf bytes.Buffer
	run := tinyRun(t, sdktesting.Connect(t, cpu.New(cpu.Options{})), func(c *config.Config) {
		c.MaxIters, c.EvalInterval, c.EvalIters = 8, 4, 2
	})
	run.TokenizerState = state
	run.EvalPromptsFile, run.EvalMaxNewTokens = file, maxNew
	run.Log = slog.New(slog.NewTextHandler(&logBuf, nil))

	want := map[float64]map[string]string{}
	expect := func(step float64, params func() sdk.StateReader) {
		want[step] = map[string]string{}
		for name, p := range prompts {
			n := min(maxNew, run.Config.BlockSize-len(p))
			want[step][name] = greedyAt(t, run, params(), tok, p, n)
		}
	}
	expect(0, func() sdk.StateReader { return run.Spec.InitState(run.Config.Seed) })
	latest := func() sdk.StateReader { return checkpointParams(t, run, filepath.Join(run.OutDir, "latest")) }
	run.StopAfter = 4
	if _, err := run.Train(context.Background()); err != nil {
		t.Fatal(err)
	}
	expect(4, latest)
	if _, err := run.Train(context.Background()); err != nil {
		t.Fatal(err)
	}
	expect(8, latest)

	evals := evalEvents(t, filepath.Join(run.OutDir, "metrics.jsonl"))
	if len(evals) != 3 {
		t.Fatalf("%d eval events, want 3 (steps 0, 4, 8)", len(evals))
	}
	changed := false
	for _, ev := range evals {
		step := ev["step"].(float64)
		gen, ok1 := ev["gen"].(map[string]any)
		nocache, ok2 := ev["gen_nocache"].(map[string]any)
		if !ok1 || !ok2 || len(gen) != len(prompts) || len(nocache) != len(prompts) {
			t.Fatalf("step %v: gen = %v, gen_nocache = %v", step, ev["gen"], ev["gen_nocache"])
		}
		for name := range prompts {
			if gen[name] != nocache[name] {
				t.Errorf("step %v, %s: gen %q != gen_nocache %q", step, name, gen[name], nocache[name])
			}
			if gen[name] != want[step][name] {
				t.Errorf("step %v, %s: gen %q, independent greedy generation %q", step, name, gen[name], want[step][name])
			}
			if s, _ := gen[name].(string); len(s) == 0 || len(s) > maxNew {
				t.Errorf("step %v, %s: completion %q", step, name, s)
			}
		}
		if step > 0 && !maps.Equal(gen, evals[0]["gen"].(map[string]any)) {
			changed = true
		}
	}
	if len([]rune(want[0]["c_long"])) > 8 {
		t.Errorf("c_long generated %q, more than the 8 tokens its context leaves", want[0]["c_long"])
	}
	if !changed {
		t.Logf("generations did not change with training (fine, but the test is weaker): %v", evals[0]["gen"])
	}
	logs := logBuf.String()
	if strings.Contains(logs, "CACHE MISMATCH") {
		t.Errorf("CACHE MISMATCH on the CPU backend:\n%s", logs)
	}
	// A log line per prompt and eval, in name order.
	var order []string
	for line := range strings.Lines(logs) {
		if strings.Contains(line, "msg=gen ") && strings.Contains(line, "step=0 ") {
			_, rest, _ := strings.Cut(line, "prompt=")
			name, _, _ := strings.Cut(rest, " ")
			order = append(order, name)
		}
	}
	if !slices.Equal(order, []string{"a_math", "b_greeting", "c_long"}) {
		t.Errorf("step-0 gen log lines for %v, want a_math, b_greeting, c_long in order:\n%s", order, logs)
	}
	if got := strings.Count(logs, "msg=gen "); got != 9 {
		t.Errorf("%d gen log lines, want 9 (3 prompts × 3 evals)", got)
	}
}

// noKVCache hides FEATURE_KV_CACHE from the backend's capabilities.
type noKVCache struct{ sdk.Backend }

func (b noKVCache) GetInfo(ctx context.Context, req *pb.GetInfoRequest) (*pb.GetInfoResponse, error) {
	info, err := b.Backend.GetInfo(ctx, req)
	if err != nil {
		return nil, err
	}
	caps := info.GetCapabilities()
	caps.Features = slices.DeleteFunc(caps.Features, func(f pb.Feature) bool { return f == pb.Feature_FEATURE_KV_CACHE })
	return info, nil
}

func (b noKVCache) Prefill(context.Context, *pb.PrefillRequest) (*pb.PrefillResponse, error) {
	panic("Prefill called on a backend without FEATURE_KV_CACHE")
}

// TestEvalPromptsWithoutKVCache: a backend without FEATURE_KV_CACHE gets a
// single warning and only the full re-forward generation (gen_nocache).
func TestEvalPromptsWithoutKVCache(t *testing.T) {
	_, state := charVocab96(t)
	file := writeFile(t, filepath.Join(t.TempDir(), "p.json"), `{"prompts": {"x": "ab"}}`)
	var logBuf bytes.Buffer
	run := tinyRun(t, noKVCache{sdktesting.Connect(t, cpu.New(cpu.Options{}))}, func(c *config.Config) {
		c.MaxIters, c.EvalInterval = 4, 2
	})
	run.TokenizerState, run.EvalPromptsFile, run.EvalMaxNewTokens = state, file, 4
	run.Log = slog.New(slog.NewTextHandler(&logBuf, nil))
	if _, err := run.Train(context.Background()); err != nil {
		t.Fatal(err)
	}
	evals := evalEvents(t, filepath.Join(run.OutDir, "metrics.jsonl"))
	if len(evals) != 3 {
		t.Fatalf("%d eval events, want 3", len(evals))
	}
	for _, ev := range evals {
		if _, ok := ev["gen"]; ok {
			t.Errorf("step %v: gen logged without a KV cache", ev["step"])
		}
		if nc, ok := ev["gen_nocache"].(map[string]any); !ok || nc["x"] == nil {
			t.Errorf("step %v: gen_nocache = %v", ev["step"], ev["gen_nocache"])
		}
	}
	if n := strings.Count(logBuf.String(), "FEATURE_KV_CACHE"); n != 1 {
		t.Errorf("%d warnings about FEATURE_KV_CACHE, want 1:\n%s", n, logBuf.String())
	}
}

// TestEvalPromptsFileErrors: a bad prompts file stops the run before
// anything is created, with an error naming the file.
func TestEvalPromptsFileErrors(t *testing.T) {
	_, state := charVocab96(t)
	dir := t.TempDir()
	for _, c := range []struct{ name, text, want string }{
		{"not_json", `{"prompts": `, "not a JSON object"},
		{"no_prompts_key", `{"a": "hello"}`, `no "prompts" key`},
		{"prompts_list", `{"prompts": ["hello"]}`, `"prompts" must be an object`},
		{"chat_turns", `{"prompts": {"q": [{"role": "user", "content": "hi"}]}}`, `prompt "q" is a JSON array, want a string`},
		{"empty", `{"prompts": {}}`, `"prompts" is empty`},
		{"too_long", `{"prompts": {"long": "0123456789abcdefghij"}}`, `prompt "long" is 20 tokens`},
		{"unknown_char", `{"prompts": {"u": "héllo"}}`, `prompt "u": encode`},
	} {
		t.Run(c.name, func(t *testing.T) {
			file := writeFile(t, filepath.Join(dir, c.name+".json"), c.text)
			run := tinyRun(t, sdktesting.Connect(t, cpu.New(cpu.Options{})), func(*config.Config) {})
			run.TokenizerState, run.EvalPromptsFile = state, file
			run.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
			_, err := run.Train(context.Background())
			if err == nil || !strings.Contains(err.Error(), "eval prompts file "+file) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error = %v, want one naming %s and containing %q", err, file, c.want)
			}
			if _, err := os.Stat(run.OutDir); err == nil {
				t.Errorf("the run directory was created before the prompts file was checked")
			}
		})
	}
	run := tinyRun(t, sdktesting.Connect(t, cpu.New(cpu.Options{})), func(*config.Config) {})
	run.EvalPromptsFile = filepath.Join(dir, "missing.json")
	if _, err := run.Train(context.Background()); err == nil || !strings.Contains(err.Error(), "missing.json") {
		t.Fatalf("missing file: error = %v", err)
	}
}

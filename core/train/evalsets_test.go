package train_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mypt/mypt/backends/cpu"
	"github.com/mypt/mypt/core/checkpoint"
	"github.com/mypt/mypt/core/config"
	"github.com/mypt/mypt/core/dataset"
	"github.com/mypt/mypt/core/tokenizer"
	"github.com/mypt/mypt/core/train"
	"github.com/mypt/mypt/sdk"
	pb "github.com/mypt/mypt/sdk/proto/backendv1"
	"github.com/mypt/mypt/sdk/sdktesting"
)

// writeEvalSet writes a small prepared dataset (val split only, unless
// train is set) of n episodes with token ids below vocab and a loss mask
// on the second half of each episode.
func writeEvalSet(t *testing.T, dir string, seed uint64, n, vocab int, splits ...string) string {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, 1))
	for _, split := range splits {
		w, err := dataset.NewShardWriter(filepath.Join(dir, split), 1<<20, false)
		if err != nil {
			t.Fatal(err)
		}
		for i := range n {
			length := 6 + (i*7+int(seed))%25 // some longer than block_size+1: truncated
			toks := make([]uint32, length)
			weights := make([]float32, length)
			for j := range toks {
				toks[j] = uint32(rng.IntN(vocab))
				if j >= length/2 {
					weights[j] = 1
				}
			}
			if err := w.Add(toks, weights, nil); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := w.Close(); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// backendWith is a fresh in-process CPU backend configured as run's and
// holding params.
func backendWith(t *testing.T, run *train.Run, params sdk.StateReader) sdk.Backend {
	t.Helper()
	ctx := context.Background()
	b := sdktesting.Connect(t, cpu.New(cpu.Options{}))
	if _, err := b.Configure(ctx, train.ConfigureRequest(run.Config, run.Spec, pb.DType_DTYPE_F32)); err != nil {
		t.Fatal(err)
	}
	if _, err := b.SetState(ctx, params); err != nil {
		t.Fatal(err)
	}
	return b
}

// evalLossAt is an independent computation of a split's eval loss: a fresh
// backend holding the given parameters, and every val episode once, in
// order, batch by batch (at most evalIters batches), Σ loss / Σ weight.
func evalLossAt(t *testing.T, run *train.Run, params sdk.StateReader, dir string) float64 {
	t.Helper()
	ctx := context.Background()
	b := backendWith(t, run, params)
	ds, err := dataset.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer ds.Close()
	cfg := run.Config
	pad := uint32(cfg.PadTokenID)
	s, err := ds.Val.NewSampler(dataset.Options{Mode: dataset.ModeSequential, MinTokens: cfg.EpisodeMinTokens,
		UseLossMask: cfg.UseLossMask, PadID: &pad, Truncate: dataset.TruncateTail})
	if err != nil {
		t.Fatal(err)
	}
	left := ds.Val.NumEpisodes()
	var lossSum, wsum float64
	for i := 0; i < cfg.EvalIters && left > 0; i++ {
		batch, err := s.Next(cfg.BatchSize, cfg.BlockSize)
		if err != nil {
			t.Fatal(err)
		}
		if left < cfg.BatchSize { // rows wrapping to the start are not counted twice
			clear(batch.Weights[left*batch.T:])
		}
		left -= cfg.BatchSize
		resp, err := b.Evaluate(ctx, &pb.EvaluateRequest{Batch: &pb.Batch{BatchSize: uint32(batch.B), SeqLen: uint32(batch.T),
			Tokens: batch.Tokens, Targets: batch.Targets, LossWeights: batch.Weights, SegmentIds: batch.Segments}})
		if err != nil {
			t.Fatal(err)
		}
		lossSum += resp.GetLossSum()
		wsum += resp.GetWeightSum()
	}
	return lossSum / wsum
}

// checkpointParams streams a checkpoint's parameters (no moments).
func checkpointParams(t *testing.T, run *train.Run, dir string) sdk.StateReader {
	t.Helper()
	ck, err := checkpoint.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ck.Close() })
	sr, err := ck.NewStateReader(checkpoint.LayoutFromModelSpec(run.Spec.Proto(), false))
	if err != nil {
		t.Fatal(err)
	}
	return sr
}

func evalEvents(t *testing.T, path string) []map[string]any {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []map[string]any
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var ev map[string]any
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatal(err)
		}
		if ev["event"] == "eval" {
			out = append(out, ev)
		}
	}
	return out
}

// TestEvalSets: MyPT's extra eval sets are evaluated at every eval with the
// same routine as the val loss (checked against an independent computation
// at step 0 and at the final step), logged as eval_<name> in metrics.jsonl,
// the log line and TensorBoard, leave the best checkpoint to the main val
// loss, and survive an exact resume.
func TestEvalSets(t *testing.T) {
	root := t.TempDir()
	setA := writeEvalSet(t, filepath.Join(root, "a"), 7, 10, 96, "val") // 3 batches of 4, the last wraps
	setB := writeEvalSet(t, filepath.Join(root, "b"), 9, 6, 96, "val")  // 2 batches
	edit := func(c *config.Config) {
		c.MaxIters, c.EvalInterval, c.EvalIters = 8, 4, 5
		c.EvalSets = map[string]string{"phase1_format": setA, "general": setB}
	}
	var logBuf bytes.Buffer
	run := tinyRun(t, sdktesting.Connect(t, cpu.New(cpu.Options{})), edit)
	run.Log = slog.New(slog.NewTextHandler(&logBuf, nil))
	if _, err := run.Train(context.Background()); err != nil {
		t.Fatal(err)
	}
	evals := evalEvents(t, filepath.Join(run.OutDir, "metrics.jsonl"))
	if len(evals) != 3 {
		t.Fatalf("%d eval events, want 3 (steps 0, 4, 8)", len(evals))
	}
	bestVal := math.Inf(1)
	for _, ev := range evals {
		for _, k := range []string{"eval_phase1_format", "eval_general"} {
			if v, ok := ev[k].(float64); !ok || !(v > 0) {
				t.Fatalf("eval at step %v: %s = %v", ev["step"], k, ev[k])
			}
		}
		bestVal = min(bestVal, ev["val_loss"].(float64))
		if ev["best_val_loss"].(float64) != bestVal {
			t.Errorf("step %v: best_val_loss %v, want the lowest main val loss so far %v", ev["step"], ev["best_val_loss"], bestVal)
		}
	}
	first, last := evals[0], evals[len(evals)-1]
	for name, dir := range map[string]string{"phase1_format": setA, "general": setB} {
		if want := evalLossAt(t, run, run.Spec.InitState(run.Config.Seed), dir); first["eval_"+name] != want {
			t.Errorf("step 0: eval_%s = %v, independent evaluation %v", name, first["eval_"+name], want)
		}
		params := checkpointParams(t, run, filepath.Join(run.OutDir, "latest"))
		if want := evalLossAt(t, run, params, dir); last["eval_"+name] != want {
			t.Errorf("step 8: eval_%s = %v, independent evaluation %v", name, last["eval_"+name], want)
		}
	}
	if first["eval_phase1_format"] == first["eval_general"] || first["eval_general"] == first["val_loss"] {
		t.Errorf("sets not told apart: %v", first)
	}
	if !strings.Contains(logBuf.String(), "eval_general=") || !strings.Contains(logBuf.String(), "eval_phase1_format=") {
		t.Errorf("eval log line lacks the eval sets:\n%s", logBuf.String())
	}
	tb, _ := filepath.Glob(filepath.Join(run.OutDir, "events.out.tfevents.*"))
	if len(tb) != 1 {
		t.Fatalf("event files: %v", tb)
	}
	if b, err := os.ReadFile(tb[0]); err != nil || !bytes.Contains(b, []byte("val/eval_phase1_format")) {
		t.Errorf("TensorBoard file lacks val/eval_phase1_format (%v)", err)
	}

	// Stopped after 5 steps and resumed: the same eval events.
	resumed := tinyRun(t, sdktesting.Connect(t, cpu.New(cpu.Options{})), edit)
	resumed.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	resumed.StopAfter = 5
	if _, err := resumed.Train(context.Background()); err != nil {
		t.Fatal(err)
	}
	resumed.StopAfter = 0
	if _, err := resumed.Train(context.Background()); err != nil {
		t.Fatal(err)
	}
	got := evalEvents(t, filepath.Join(resumed.OutDir, "metrics.jsonl"))
	if len(got) != len(evals) {
		t.Fatalf("resumed run: %d eval events, want %d", len(got), len(evals))
	}
	for i := range evals {
		for _, k := range []string{"step", "val_loss", "eval_phase1_format", "eval_general"} {
			if got[i][k] != evals[i][k] {
				t.Errorf("resumed eval %d: %s = %v, uninterrupted %v", i, k, got[i][k], evals[i][k])
			}
		}
	}
}

// TestEvalSetErrors: a bad eval set stops the run at start with an error
// naming the set and its directory.
func TestEvalSetErrors(t *testing.T) {
	root := t.TempDir()
	good := writeEvalSet(t, filepath.Join(root, "good"), 3, 5, 96, "val")
	noVal := writeEvalSet(t, filepath.Join(root, "noval"), 3, 5, 96, "train")
	bigVocab := writeEvalSet(t, filepath.Join(root, "gpt2ids"), 3, 5, 50304, "val")
	withTok := writeEvalSet(t, filepath.Join(root, "tok"), 3, 5, 96, "val")
	if err := tokenizer.NewChar("abcdef").Save(filepath.Join(withTok, dataset.TokenizerFile)); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name, dir, want string
	}{
		{"missing", filepath.Join(root, "nope"), "no such file"},
		{"phase2_operators", noVal, "no val split"},
		{"phase2_remix", bigVocab, "outside the model's vocab_size 96"},
		{"other_tok", withTok, "has a tokenizer_state.json (char"},
	} {
		t.Run(c.name, func(t *testing.T) {
			run := tinyRun(t, sdktesting.Connect(t, cpu.New(cpu.Options{})), func(cfg *config.Config) {
				cfg.EvalSets = map[string]string{"fine": good, c.name: c.dir}
			})
			_, err := run.Train(context.Background())
			if err == nil || !strings.Contains(err.Error(), `eval set "`+c.name+`" (`+c.dir+`)`) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error = %v, want one naming eval set %q (%s) and containing %q", err, c.name, c.dir, c.want)
			}
			if _, err := os.Stat(run.OutDir); err == nil {
				t.Errorf("the run directory was created before the eval sets were checked")
			}
		})
	}

	// Different tokenizers on both sides.
	trainDir := filepath.Join(root, "train")
	if err := os.CopyFS(trainDir, os.DirFS("testdata/reference/data")); err != nil {
		t.Fatal(err)
	}
	if err := tokenizer.NewChar("xyz").Save(filepath.Join(trainDir, dataset.TokenizerFile)); err != nil {
		t.Fatal(err)
	}
	ds, err := dataset.Open(trainDir)
	if err != nil {
		t.Fatal(err)
	}
	defer ds.Close()
	run := tinyRun(t, sdktesting.Connect(t, cpu.New(cpu.Options{})), func(cfg *config.Config) {
		cfg.EvalSets = map[string]string{"general": withTok}
	})
	run.Data = ds
	if _, err := run.Train(context.Background()); err == nil || !strings.Contains(err.Error(), `eval set "general"`) ||
		!strings.Contains(err.Error(), "different tokenizer") {
		t.Fatalf("error = %v, want a tokenizer mismatch naming eval set \"general\"", err)
	}
}

package train_test

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/mypt/mypt/backends/cpu"
	"github.com/mypt/mypt/core/config"
	"github.com/mypt/mypt/core/dataset"
	"github.com/mypt/mypt/core/model"
	"github.com/mypt/mypt/core/train"
	"github.com/mypt/mypt/sdk/sdktesting"
)

// The reference run: testdata/reference/gen_reference.py trains the same
// tiny models in float64 PyTorch, from the same initial weights
// (init_gpt2/, init_llama/: mypt checkpoints written by the independent
// Python writer) on the same dataset (data/), with its own implementation of
// the sampler, schedule, accumulation and normalisation, clipping and AdamW.
// Regenerate with
//
//	/usr/bin/python3 core/train/testdata/reference/gen_reference.py
//
// Cases: gpt2_global (learned positions, LayerNorm, GELU, biases, untied),
// llama_global (RoPE, RMSNorm, SwiGLU, tied), gpt2_mypt_norm
// (loss_normalization "mypt") and llama_nomask (use_loss_mask off: pads are
// trained on). All: 12 steps, batch 4 × grad_accum 2 (batches straddle
// epochs), block 16 with episodes up to 40 tokens (tail truncation) and one
// below episode_min_tokens, warmup 3-4 steps then cosine, clipping active on
// every step, weight decay 0.3, evals at steps 0, 6 and 12.
//
// Tolerances, float32 CPU backend against the float64 oracle (max errors
// seen when this test was written, over all cases):
//
//	step loss   relative 1e-5  (seen 6.0e-7)
//	val loss    relative 1e-5  (seen 2.0e-7)
//	grad norm   relative 1e-4  (seen 1.5e-5; Adam's sign-like first steps
//	                            amplify float32 noise in tiny gradients)
//	lr          relative 1e-12 (the schedule is float64 on both sides)
//
// Mutations of the trainer that this test caught (each in a scratch copy):
// warmup and cosine shape, global vs MyPT normalisation, the logged loss,
// clipping off, weight decay off (step-2 loss off by 5e-5), embeddings
// decayed (grad norm off by 3e-4), tail truncation off by one, the epoch
// seed, the mask of the last target, one extra val batch.
const (
	tolLoss     = 1e-5
	tolGradNorm = 1e-4
	tolLR       = 1e-12
)

type refStep struct {
	Step     int     `json:"step"`
	Loss     float64 `json:"loss"`
	LR       float64 `json:"lr"`
	GradNorm float64 `json:"grad_norm"`
}

type refEval struct {
	Step    int     `json:"step"`
	ValLoss float64 `json:"val_loss"`
}

type refCase struct {
	Init   string          `json:"init"`
	Config json.RawMessage `json:"config"`
	Steps  []refStep       `json:"steps"`
	Evals  []refEval       `json:"evals"`
}

func TestTrainMatchesPyTorchReference(t *testing.T) {
	dir := filepath.Join("testdata", "reference")
	raw, err := os.ReadFile(filepath.Join(dir, "expected.json"))
	if err != nil {
		t.Fatal(err)
	}
	var cases map[string]refCase
	if err := json.Unmarshal(raw, &cases); err != nil {
		t.Fatal(err)
	}
	if len(cases) == 0 {
		t.Fatal("expected.json has no cases")
	}
	for _, name := range slices.Sorted(maps.Keys(cases)) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			runReferenceCase(t, dir, cases[name])
		})
	}
}

func runReferenceCase(t *testing.T, dir string, rc refCase) {
	cfg := config.Default()
	// The reference's config uses mypt's (= MyPT's) JSON keys; a key
	// config.Config lacks would be silently dropped here, so check them.
	var keys map[string]any
	if err := json.Unmarshal(rc.Config, &keys); err != nil {
		t.Fatal(err)
	}
	known := map[string]bool{}
	if b, err := json.Marshal(cfg); err == nil {
		var m map[string]any
		_ = json.Unmarshal(b, &m)
		for k := range m {
			known[k] = true
		}
	}
	for k := range keys {
		if !known[k] {
			t.Fatalf("reference config key %q is not a config.Config field", k)
		}
	}
	if err := json.Unmarshal(rc.Config, &cfg); err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("reference config: %v", err)
	}

	ds, err := dataset.Open(filepath.Join(dir, "data"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ds.Close() })

	out := t.TempDir()
	run := &train.Run{
		Config:         cfg,
		Spec:           model.NewSpec(cfg),
		Backend:        sdktesting.Connect(t, cpu.New(cpu.Options{Threads: 2})),
		BackendName:    "cpu",
		Data:           ds,
		TokenizerState: []byte(`{"token_kind":"gpt2"}`),
		OutDir:         out,
		InitFrom:       filepath.Join(dir, rc.Init),
		Log:            slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	sum, err := run.Train(context.Background())
	if err != nil {
		t.Fatalf("Train: %v", err)
	}
	if sum.Stopped != "" || sum.EndStep != cfg.MaxIters {
		t.Fatalf("run ended at step %d (%q), want %d", sum.EndStep, sum.Stopped, cfg.MaxIters)
	}

	steps, evals := readMetrics(t, filepath.Join(out, "metrics.jsonl"))
	if len(steps) != len(rc.Steps) {
		t.Fatalf("metrics.jsonl has %d step events, reference %d", len(steps), len(rc.Steps))
	}
	if len(evals) != len(rc.Evals) {
		t.Fatalf("metrics.jsonl has %d eval events, reference %d", len(evals), len(rc.Evals))
	}
	var maxLoss, maxNorm, maxVal float64
	for i, want := range rc.Steps {
		got := steps[i]
		if got.Step != want.Step {
			t.Fatalf("step event %d is step %d, want %d", i, got.Step, want.Step)
		}
		maxLoss = max(maxLoss, check(t, "loss", want.Step, got.Loss, want.Loss, tolLoss))
		maxNorm = max(maxNorm, check(t, "grad_norm", want.Step, got.GradNorm, want.GradNorm, tolGradNorm))
		check(t, "lr", want.Step, got.LR, want.LR, tolLR)
	}
	for i, want := range rc.Evals {
		got := evals[i]
		if got.Step != want.Step {
			t.Fatalf("eval event %d is at step %d, want %d", i, got.Step, want.Step)
		}
		maxVal = max(maxVal, check(t, "val_loss", want.Step, got.ValLoss, want.ValLoss, tolLoss))
	}
	t.Logf("max relative error: step loss %.2g, val loss %.2g, grad norm %.2g", maxLoss, maxVal, maxNorm)
}

// check reports got against want and returns the relative error.
func check(t *testing.T, what string, step int, got, want, tol float64) float64 {
	t.Helper()
	rel := math.Abs(got-want) / math.Max(math.Abs(want), 1e-12)
	if !(rel <= tol) {
		t.Errorf("step %d: %s = %.9g, reference %.9g (relative error %.2g > %g)", step, what, got, want, rel, tol)
	}
	return rel
}

func readMetrics(t *testing.T, path string) (steps []refStep, evals []refEval) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var ev struct {
			Event    string   `json:"event"`
			Step     int      `json:"step"`
			Loss     float64  `json:"loss"`
			LR       float64  `json:"lr"`
			GradNorm float64  `json:"grad_norm"`
			ValLoss  *float64 `json:"val_loss"`
		}
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		switch ev.Event {
		case "step":
			steps = append(steps, refStep{Step: ev.Step, Loss: ev.Loss, LR: ev.LR, GradNorm: ev.GradNorm})
		case "eval":
			if ev.ValLoss == nil {
				t.Fatalf("%s: eval event at step %d without val_loss", path, ev.Step)
			}
			evals = append(evals, refEval{Step: ev.Step, ValLoss: *ev.ValLoss})
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return steps, evals
}

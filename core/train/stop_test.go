package train_test

import (
	"context"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mypt/mypt/backends/cpu"
	"github.com/mypt/mypt/core/config"
	"github.com/mypt/mypt/core/dataset"
	"github.com/mypt/mypt/core/model"
	"github.com/mypt/mypt/core/train"
	"github.com/mypt/mypt/sdk"
	pb "github.com/mypt/mypt/sdk/proto/backendv1"
	"github.com/mypt/mypt/sdk/sdktesting"
)

// tinyRun is a small GPT-2 style run over the reference fixture's dataset.
func tinyRun(t *testing.T, b sdk.Backend, edit func(*config.Config)) *train.Run {
	t.Helper()
	cfg := config.Default()
	cfg.VocabSize, cfg.BlockSize, cfg.NLayer, cfg.NHead, cfg.NEmbd = 96, 16, 1, 2, 16
	cfg.BatchSize, cfg.Dropout, cfg.UseLossMask, cfg.PadTokenID = 4, 0, true, 0
	cfg.MaxIters, cfg.EvalInterval, cfg.EvalIters, cfg.LearningRate, cfg.WarmupIters = 20, 2, 2, 1e-2, 0
	edit(&cfg)
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	ds, err := dataset.Open("testdata/reference/data")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ds.Close() })
	return &train.Run{Config: cfg, Spec: model.NewSpec(cfg), Backend: b, BackendName: "test", Data: ds,
		TokenizerState: []byte(`{"token_kind":"char","chars":[]}`), OutDir: filepath.Join(t.TempDir(), "run")}
}

// flatEval reports the same val loss at every eval, so it never improves.
type flatEval struct{ sdk.Backend }

func (f flatEval) Evaluate(ctx context.Context, req *pb.EvaluateRequest) (*pb.EvaluateResponse, error) {
	resp, err := f.Backend.Evaluate(ctx, req)
	if err == nil {
		resp.LossSum = 3 * resp.GetWeightSum()
	}
	return resp, err
}

func TestEarlyStopping(t *testing.T) {
	run := tinyRun(t, flatEval{sdktesting.Connect(t, cpu.New(cpu.Options{}))}, func(c *config.Config) {
		c.EarlyStopPatience = 3
	})
	sum, err := run.Train(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	// Evals at steps 0 (the best), 2, 4, 6: the third without improvement stops at step 6.
	if sum.Stopped != "early stopping" || sum.EndStep != 6 {
		t.Fatalf("stopped %q at step %d, want early stopping at step 6", sum.Stopped, sum.EndStep)
	}
	if _, err := os.Stat(filepath.Join(run.OutDir, "best", "manifest.json")); err != nil {
		t.Fatalf("no best checkpoint: %v", err)
	}
}

// divergeAt returns a NaN loss from a given ForwardBackward call on.
type divergeAt struct {
	sdk.Backend
	calls, at int
}

func (d *divergeAt) ForwardBackward(ctx context.Context, req *pb.ForwardBackwardRequest) (*pb.ForwardBackwardResponse, error) {
	resp, err := d.Backend.ForwardBackward(ctx, req)
	d.calls++
	if err == nil && d.calls >= d.at {
		resp.LossSum = math.NaN()
	}
	return resp, err
}

func TestNaNStopsAndKeepsTheLastGoodCheckpoint(t *testing.T) {
	b := &divergeAt{Backend: sdktesting.Connect(t, cpu.New(cpu.Options{})), at: 6}
	run := tinyRun(t, b, func(c *config.Config) { c.SaveEvery = 2 })
	_, err := run.Train(context.Background())
	if err == nil || !strings.Contains(err.Error(), "step 5: training diverged (loss NaN") ||
		!strings.Contains(err.Error(), filepath.Join(run.OutDir, "latest")) {
		t.Fatalf("error = %v, want a divergence report at step 5 naming the last good checkpoint", err)
	}
	var st struct{ Step int }
	b2, err := os.ReadFile(filepath.Join(run.OutDir, "latest", "training_state.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b2, &st); err != nil || st.Step != 4 {
		t.Fatalf("latest checkpoint at step %d (%v), want 4, the last save before the NaN", st.Step, err)
	}
}

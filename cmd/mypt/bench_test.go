package main

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// benchConfig is a tiny LLaMA-style model with a small vocabulary so the
// benchmark runs in well under a second per step on the CPU plugin.
const benchConfig = `{
  "batch_size": 4, "block_size": 64, "vocab_size": 512, "n_embd": 32, "n_head": 2, "n_layer": 2,
  "dropout": 0.1, "bias": false, "tie_weights": true, "pos_encoding": "rope", "mlp_type": "swiglu",
  "norm_type": "rmsnorm", "learning_rate": 1e-3, "weight_decay": 0.05, "use_amp": true
}`

type benchJSON struct {
	Backend        string    `json:"backend"`
	Engine         string    `json:"engine"`
	ComputeDType   string    `json:"compute_dtype"`
	Params         int64     `json:"params"`
	FLOPParams     int64     `json:"flop_params"`
	BatchSize      int       `json:"batch_size"`
	BlockSize      int       `json:"block_size"`
	GradAccumSteps int       `json:"grad_accum_steps"`
	TokensPerStep  int64     `json:"tokens_per_step"`
	Steps          int       `json:"steps"`
	TokensPerS     float64   `json:"tokens_per_s"`
	FLOPsPerToken  float64   `json:"flops_per_token"`
	FLOPsFormula   string    `json:"flops_formula"`
	AchievedTFLOPS float64   `json:"achieved_tflops"`
	PeakTFLOPS     float64   `json:"peak_tflops"`
	MFU            *float64  `json:"mfu"`
	MFUNote        string    `json:"mfu_note"`
	FirstLoss      float64   `json:"first_loss"`
	LastLoss       float64   `json:"last_loss"`
	AllStepMS      []float64 `json:"all_step_ms"`
	StepMS         struct {
		Median float64 `json:"median"`
		Mean   float64 `json:"mean"`
	} `json:"step_ms"`
}

// TestBenchCommand runs `mypt bench --backend cpu` through the real binaries:
// --json with overrides of batch, block and accumulation and a peak, then the
// text form without a peak (MFU n/a on a CPU).
func TestBenchCommand(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "bench.json")
	if err := os.WriteFile(cfg, []byte(benchConfig), 0o644); err != nil {
		t.Fatal(err)
	}
	out := runMypt(t, "bench", "--backend", "cpu", "--config", cfg, "--steps", "3", "--warmup", "1",
		"--batch_size", "3", "--block_size", "32", "--grad_accum_steps", "2", "--peak_tflops", "0.5", "--json")
	var r benchJSON
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("--json output is not one JSON object: %v\n%s", err, out)
	}
	if r.Backend != "cpu" || r.Engine == "" || r.ComputeDType != "F32" {
		t.Errorf("backend %q, engine %q, compute %q", r.Backend, r.Engine, r.ComputeDType)
	}
	if r.BatchSize != 3 || r.BlockSize != 32 || r.GradAccumSteps != 2 || r.TokensPerStep != 3*32*2 {
		t.Errorf("shape: batch %d block %d accum %d, tokens/step %d (want 192)", r.BatchSize, r.BlockSize, r.GradAccumSteps, r.TokensPerStep)
	}
	if r.Steps != 3 || len(r.AllStepMS) != 3 || r.StepMS.Median <= 0 || r.StepMS.Mean <= 0 {
		t.Errorf("steps %d, step ms %v, median %v, mean %v", r.Steps, r.AllStepMS, r.StepMS.Median, r.StepMS.Mean)
	}
	if r.TokensPerS <= 0 || math.Abs(r.TokensPerS-192/(r.StepMS.Mean/1e3)) > 1e-6*r.TokensPerS {
		t.Errorf("tokens/s %v, want 192 / mean step time", r.TokensPerS)
	}
	// Tied, RoPE: N is every parameter; 6N + 12·L·C·T at T = 32.
	if r.FLOPParams != r.Params || r.FLOPsPerToken != 6*float64(r.Params)+12*2*32*32 || !strings.Contains(r.FLOPsFormula, "12·L·C·T") {
		t.Errorf("FLOPs/token %v with N %d of %d params (%s)", r.FLOPsPerToken, r.FLOPParams, r.Params, r.FLOPsFormula)
	}
	for _, loss := range []float64{r.FirstLoss, r.LastLoss} {
		if math.IsNaN(loss) || math.IsInf(loss, 0) || math.Abs(loss-math.Log(512)) > 1 {
			t.Errorf("loss %v, want finite and near ln 512 = %.2f", loss, math.Log(512))
		}
	}
	if r.PeakTFLOPS != 0.5 || r.MFU == nil || math.Abs(*r.MFU-r.AchievedTFLOPS/0.5) > 1e-9 || *r.MFU <= 0 {
		t.Errorf("MFU %v of peak %v, achieved %v TFLOP/s", r.MFU, r.PeakTFLOPS, r.AchievedTFLOPS)
	}

	text := runMypt(t, "bench", "--backend", "cpu", "--config", cfg, "--steps", "2", "--warmup", "0")
	for _, want := range []string{"256 (batch 4 x block 64 x accum 1)", "tokens/s:", "ms/step:", "median",
		"FLOPs/token:", "MFU:", "n/a (no peak known for cpu device"} {
		if !strings.Contains(text, want) {
			t.Errorf("text output lacks %q:\n%s", want, text)
		}
	}
}

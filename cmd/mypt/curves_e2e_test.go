package main

import (
	"fmt"
	"math"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

// xlaPlugin builds mypt-backend-xla next to the binaries of the other end-to-end tests.
var xlaPlugin = sync.OnceValues(func() (string, error) {
	dir, err := binaries()
	if err != nil {
		return "", err
	}
	out, err := exec.Command("go", "build", "-o", filepath.Join(dir, "mypt-backend-xla"), "github.com/mypt/mypt/cmd/mypt-backend-xla").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("build cmd/mypt-backend-xla: %v\n%s", err, out)
	}
	return dir, nil
})

type stepMetric struct {
	Event    string  `json:"event"`
	Step     int     `json:"step"`
	Loss     float64 `json:"loss"`
	GradNorm float64 `json:"grad_norm"`
	ValLoss  float64 `json:"val_loss"`
}

// curveRun is a CI-sized `mypt train` of the demo config (configs/chat_demo.json: LLaMA
// style, tied weights, GPT-2 vocabulary, prepared from the shipped demo data) with
// dropout 0 and seed 7, run on a backend and on the CPU reference.
type curveRun struct {
	backend                 string
	steps, batch, evalEvery int
	env                     []string // for the backend's plugin
	lossTol, normTol        float64  // relative bounds against the CPU backend
	// valDrop (trainDrop, when not 0) is how much the backend's val (train) loss must fall
	// from the first eval (step) to the last.
	valDrop, trainDrop float64
}

// trainsLikeCPU trains r on both backends and holds every train and val loss and every
// gradient norm of r.backend to the CPU backend's, relative.
func trainsLikeCPU(t *testing.T, r curveRun) {
	t.Helper()
	data := filepath.Join(t.TempDir(), "data")
	runMypt(t, "prepare", "--input", "../../configs/data/chat_demo.jsonl", "--output", data,
		"--tokenization", "gpt2", "--val_split", "0.1")
	curves := map[string][]stepMetric{}
	for _, backend := range []string{"cpu", r.backend} {
		out := filepath.Join(t.TempDir(), backend)
		cmd := myptCmd(t, "train", "--config", "../../configs/chat_demo.json", "--dataset", data, "--output", out,
			"--backend", backend, "--no-progress", "--max_iters", fmt.Sprint(r.steps), "--batch_size", fmt.Sprint(r.batch),
			"--eval_interval", fmt.Sprint(r.evalEvery), "--eval_iters", "2", "--dropout", "0", "--seed", "7")
		cmd.Env = append(cmd.Env, r.env...)
		if msg, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("mypt train --backend %s: %v\n%s", backend, err, msg)
		}
		curves[backend] = readStepMetrics(t, filepath.Join(out, "metrics.jsonl"))
	}
	cpu, got := curves["cpu"], curves[r.backend]
	if want := r.steps + r.steps/r.evalEvery + 1; len(cpu) != want || len(got) != want {
		t.Fatalf("%d metrics lines on cpu, %d on %s, want %d (the steps, an eval every evalEvery steps and the final one)", len(cpu), len(got), r.backend, want)
	}
	rel := func(a, b float64) float64 { return math.Abs(a-b) / math.Abs(a) }
	var worstLoss, worstNorm float64
	for i, c := range cpu {
		x := got[i]
		if c.Event != x.Event || c.Step != x.Step {
			t.Fatalf("line %d: cpu %s %d, %s %s %d", i, c.Event, c.Step, r.backend, x.Event, x.Step)
		}
		d := rel(c.ValLoss, x.ValLoss)
		if c.Event == "step" {
			d = rel(c.Loss, x.Loss)
			if n := rel(c.GradNorm, x.GradNorm); !(n <= r.normTol) {
				t.Errorf("step %d: grad norm cpu %.8g, %s %.8g (relative %.2g > %g)", c.Step, c.GradNorm, r.backend, x.GradNorm, n, r.normTol)
			} else {
				worstNorm = max(worstNorm, n)
			}
		}
		if !(d <= r.lossTol) {
			t.Errorf("%s %d: cpu loss %.8g/%.8g, %s %.8g/%.8g (relative %.2g > %g)", c.Event, c.Step, c.Loss, c.ValLoss,
				r.backend, x.Loss, x.ValLoss, d, r.lossTol)
		}
		worstLoss = max(worstLoss, d)
	}
	t.Logf("cpu vs %s: losses ≤ %.2g relative, gradient norms ≤ %.2g", r.backend, worstLoss, worstNorm)
	var firstTrain, lastTrain, firstVal, lastVal float64
	for _, m := range got {
		switch {
		case m.Event == "step" && m.Step == 1:
			firstTrain = m.Loss
		case m.Event == "step":
			lastTrain = m.Loss
		case m.Event == "eval" && m.Step == 0:
			firstVal = m.ValLoss
		case m.Event == "eval":
			lastVal = m.ValLoss
		}
	}
	if !(lastVal < firstVal-r.valDrop) || r.trainDrop > 0 && !(lastTrain < firstTrain-r.trainDrop) {
		t.Errorf("%s loss did not fall: train %.4f → %.4f (by %g wanted), val %.4f → %.4f (by %g)", r.backend,
			firstTrain, lastTrain, r.trainDrop, firstVal, lastVal, r.valDrop)
	}
}

// TestTrainXLAMatchesCPU is issue 8's "done when": `mypt train --backend xla` trains the
// demo config end to end on the simplego engine (not a PJRT plugin from the environment),
// and its loss curve matches the CPU backend's: 12 steps of 4×48 tokens, eval every 4.
// The two differ only by float32 rounding (hand-written backward passes against GoMLX
// autodiff, different summation orders): measured ≤ 1e-7 relative on every train and val
// loss and ≤ 3e-6 on gradient norms; the test allows 1e-5 and 1e-4.
func TestTrainXLAMatchesCPU(t *testing.T) {
	if testing.Short() {
		t.Skip("trains on the simplego engine (~20 s on 2 cores); skipped with -short")
	}
	if _, err := xlaPlugin(); err != nil {
		t.Fatal(err)
	}
	trainsLikeCPU(t, curveRun{backend: "xla", steps: 12, batch: 4, evalEvery: 4, env: []string{"PJRT_PLUGIN_LIBRARY_PATH="},
		lossTol: 1e-5, normTol: 1e-4, valDrop: 0.5, trainDrop: 0.5})
}

// TestTrainGPTExampleMatchesCPU is issue 13's "the plugin-author path ends in a backend mypt
// can train": the example backend of sdk/examples/gpt (plain float64 Go) trains the demo
// config with `mypt train --backend gpt`: 6 steps of 2×48 tokens, eval every 3 (~6 s on 2
// cores, mostly the 50304-wide LM head). It differs from the CPU backend by float32 against
// float64 rounding only: measured ≤ 2e-8 relative on every loss and ≤ 8.2e-8 on gradient
// norms; the test allows 1e-6 and 1e-5 (the CPU backend's float32 sums split by its thread
// count, so other machines round a little differently).
func TestTrainGPTExampleMatchesCPU(t *testing.T) {
	if testing.Short() {
		t.Skip("trains on the plain-Go example backend (~8 s on 2 cores); skipped with -short")
	}
	trainsLikeCPU(t, curveRun{backend: "gpt", steps: 6, batch: 2, evalEvery: 3, lossTol: 1e-6, normTol: 1e-5, valDrop: 0.3})
}

// readStepMetrics returns the step and eval lines of a metrics.jsonl file.
func readStepMetrics(t *testing.T, path string) []stepMetric {
	t.Helper()
	var out []stepMetric
	for _, m := range readMetrics[stepMetric](t, path) {
		if m.Event == "step" || m.Event == "eval" {
			out = append(out, m)
		}
	}
	return out
}

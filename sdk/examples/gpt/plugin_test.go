package gpt_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"github.com/mypt/mypt/conformance"
)

// binDir holds mypt, the CPU reference plugin and this example's plugin, built once.
var binDir string

var buildBinaries = sync.OnceValue(func() error {
	var err error
	if binDir, err = os.MkdirTemp("", "mypt-gpt-example-"); err != nil {
		return err
	}
	for _, pkg := range []string{"github.com/mypt/mypt/cmd/mypt", "github.com/mypt/mypt/cmd/mypt-backend-cpu",
		"github.com/mypt/mypt/sdk/examples/gpt/cmd/mypt-backend-gpt"} {
		out, err := exec.Command("go", "build", "-o", filepath.Join(binDir, filepath.Base(pkg)), pkg).CombinedOutput()
		if err != nil {
			return fmt.Errorf("go build %s: %v\n%s", pkg, err, out)
		}
	}
	return nil
})

// bin returns the path of a built binary.
func bin(t *testing.T, name string) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds mypt and two plugins; skipped with -short")
	}
	if err := buildBinaries(); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(binDir, name)
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// TestConformance runs the whole conformance suite against the built plugin, with the
// CPU backend as the reference of the portability checks and the default F32
// tolerances. Only the checks of features this backend does not declare (dropout,
// NEFTune, grouped-query attention, other dtypes) may skip.
func TestConformance(t *testing.T) {
	conformance.Run(t, bin(t, "mypt-backend-gpt"), conformance.Options{ReferencePlugin: bin(t, "mypt-backend-cpu")})
}

type stepMetric struct {
	Event    string  `json:"event"`
	Step     int     `json:"step"`
	Loss     float64 `json:"loss"`
	GradNorm float64 `json:"grad_norm"`
	ValLoss  float64 `json:"val_loss"`
}

// readStepMetrics returns the step and eval lines of a metrics.jsonl file.
func readStepMetrics(t *testing.T, path string) []stepMetric {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []stepMetric
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var m stepMetric
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if m.Event == "step" || m.Event == "eval" {
			out = append(out, m)
		}
	}
	return out
}

// TestTrainMatchesCPU trains the demo chat model (configs/chat_demo.json: LLaMA style,
// tied weights, GPT-2 vocabulary) end to end with `mypt train --backend gpt` and
// `--backend cpu` from the same seed, and compares the curves: 6 steps of 2×48 tokens,
// evaluated every 3 steps (~6 s for the gpt backend on 2 cores, mostly the 50304-wide LM
// head). The two differ by float32 against float64 rounding only: measured ≤ 2e-8
// relative on every train and val loss and ≤ 8.2e-8 on gradient norms; the test allows
// 1e-6 and 1e-5 (the CPU backend's float32 sums split by its thread count, so other
// machines round a little differently).
func TestTrainMatchesCPU(t *testing.T) {
	mypt := bin(t, "mypt")
	run := func(args ...string) {
		t.Helper()
		cmd := exec.Command(mypt, args...)
		cmd.Env = append(os.Environ(), "MYPT_LOG_LEVEL=warn")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("mypt %v: %v\n%s", args, err, out)
		}
	}
	data := filepath.Join(t.TempDir(), "data")
	run("prepare", "--input", "../../../configs/data/chat_demo.jsonl", "--output", data,
		"--tokenization", "gpt2", "--val_split", "0.1")
	curves := map[string][]stepMetric{}
	for _, backend := range []string{"cpu", "gpt"} {
		out := filepath.Join(t.TempDir(), backend)
		run("train", "--config", "../../../configs/chat_demo.json", "--dataset", data, "--output", out,
			"--backend", backend, "--no-progress", "--max_iters", "6", "--batch_size", "2",
			"--eval_interval", "3", "--eval_iters", "2", "--dropout", "0", "--seed", "7")
		curves[backend] = readStepMetrics(t, filepath.Join(out, "metrics.jsonl"))
	}
	cpu, ex := curves["cpu"], curves["gpt"]
	if len(cpu) != len(ex) || len(cpu) != 6+3 {
		t.Fatalf("%d metrics lines on cpu, %d on gpt, want 9 (6 steps, 3 evals)", len(cpu), len(ex))
	}
	rel := func(a, b float64) float64 { return math.Abs(a-b) / math.Abs(a) }
	var worstLoss, worstNorm float64
	for i, c := range cpu {
		x := ex[i]
		if c.Event != x.Event || c.Step != x.Step {
			t.Fatalf("line %d: cpu %s %d, gpt %s %d", i, c.Event, c.Step, x.Event, x.Step)
		}
		d := rel(c.ValLoss, x.ValLoss)
		if c.Event == "step" {
			d = rel(c.Loss, x.Loss)
			if n := rel(c.GradNorm, x.GradNorm); !(n <= 1e-5) {
				t.Errorf("step %d: grad norm cpu %.8g, gpt %.8g (relative %.2g > 1e-5)", c.Step, c.GradNorm, x.GradNorm, n)
			} else {
				worstNorm = max(worstNorm, n)
			}
		}
		if !(d <= 1e-6) {
			t.Errorf("%s %d: cpu loss %.8g/%.8g, gpt %.8g/%.8g (relative %.2g > 1e-6)", c.Event, c.Step, c.Loss, c.ValLoss, x.Loss, x.ValLoss, d)
		}
		worstLoss = max(worstLoss, d)
	}
	t.Logf("cpu vs gpt: losses ≤ %.2g relative, gradient norms ≤ %.2g", worstLoss, worstNorm)
	if first, last := ex[0].ValLoss, ex[len(ex)-1].ValLoss; !(last < first-0.3) {
		t.Errorf("gpt val loss did not fall: %.4f → %.4f", first, last)
	}
}

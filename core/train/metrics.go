package train

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/schollz/progressbar/v3"

	"github.com/mypt/mypt/core/atomicfile"
	"github.com/mypt/mypt/core/tbevents"
)

// metricsFile appends one JSON object per line (each with a single write,
// so a crash leaves whole lines only) and mirrors every numeric field into
// a TensorBoard event file: "train/<key>" for step events, "val/<key>" for
// evals.
type metricsFile struct {
	f  *os.File
	tb *tbevents.Writer
}

func openMetrics(path string) (*metricsFile, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open metrics: %w", err)
	}
	tb, err := tbevents.Create(filepath.Dir(path))
	if err != nil {
		f.Close()
		return nil, err
	}
	return &metricsFile{f: f, tb: tb}, nil
}

func (m *metricsFile) write(v map[string]any) {
	b, err := json.Marshal(v)
	if err != nil {
		return
	}
	_, _ = m.f.Write(append(b, '\n'))
	prefix := map[any]string{"step": "train/", "eval": "val/"}[v["event"]]
	step, _ := v["step"].(int)
	now := time.Now()
	for _, key := range slices.Sorted(maps.Keys(v)) {
		if x, ok := v[key].(float64); ok && prefix != "" && key != "step" {
			_ = m.tb.Scalar(prefix+key, int64(step), x, now)
		}
	}
}

func (m *metricsFile) Close() error {
	return errors.Join(m.f.Close(), m.tb.Close())
}

// progress is the terminal progress bar; a nil writer disables it. When w
// is not a terminal (a log file, CI), it logs a line every 5 % instead.
type progress struct {
	bar   *progressbar.ProgressBar
	w     io.Writer
	log   *slog.Logger
	every int
}

func newProgress(w io.Writer, log *slog.Logger, start, total int) *progress {
	if w == nil {
		return &progress{}
	}
	if f, ok := w.(*os.File); !ok || !isTerminal(f) {
		return &progress{log: log, every: max(1, total/20)}
	}
	bar := progressbar.NewOptions(total,
		progressbar.OptionSetWriter(w),
		progressbar.OptionSetDescription("train"),
		progressbar.OptionShowCount(),
		progressbar.OptionSetPredictTime(true),
		progressbar.OptionShowElapsedTimeOnFinish(),
		progressbar.OptionThrottle(200_000_000),
		progressbar.OptionSetWidth(24),
	)
	_ = bar.Set(start)
	return &progress{bar: bar, w: w}
}

func (p *progress) update(step int, loss, lr, tokPerSec float64) {
	if p.log != nil && step%p.every == 0 {
		p.log.Info("step", "step", step, "loss", fmt.Sprintf("%.4f", loss), "lr", fmt.Sprintf("%.2e", lr),
			"tokens_per_s", fmt.Sprintf("%.0f", tokPerSec))
	}
	if p.bar == nil {
		return
	}
	p.bar.Describe(fmt.Sprintf("loss %.4f lr %.2e %6.0f tok/s", loss, lr, tokPerSec))
	_ = p.bar.Set(step)
}

func (p *progress) finish() {
	if p.bar != nil {
		_ = p.bar.Finish()
		fmt.Fprintln(p.w)
	}
}

func isTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// truncateMetrics drops the lines a resumed run will write again: steps
// after the checkpoint's step and evals after its last logged eval. The
// file is rewritten atomically.
func truncateMetrics(path string, step, evaluatedStep int) error {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read metrics: %w", err)
	}
	var kept []byte
	for _, line := range bytes.SplitAfter(data, []byte("\n")) {
		var ev struct {
			Event string `json:"event"`
			Step  int    `json:"step"`
		}
		if json.Unmarshal(line, &ev) != nil {
			continue // a torn last line from a crash
		}
		if (ev.Event == "step" && ev.Step > step) || (ev.Event == "eval" && ev.Step > evaluatedStep) {
			continue
		}
		kept = append(kept, line...)
	}
	return atomicfile.WriteFile(path, kept, 0o644)
}

package server

import (
	"bufio"
	"encoding/json"
	"fmt"
	"math"
	"os"
)

// runMetrics is what the Training tab plots: [step, value] pairs.
type runMetrics struct {
	Loss    [][2]float64 `json:"loss"`
	LR      [][2]float64 `json:"lr"`
	ValLoss [][2]float64 `json:"val_loss"`
}

// metricsEvent is the part of a metrics.jsonl line the plots use.
type metricsEvent struct {
	Event   string   `json:"event"`
	Step    *float64 `json:"step"`
	Loss    *float64 `json:"loss"`
	LR      *float64 `json:"lr"`
	ValLoss *float64 `json:"val_loss"`
}

// readMetrics reads a run's metrics.jsonl. Lines that do not parse (a line
// being written, an unknown event) are skipped. Step series longer than
// maxPoints are thinned to about maxPoints, keeping the last point.
func readMetrics(path string, maxPoints int) (*runMetrics, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	m := &runMetrics{Loss: [][2]float64{}, LR: [][2]float64{}, ValLoss: [][2]float64{}}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var e metricsEvent
		if json.Unmarshal(sc.Bytes(), &e) != nil || e.Step == nil {
			continue
		}
		step := *e.Step
		switch e.Event {
		case "step":
			if finite(e.Loss) {
				m.Loss = append(m.Loss, [2]float64{step, *e.Loss})
			}
			if finite(e.LR) {
				m.LR = append(m.LR, [2]float64{step, *e.LR})
			}
		case "eval":
			if finite(e.ValLoss) {
				m.ValLoss = append(m.ValLoss, [2]float64{step, *e.ValLoss})
			}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	m.Loss = thin(m.Loss, maxPoints)
	m.LR = thin(m.LR, maxPoints)
	return m, nil
}

func finite(v *float64) bool { return v != nil && !math.IsNaN(*v) && !math.IsInf(*v, 0) }

// thin keeps every k-th point so at most about n remain, plus the last.
func thin(pts [][2]float64, n int) [][2]float64 {
	if n <= 0 || len(pts) <= n {
		return pts
	}
	k := (len(pts) + n - 1) / n
	out := make([][2]float64, 0, n+1)
	for i := 0; i < len(pts); i += k {
		out = append(out, pts[i])
	}
	if last := pts[len(pts)-1]; out[len(out)-1] != last {
		out = append(out, last)
	}
	return out
}

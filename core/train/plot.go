package train

import (
	"bufio"
	"encoding/json"
	"fmt"
	"image/color"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
)

// writeLossPlot renders train and val loss, and each extra eval set's
// eval_<name> loss, from a metrics file into a PNG, written atomically
// beside it.
func writeLossPlot(metricsPath, pngPath string) error {
	f, err := os.Open(metricsPath)
	if err != nil {
		return err
	}
	defer f.Close()
	var train, val plotter.XYs
	sets := map[string]plotter.XYs{} // eval_<name> of the extra eval sets
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var ev struct {
			Event   string   `json:"event"`
			Step    int      `json:"step"`
			Loss    *float64 `json:"loss"`
			ValLoss *float64 `json:"val_loss"`
		}
		if json.Unmarshal(sc.Bytes(), &ev) != nil {
			continue
		}
		switch {
		case ev.Event == "step" && ev.Loss != nil:
			train = append(train, plotter.XY{X: float64(ev.Step), Y: *ev.Loss})
		case ev.Event == "eval" && ev.ValLoss != nil:
			val = append(val, plotter.XY{X: float64(ev.Step), Y: *ev.ValLoss})
		}
		if ev.Event == "eval" {
			var fields map[string]any
			_ = json.Unmarshal(sc.Bytes(), &fields)
			for k, v := range fields {
				if y, ok := v.(float64); ok && strings.HasPrefix(k, "eval_") {
					sets[k] = append(sets[k], plotter.XY{X: float64(ev.Step), Y: y})
				}
			}
		}
	}
	if len(train)+len(val) == 0 {
		return nil
	}
	p := plot.New()
	p.Title.Text = "loss"
	p.X.Label.Text = "step"
	p.Y.Label.Text = "cross-entropy (nats / supervised token)"
	p.Add(plotter.NewGrid())
	type series struct {
		name string
		xys  plotter.XYs
		c    color.RGBA
	}
	all := []series{{"train", train, color.RGBA{B: 200, A: 255}}, {"val", val, color.RGBA{R: 220, A: 255}}}
	palette := []color.RGBA{{G: 150, A: 255}, {R: 230, G: 140, A: 255}, {R: 140, B: 180, A: 255},
		{G: 160, B: 160, A: 255}, {R: 120, G: 120, B: 120, A: 255}, {R: 170, G: 170, A: 255}}
	for i, k := range slices.Sorted(maps.Keys(sets)) {
		all = append(all, series{k, sets[k], palette[i%len(palette)]})
	}
	for _, s := range all {
		if len(s.xys) == 0 {
			continue
		}
		line, err := plotter.NewLine(s.xys)
		if err != nil {
			return fmt.Errorf("plot %s: %w", s.name, err)
		}
		line.Color = s.c
		p.Add(line)
		p.Legend.Add(s.name, line)
	}
	tmp := filepath.Join(filepath.Dir(pngPath), "."+filepath.Base(pngPath)+".tmp.png")
	if err := p.Save(8*vg.Inch, 5*vg.Inch, tmp); err != nil {
		return fmt.Errorf("save loss plot: %w", err)
	}
	return os.Rename(tmp, pngPath)
}

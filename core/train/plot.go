package train

import (
	"bufio"
	"encoding/json"
	"fmt"
	"image/color"
	"os"
	"path/filepath"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
)

// writeLossPlot renders train and val loss from a metrics file into a PNG,
// written atomically beside it.
func writeLossPlot(metricsPath, pngPath string) error {
	f, err := os.Open(metricsPath)
	if err != nil {
		return err
	}
	defer f.Close()
	var train, val plotter.XYs
	sc := bufio.NewScanner(f)
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
	}
	if len(train)+len(val) == 0 {
		return nil
	}
	p := plot.New()
	p.Title.Text = "loss"
	p.X.Label.Text = "step"
	p.Y.Label.Text = "cross-entropy (nats / supervised token)"
	p.Add(plotter.NewGrid())
	for _, s := range []struct {
		name string
		xys  plotter.XYs
		c    color.RGBA
	}{{"train", train, color.RGBA{B: 200, A: 255}}, {"val", val, color.RGBA{R: 220, A: 255}}} {
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

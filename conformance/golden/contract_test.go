package golden

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/mypt/mypt/sdk/modelspec"
)

// TestParamsAreTheContract holds the golden generator's parameter list (gen_golden.py's
// PyTorch module, written into each case's JSON) equal to the model contract of
// sdk/modelspec for every case: the same names with the same shapes, each once, and
// MyPT's weight-decay grouping (1-D tensors and names with "embedding" or "ln" undecayed).
func TestParamsAreTheContract(t *testing.T) {
	cases, err := Load()
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range cases {
		a, err := modelspec.Validate(g.Spec())
		if err != nil {
			t.Fatalf("%s: %v", g.Case, err)
		}
		var want, got []string
		for _, d := range a.Tensors() {
			want = append(want, fmt.Sprint(d.Name, d.Shape))
		}
		for _, p := range g.Model.Params {
			got = append(got, fmt.Sprint(p.Name, p.Shape))
			decay := len(p.Shape) > 1 && !strings.Contains(p.Name, "embedding") && !strings.Contains(p.Name, "ln")
			if p.WeightDecay != decay {
				t.Errorf("%s: %s weight_decay %v, MyPT's grouping says %v", g.Case, p.Name, p.WeightDecay, decay)
			}
		}
		slices.Sort(want)
		slices.Sort(got)
		if !slices.Equal(got, want) {
			t.Errorf("%s: generator's parameters\n  %v\nmodel contract's\n  %v", g.Case, got, want)
		}
	}
}

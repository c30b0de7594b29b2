package backendkit_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/mypt/mypt/sdk"
	"github.com/mypt/mypt/sdk/modelspec"
	pb "github.com/mypt/mypt/sdk/proto/backendv1"
)

// TestPluginAuthorsSnippet extracts the Go skeleton of docs/PLUGIN_AUTHORS.md, builds it as
// a plugin (through an overlay, so the tree is not written to) and drives it through a real
// plugin process: the documented code compiles against today's SDK and the kit serves it.
func TestPluginAuthorsSnippet(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a plugin; skipped with -short")
	}
	doc, err := os.ReadFile("../../docs/PLUGIN_AUTHORS.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(doc), "```go\n")
	code, _, ok2 := strings.Cut(rest, "```")
	if !ok || !ok2 {
		t.Fatal("docs/PLUGIN_AUTHORS.md has no ```go block")
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "main.go")
	if err := os.WriteFile(src, []byte(code), 0o644); err != nil {
		t.Fatal(err)
	}
	pkg, err := filepath.Abs("internal/docsnippet")
	if err != nil {
		t.Fatal(err)
	}
	overlay, _ := json.Marshal(map[string]any{"Replace": map[string]string{filepath.Join(pkg, "main.go"): src}})
	if err := os.WriteFile(filepath.Join(dir, "overlay.json"), overlay, 0o644); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "mypt-backend-mine")
	build := exec.Command("go", "build", "-overlay", filepath.Join(dir, "overlay.json"), "-o", bin, "./internal/docsnippet")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("the snippet of docs/PLUGIN_AUTHORS.md does not build: %v\n%s\n%s", err, out, code)
	}

	c, err := sdk.Start(t.Context(), bin, sdk.StartOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	info, err := c.GetInfo(t.Context(), nil)
	if err != nil || info.GetName() != "mine" {
		t.Fatalf("GetInfo: %v %v", info, err)
	}
	a := modelspec.Arch{VocabSize: 11, BlockSize: 4, NLayer: 1, NHead: 2, NEmbd: 4, MLPHidden: 16, LearnedPos: true,
		LayerNorm: true, LMHeadBias: true, NormEps: 1e-5}
	spec := a.Spec(nil)
	if _, err := c.Configure(t.Context(), &pb.ConfigureRequest{Model: spec, Optimizer: &pb.OptimizerSpec{Beta1: 0.9, Beta2: 0.95, Eps: 1e-8}}); err != nil {
		t.Fatal(err)
	}
	var tensors []*sdk.Tensor
	for _, p := range spec.Params {
		n, _ := sdk.NumElements(p.Shape)
		tensors = append(tensors, sdk.F32Tensor(p.Name, pb.TensorRole_TENSOR_ROLE_PARAM, p.Shape, make([]float32, n)))
	}
	if _, err := c.SetState(t.Context(), sdk.NewTensorList(0, tensors...)); err != nil {
		t.Fatal(err)
	}
	// the kit refuses what the skeleton does not declare, and reports its unwritten maths
	_, err = c.ForwardBackward(t.Context(), &pb.ForwardBackwardRequest{})
	if sdk.Code(err) != codes.Unimplemented {
		t.Errorf("ForwardBackward on the skeleton: %v, want UNIMPLEMENTED", err)
	}
	batch := &pb.Batch{BatchSize: 1, SeqLen: 2, Tokens: []int32{1, 2}, Targets: []int32{2, 3}, LossWeights: []float32{1, 1}}
	if _, err := c.Evaluate(t.Context(), &pb.EvaluateRequest{Batch: batch}); sdk.Code(err) != codes.Internal || !strings.Contains(err.Error(), "yours to write") {
		t.Errorf("Evaluate on the skeleton: %v, want its own INTERNAL error", err)
	}
}

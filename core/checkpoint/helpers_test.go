package checkpoint

import (
	"encoding/binary"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mypt/mypt/sdk"
	pb "github.com/mypt/mypt/sdk/proto/backendv1"
)

const (
	f32  = pb.DType_DTYPE_F32
	bf16 = pb.DType_DTYPE_BF16
	f16  = pb.DType_DTYPE_F16

	roleParam = pb.TensorRole_TENSOR_ROLE_PARAM
	roleM     = pb.TensorRole_TENSOR_ROLE_ADAM_M
	roleV     = pb.TensorRole_TENSOR_ROLE_ADAM_V
)

// tinyGPT is the layout of reference.py's tiny_gpt_params.
func tinyGPT(tied, moments bool, dtype pb.DType) Layout {
	const V, C, T, H = 16, 8, 4, 32
	type p struct {
		name  string
		shape []int64
	}
	ps := []p{
		{"token_embedding_table.weight", []int64{V, C}},
		{"position_embedding_table.weight", []int64{T, C}},
		{"blocks.0.ln1.weight", []int64{C}}, {"blocks.0.ln1.bias", []int64{C}},
		{"blocks.0.sa.qkv.weight", []int64{3 * C, C}},
		{"blocks.0.sa.proj.weight", []int64{C, C}},
		{"blocks.0.ln2.weight", []int64{C}}, {"blocks.0.ln2.bias", []int64{C}},
		{"blocks.0.fwd.net.0.weight", []int64{H, C}}, {"blocks.0.fwd.net.0.bias", []int64{H}},
		{"blocks.0.fwd.net.2.weight", []int64{C, H}}, {"blocks.0.fwd.net.2.bias", []int64{C}},
		{"ln_f.weight", []int64{C}}, {"ln_f.bias", []int64{C}},
	}
	if !tied {
		ps = append(ps, p{"lm_head.weight", []int64{V, C}})
	}
	ps = append(ps, p{"lm_head.bias", []int64{V}})
	spec := &pb.ModelSpec{TieWeights: tied}
	for _, x := range ps {
		spec.Params = append(spec.Params, &pb.ParamSpec{Name: x.name, Shape: x.shape, Dtype: dtype})
	}
	return LayoutFromModelSpec(spec, moments)
}

// fillTensors makes deterministic F32 data for every tensor of l.
func fillTensors(t *testing.T, l Layout, seed uint64) []*sdk.Tensor {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, 1))
	var out []*sdk.Tensor
	for _, s := range l.Tensors {
		n, err := sdk.NumElements(s.Shape)
		if err != nil {
			t.Fatal(err)
		}
		v := make([]float32, n)
		for i := range v {
			v[i] = float32(rng.NormFloat64())
		}
		tt := sdk.F32Tensor(s.Name, s.Role, s.Shape, v)
		if s.DType != f32 {
			if tt.Data, err = convertData(tt.Data, f32, s.DType); err != nil {
				t.Fatal(err)
			}
			tt.DType = s.DType
		}
		out = append(out, tt)
	}
	return out
}

type testConfig struct {
	NLayer     int  `json:"n_layer"`
	NEmbd      int  `json:"n_embd"`
	TieWeights bool `json:"tie_weights"`
}

type testState struct {
	Step           int     `json:"step"`
	OptimizerSteps uint64  `json:"optimizer_steps,omitempty"`
	BestValLoss    float64 `json:"best_val_loss"`
	Sampler        struct {
		Epoch  int `json:"epoch"`
		Cursor int `json:"cursor"`
	} `json:"sampler"`
}

// writeCheckpoint writes tensors (shuffled) and commits with step as the
// training step.
func writeCheckpoint(t *testing.T, dir string, l Layout, tensors []*sdk.Tensor, step int, opts ...Option) {
	t.Helper()
	w, err := NewWriter(dir, l, opts...)
	if err != nil {
		t.Fatal(err)
	}
	feed(t, w, tensors, uint64(step))
	if err := w.Commit(testMeta(step)); err != nil {
		t.Fatal(err)
	}
}

func feed(t *testing.T, w *Writer, tensors []*sdk.Tensor, optSteps uint64) {
	t.Helper()
	if err := w.WriteHeader(&pb.StateHeader{OptimizerSteps: optSteps, TensorCount: uint32(len(tensors))}); err != nil {
		t.Fatal(err)
	}
	order := rand.New(rand.NewPCG(optSteps, 9)).Perm(len(tensors))
	for _, i := range order {
		if err := w.WriteTensor(tensors[i]); err != nil {
			t.Fatal(err)
		}
	}
}

func testMeta(step int) Meta {
	st := testState{Step: step, BestValLoss: 2.25}
	st.Sampler.Epoch, st.Sampler.Cursor = 1, 17
	return Meta{
		Config:        testConfig{NLayer: 1, NEmbd: 8, TieWeights: true},
		Tokenizer:     []byte(`{"token_kind":"gpt2","chars":null}`),
		TrainingState: st,
	}
}

// leftovers lists hidden sibling directories a write may leave.
func leftovers(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Dir(dir))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "."+filepath.Base(dir)+".") {
			out = append(out, e.Name())
		}
	}
	return out
}

// assertContents opens dir and checks every tensor of want bit for bit.
func assertContents(t *testing.T, dir string, l Layout, want []*sdk.Tensor, step int) {
	t.Helper()
	c, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var st testState
	if err := c.TrainingState(&st); err != nil {
		t.Fatal(err)
	}
	if st.Step != step {
		t.Fatalf("%s: step %d, want %d", dir, st.Step, step)
	}
	r, err := c.NewStateReader(l)
	if err != nil {
		t.Fatal(err)
	}
	for i := range want {
		got, err := r.Next()
		if err != nil {
			t.Fatal(err)
		}
		if got.Name != want[i].Name || got.Role != want[i].Role || string(got.Data) != string(want[i].Data) {
			t.Fatalf("%s: tensor %d (%s) differs from what was written", dir, i, want[i].Name)
		}
	}
}

func u32s(b []byte) []uint32 {
	out := make([]uint32, len(b)/4)
	for i := range out {
		out[i] = binary.LittleEndian.Uint32(b[4*i:])
	}
	return out
}

func isNaN32(bits uint32) bool { f := math.Float32frombits(bits); return f != f }

// referencePython returns a python3 with torch and numpy, or skips.
func referencePython(t *testing.T) string {
	t.Helper()
	for _, p := range []string{os.Getenv("MYPT_PYTHON"), "/usr/bin/python3", "python3"} {
		if p == "" {
			continue
		}
		if err := exec.Command(p, "-c", "import torch, numpy").Run(); err == nil {
			return p
		}
	}
	t.Skip("no python3 with torch and numpy (apt-get install python3-torch python3-numpy, or set MYPT_PYTHON); the committed-fixture tests still ran")
	return ""
}

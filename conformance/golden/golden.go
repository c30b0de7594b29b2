// Package golden reads the PyTorch golden vectors in this folder (README.md; written by
// gen_golden.py and committed, so CI needs no torch): for each case its model, batch,
// expected logits, losses and gradients, AdamW steps and loss trajectory. The files are
// embedded, so the conformance suite and the backends' tests read the same vectors from
// any directory; Cases and Open serve those tests.
package golden

import (
	"context"
	"embed"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"strings"
	"testing"

	"github.com/mypt/mypt/sdk"
	pb "github.com/mypt/mypt/sdk/proto/backendv1"
)

//go:embed *.json *.safetensors
var files embed.FS

// Case is one golden vector file pair, <case>.json and <case>.safetensors (README.md
// describes every field).
type Case struct {
	// Case is the case's name, which is also its file name.
	Case  string `json:"case"`
	Model struct {
		VocabSize            uint32  `json:"vocab_size"`
		BlockSize            uint32  `json:"block_size"`
		NLayer               uint32  `json:"n_layer"`
		NHead                uint32  `json:"n_head"`
		NEmbd                uint32  `json:"n_embd"`
		MLPHidden            uint32  `json:"mlp_hidden"`
		PosEncoding          string  `json:"pos_encoding"`
		MLPType              string  `json:"mlp_type"`
		NormType             string  `json:"norm_type"`
		Bias                 bool    `json:"bias"`
		TieWeights           bool    `json:"tie_weights"`
		RopeTheta            float64 `json:"rope_theta"`
		RopeScale            float64 `json:"rope_scale"`
		NormEps              float64 `json:"norm_eps"`
		Dropout              float64 `json:"dropout"`
		NeftuneAlpha         float64 `json:"neftune_alpha"`
		SegmentPositionReset bool    `json:"segment_position_reset"`
		Params               []struct {
			Name        string  `json:"name"`
			Shape       []int64 `json:"shape"`
			WeightDecay bool    `json:"weight_decay"`
		} `json:"params"`
	} `json:"model"`
	Optimizer struct {
		Beta1 float64 `json:"beta1"`
		Beta2 float64 `json:"beta2"`
		Eps   float64 `json:"eps"`
	} `json:"optimizer"`
	Batch struct {
		BatchSize uint32 `json:"batch_size"`
		SeqLen    uint32 `json:"seq_len"`
		Packed    bool   `json:"packed"`
		Weights   string `json:"weights"`
	} `json:"batch"`
	Loss       float64 `json:"loss"`
	LossSum    float64 `json:"loss_sum"`
	WeightSum  float64 `json:"weight_sum"`
	AdamW      Steps   `json:"adamw"`
	Trajectory Steps   `json:"trajectory"`

	tensors map[string]tensor
}

// Steps is a training loop recorded in a case: ForwardBackward on the case's batch with
// GradScale, then OptimizerStep, Steps times.
type Steps struct {
	LearningRate float64   `json:"learning_rate"`
	WeightDecay  float64   `json:"weight_decay"`
	ClipNorm     float64   `json:"clip_norm"`
	Steps        int       `json:"steps"`
	GradNorms    []float64 `json:"grad_norms"`
	Losses       []float64 `json:"losses"`
	FinalLoss    float64   `json:"final_loss"`
}

type tensor struct {
	f32 []float32
	i32 []int32
}

// Load parses the embedded cases, in name order. Every call returns new Cases, so
// callers may modify them.
func Load() ([]*Case, error) {
	entries, err := files.ReadDir(".")
	if err != nil {
		return nil, err
	}
	var cases []*Case
	for _, f := range entries {
		name, ok := strings.CutSuffix(f.Name(), ".json")
		if !ok {
			continue
		}
		raw, err := files.ReadFile(f.Name())
		if err != nil {
			return nil, err
		}
		g := &Case{}
		if err := json.Unmarshal(raw, g); err != nil {
			return nil, fmt.Errorf("golden/%s: %w", f.Name(), err)
		}
		st, err := files.ReadFile(name + ".safetensors")
		if err != nil {
			return nil, err
		}
		if g.tensors, err = parseSafetensors(st); err != nil {
			return nil, fmt.Errorf("golden/%s.safetensors: %w", name, err)
		}
		for _, k := range []string{"batch.tokens", "batch.targets", "batch.loss_weights", "logits"} {
			if _, ok := g.tensors[k]; !ok {
				return nil, fmt.Errorf("golden/%s.safetensors: no tensor %q", name, k)
			}
		}
		cases = append(cases, g)
	}
	if len(cases) == 0 {
		return nil, fmt.Errorf("no golden vectors embedded")
	}
	sort.Slice(cases, func(i, j int) bool { return cases[i].Case < cases[j].Case })
	return cases, nil
}

// Cases is Load for tests: the cases, new on every call (a test may modify
// them), or t fails.
func Cases(t testing.TB) []*Case {
	t.Helper()
	cases, err := Load()
	if err != nil {
		t.Fatalf("golden vectors: %v", err)
	}
	return cases
}

// Open configures b for case g in a test — g's model and optimizer,
// MaxBatchSize its batch size, then edit applied to the request — loads g's
// initial parameters, and shuts b down when the test ends.
func Open[B sdk.Backend](t testing.TB, g *Case, b B, edit ...func(*pb.ConfigureRequest)) B {
	t.Helper()
	ctx := context.Background()
	req := &pb.ConfigureRequest{Model: g.Spec(), Optimizer: g.OptimizerSpec(), MaxBatchSize: g.Batch.BatchSize}
	for _, e := range edit {
		e(req)
	}
	if _, err := b.Configure(ctx, req); err != nil {
		t.Fatalf("%s: Configure: %v", g.Case, err)
	}
	if _, err := b.SetState(ctx, g.InitState()); err != nil {
		t.Fatalf("%s: SetState: %v", g.Case, err)
	}
	t.Cleanup(func() { _ = b.Shutdown(ctx) })
	return b
}

// parseSafetensors reads the F32 and I32 tensors gen_golden.py writes.
func parseSafetensors(raw []byte) (map[string]tensor, error) {
	if len(raw) < 8 {
		return nil, fmt.Errorf("too short")
	}
	hlen := binary.LittleEndian.Uint64(raw)
	if hlen > uint64(len(raw)-8) {
		return nil, fmt.Errorf("header length %d runs past the file", hlen)
	}
	var hdr map[string]json.RawMessage
	if err := json.Unmarshal(raw[8:8+hlen], &hdr); err != nil {
		return nil, fmt.Errorf("header: %w", err)
	}
	body := raw[8+hlen:]
	out := map[string]tensor{}
	for name, msg := range hdr {
		if name == "__metadata__" {
			continue
		}
		var h struct {
			Dtype       string  `json:"dtype"`
			Shape       []int64 `json:"shape"`
			DataOffsets [2]int  `json:"data_offsets"`
		}
		if err := json.Unmarshal(msg, &h); err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		if h.DataOffsets[0] < 0 || h.DataOffsets[1] > len(body) || h.DataOffsets[0] > h.DataOffsets[1] {
			return nil, fmt.Errorf("%s: bad data offsets %v", name, h.DataOffsets)
		}
		b := body[h.DataOffsets[0]:h.DataOffsets[1]]
		var st tensor
		switch h.Dtype {
		case "F32":
			st.f32 = make([]float32, len(b)/4)
			for i := range st.f32 {
				st.f32[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
			}
		case "I32":
			st.i32 = make([]int32, len(b)/4)
			for i := range st.i32 {
				st.i32[i] = int32(binary.LittleEndian.Uint32(b[4*i:]))
			}
		default:
			return nil, fmt.Errorf("%s: unsupported dtype %s", name, h.Dtype)
		}
		out[name] = st
	}
	return out, nil
}

// F32 returns the values of the case's F32 tensor name ("logits", "grad.<param>",
// "init.<param>", …), nil if there is none.
func (g *Case) F32(name string) []float32 { return g.tensors[name].f32 }

// I32 returns the values of the case's I32 tensor name ("batch.tokens", …), nil if there
// is none.
func (g *Case) I32(name string) []int32 { return g.tensors[name].i32 }

// Logits are Evaluate's expected logits, [B,T,V].
func (g *Case) Logits() []float32 { return g.F32("logits") }

// PosEncoding is the model's position encoding.
func (g *Case) PosEncoding() pb.PosEncoding {
	if g.Model.PosEncoding == "rope" {
		return pb.PosEncoding_POS_ENCODING_ROPE
	}
	return pb.PosEncoding_POS_ENCODING_LEARNED
}

// MLPType is the model's MLP.
func (g *Case) MLPType() pb.MLPType {
	if g.Model.MLPType == "swiglu" {
		return pb.MLPType_MLP_TYPE_SWIGLU
	}
	return pb.MLPType_MLP_TYPE_GELU
}

// NormType is the model's normalisation.
func (g *Case) NormType() pb.NormType {
	if g.Model.NormType == "rmsnorm" {
		return pb.NormType_NORM_TYPE_RMSNORM
	}
	return pb.NormType_NORM_TYPE_LAYERNORM
}

// Spec is the case's ModelSpec (F32 master weights), built anew from Model.
func (g *Case) Spec() *pb.ModelSpec {
	m := g.Model
	s := &pb.ModelSpec{VocabSize: m.VocabSize, BlockSize: m.BlockSize, NLayer: m.NLayer, NHead: m.NHead,
		NEmbd: m.NEmbd, MlpHidden: m.MLPHidden, Bias: m.Bias, TieWeights: m.TieWeights, RopeTheta: m.RopeTheta,
		RopeScale: m.RopeScale, NormEps: m.NormEps, Dropout: m.Dropout, NeftuneAlpha: m.NeftuneAlpha,
		SegmentPositionReset: m.SegmentPositionReset,
		PosEncoding:          g.PosEncoding(), MlpType: g.MLPType(), NormType: g.NormType()}
	for _, p := range m.Params {
		s.Params = append(s.Params, &pb.ParamSpec{Name: p.Name, Shape: p.Shape, Dtype: pb.DType_DTYPE_F32, WeightDecay: p.WeightDecay})
	}
	return s
}

// OptimizerSpec is the case's AdamW betas and eps.
func (g *Case) OptimizerSpec() *pb.OptimizerSpec {
	return &pb.OptimizerSpec{Beta1: g.Optimizer.Beta1, Beta2: g.Optimizer.Beta2, Eps: g.Optimizer.Eps}
}

// NewBatch returns a fresh copy of the case's batch (callers may modify it).
func (g *Case) NewBatch() *pb.Batch {
	b := &pb.Batch{BatchSize: g.Batch.BatchSize, SeqLen: g.Batch.SeqLen,
		Tokens:      append([]int32(nil), g.I32("batch.tokens")...),
		Targets:     append([]int32(nil), g.I32("batch.targets")...),
		LossWeights: append([]float32(nil), g.F32("batch.loss_weights")...)}
	if s, ok := g.tensors["batch.segment_ids"]; ok {
		b.SegmentIds = append([]int32(nil), s.i32...)
	}
	return b
}

// GradScale is the host's scale for one optimizer step over the case's batch,
// 1/max(Σw, 1).
func (g *Case) GradScale() float32 { return float32(1 / math.Max(g.WeightSum, 1)) }

// InitState is the case's initial parameters as a SetState stream.
func (g *Case) InitState() *sdk.TensorList {
	var ts []*sdk.Tensor
	for _, p := range g.Model.Params {
		ts = append(ts, sdk.F32Tensor(p.Name, pb.TensorRole_TENSOR_ROLE_PARAM, p.Shape, g.F32("init."+p.Name)))
	}
	return sdk.NewTensorList(0, ts...)
}

// HasParam reports whether the model has a parameter called name.
func (g *Case) HasParam(name string) bool {
	for _, p := range g.Model.Params {
		if p.Name == name {
			return true
		}
	}
	return false
}

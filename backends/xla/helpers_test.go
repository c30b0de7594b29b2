package xla

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/mypt/mypt/sdk"
	pb "github.com/mypt/mypt/sdk/proto/backendv1"
	"github.com/mypt/mypt/sdk/sdktesting"
)

// ---- safetensors (F32 and I32 only: what gen_golden.py writes)

type stTensor struct {
	shape []int64
	f32   []float32
	i32   []int32
}

func readSafetensors(t testing.TB, path string) map[string]stTensor {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	hlen := binary.LittleEndian.Uint64(raw)
	var hdr map[string]struct {
		Dtype       string  `json:"dtype"`
		Shape       []int64 `json:"shape"`
		DataOffsets [2]int  `json:"data_offsets"`
	}
	if err := json.Unmarshal(raw[8:8+hlen], &hdr); err != nil {
		t.Fatalf("%s: header: %v", path, err)
	}
	body := raw[8+hlen:]
	out := map[string]stTensor{}
	for name, h := range hdr {
		if name == "__metadata__" {
			continue
		}
		b := body[h.DataOffsets[0]:h.DataOffsets[1]]
		st := stTensor{shape: h.Shape}
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
			t.Fatalf("%s: %s: unsupported dtype %s", path, name, h.Dtype)
		}
		out[name] = st
	}
	return out
}

// ---- golden case metadata (see conformance/golden/README.md)

type goldenCase struct {
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
	} `json:"batch"`
	Loss      float64 `json:"loss"`
	LossSum   float64 `json:"loss_sum"`
	WeightSum float64 `json:"weight_sum"`
	AdamW     struct {
		LearningRate float64   `json:"learning_rate"`
		WeightDecay  float64   `json:"weight_decay"`
		ClipNorm     float64   `json:"clip_norm"`
		Steps        int       `json:"steps"`
		GradNorms    []float64 `json:"grad_norms"`
		Losses       []float64 `json:"losses"`
	} `json:"adamw"`
	Trajectory struct {
		LearningRate float64   `json:"learning_rate"`
		WeightDecay  float64   `json:"weight_decay"`
		ClipNorm     float64   `json:"clip_norm"`
		Steps        int       `json:"steps"`
		Losses       []float64 `json:"losses"`
		GradNorms    []float64 `json:"grad_norms"`
		FinalLoss    float64   `json:"final_loss"`
	} `json:"trajectory"`

	tensors map[string]stTensor
}

const goldenDir = "../../conformance/golden"

func loadGoldenCases(t testing.TB) []*goldenCase {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(goldenDir, "*.json"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no golden vectors in %s (%v)", goldenDir, err)
	}
	var cases []*goldenCase
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		g := &goldenCase{}
		if err := json.Unmarshal(raw, g); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		g.tensors = readSafetensors(t, f[:len(f)-len(".json")]+".safetensors")
		cases = append(cases, g)
	}
	return cases
}

func (g *goldenCase) spec() *pb.ModelSpec {
	m := g.Model
	s := &pb.ModelSpec{VocabSize: m.VocabSize, BlockSize: m.BlockSize, NLayer: m.NLayer, NHead: m.NHead,
		NEmbd: m.NEmbd, MlpHidden: m.MLPHidden, Bias: m.Bias, TieWeights: m.TieWeights, RopeTheta: m.RopeTheta,
		RopeScale: m.RopeScale, NormEps: m.NormEps, Dropout: m.Dropout, NeftuneAlpha: m.NeftuneAlpha,
		SegmentPositionReset: m.SegmentPositionReset}
	s.PosEncoding = map[string]pb.PosEncoding{"learned": pb.PosEncoding_POS_ENCODING_LEARNED, "rope": pb.PosEncoding_POS_ENCODING_ROPE}[m.PosEncoding]
	s.MlpType = map[string]pb.MLPType{"gelu": pb.MLPType_MLP_TYPE_GELU, "swiglu": pb.MLPType_MLP_TYPE_SWIGLU}[m.MLPType]
	s.NormType = map[string]pb.NormType{"layernorm": pb.NormType_NORM_TYPE_LAYERNORM, "rmsnorm": pb.NormType_NORM_TYPE_RMSNORM}[m.NormType]
	for _, p := range m.Params {
		s.Params = append(s.Params, &pb.ParamSpec{Name: p.Name, Shape: p.Shape, Dtype: pb.DType_DTYPE_F32, WeightDecay: p.WeightDecay})
	}
	return s
}

func (g *goldenCase) batch() *pb.Batch {
	b := &pb.Batch{BatchSize: g.Batch.BatchSize, SeqLen: g.Batch.SeqLen,
		Tokens: g.tensors["batch.tokens"].i32, Targets: g.tensors["batch.targets"].i32,
		LossWeights: g.tensors["batch.loss_weights"].f32}
	if s, ok := g.tensors["batch.segment_ids"]; ok {
		b.SegmentIds = s.i32
	}
	return b
}

// ---- in-process state streams

type sliceReader struct {
	header  *pb.StateHeader
	tensors []*sdk.Tensor
}

func (r *sliceReader) Header() *pb.StateHeader { return r.header }
func (r *sliceReader) Next() (*sdk.Tensor, error) {
	if len(r.tensors) == 0 {
		return nil, io.EOF
	}
	t := r.tensors[0]
	r.tensors = r.tensors[1:]
	return t, nil
}

type mapWriter struct {
	header  *pb.StateHeader
	tensors map[string][]float32 // "role/name"
}

func (w *mapWriter) WriteHeader(h *pb.StateHeader) error { w.header = h; return nil }
func (w *mapWriter) WriteTensor(t *sdk.Tensor) error {
	if w.tensors == nil {
		w.tensors = map[string][]float32{}
	}
	f, err := decodeF32(t.Data, len(t.Data)/elemSize(t.DType), t.DType)
	if err != nil {
		return err
	}
	w.tensors[fmt.Sprintf("%v/%s", t.Role, t.Name)] = f
	return nil
}

func f32Tensor(name string, role pb.TensorRole, shape []int64, v []float32) *sdk.Tensor {
	return &sdk.Tensor{Name: name, Role: role, Shape: shape, DType: pb.DType_DTYPE_F32, Data: encodeF32(v, pb.DType_DTYPE_F32)}
}

// newGoldenBackend configures an xla backend (simplego engine), reached over a real
// in-process gRPC connection, for g and loads its initial parameters.
func newGoldenBackend(t testing.TB, g *goldenCase) *sdk.Client {
	t.Helper()
	b := sdktesting.Connect(t, New(Options{}))
	ctx := context.Background()
	_, err := b.Configure(ctx, &pb.ConfigureRequest{Model: g.spec(),
		Optimizer:    &pb.OptimizerSpec{Beta1: g.Optimizer.Beta1, Beta2: g.Optimizer.Beta2, Eps: g.Optimizer.Eps},
		MaxBatchSize: g.Batch.BatchSize})
	if err != nil {
		t.Fatalf("%s: Configure: %v", g.Case, err)
	}
	r := &sliceReader{header: &pb.StateHeader{}}
	for _, p := range g.Model.Params {
		r.tensors = append(r.tensors, f32Tensor(p.Name, pb.TensorRole_TENSOR_ROLE_PARAM, p.Shape, g.tensors["init."+p.Name].f32))
	}
	r.header.TensorCount = uint32(len(r.tensors))
	if _, err := b.SetState(ctx, r); err != nil {
		t.Fatalf("%s: SetState: %v", g.Case, err)
	}
	t.Cleanup(func() { _ = b.Shutdown(ctx) })
	return b
}

func getState(t testing.TB, b api, roles ...pb.TensorRole) map[string][]float32 {
	t.Helper()
	w := &mapWriter{}
	if err := b.GetState(context.Background(), &pb.GetStateRequest{Roles: roles}, w); err != nil {
		t.Fatal(err)
	}
	return w.tensors
}

// closeness is max |got−want| / (atol + rtol·|want|) over the elements: ≤ 1 passes.
func closeness(got, want []float32, atol, rtol float64) (worst float64, at int, maxAbs float64) {
	for i := range want {
		d := math.Abs(float64(got[i]) - float64(want[i]))
		if math.IsNaN(d) {
			return math.Inf(1), i, d
		}
		maxAbs = max(maxAbs, d)
		if r := d / (atol + rtol*math.Abs(float64(want[i]))); r > worst {
			worst, at = r, i
		}
	}
	return worst, at, maxAbs
}

func assertClose(t testing.TB, what string, got, want []float32, atol, rtol float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d values, want %d", what, len(got), len(want))
	}
	worst, at, maxAbs := closeness(got, want, atol, rtol)
	if worst > 1 {
		t.Errorf("%s: [%d] = %v, want %v (max abs err %.3g, atol %g rtol %g)", what, at, got[at], want[at], maxAbs, atol, rtol)
	}
	if testing.Verbose() {
		t.Logf("%s: max abs err %.3g (tolerance ratio %.3f)", what, maxAbs, worst)
	}
}

// api is what the tests call: an *sdk.Client (the xla backend over gRPC) or the CPU
// reference backend in process.
type api interface {
	Configure(ctx context.Context, req *pb.ConfigureRequest) (*pb.ConfigureResponse, error)
	SetState(ctx context.Context, r sdk.StateReader) (*pb.SetStateResponse, error)
	GetState(ctx context.Context, req *pb.GetStateRequest, w sdk.StateWriter) error
	ForwardBackward(ctx context.Context, req *pb.ForwardBackwardRequest) (*pb.ForwardBackwardResponse, error)
	OptimizerStep(ctx context.Context, req *pb.OptimizerStepRequest) (*pb.OptimizerStepResponse, error)
	Evaluate(ctx context.Context, req *pb.EvaluateRequest) (*pb.EvaluateResponse, error)
	Prefill(ctx context.Context, req *pb.PrefillRequest) (*pb.PrefillResponse, error)
	Decode(ctx context.Context, req *pb.DecodeRequest) (*pb.DecodeResponse, error)
}

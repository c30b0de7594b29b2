package conformance

import (
	"embed"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"path"
	"sort"
	"strings"
	"sync"

	"github.com/mypt/mypt/sdk"
	pb "github.com/mypt/mypt/sdk/proto/backendv1"
)

// The PyTorch golden vectors (golden/README.md) travel inside the package, so
// `mypt conformance` works from any directory.
//
//go:embed golden/*.json golden/*.safetensors
var goldenFS embed.FS

// goldenCase is one golden vector file pair: golden/<case>.json and
// golden/<case>.safetensors (see golden/README.md for every field).
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
		Weights   string `json:"weights"`
	} `json:"batch"`
	Loss      float64   `json:"loss"`
	LossSum   float64   `json:"loss_sum"`
	WeightSum float64   `json:"weight_sum"`
	AdamW     stepsSpec `json:"adamw"`
	Traj      stepsSpec `json:"trajectory"`

	tensors map[string]stTensor
}

// stepsSpec is a training loop recorded in a golden case.
type stepsSpec struct {
	LearningRate float64   `json:"learning_rate"`
	WeightDecay  float64   `json:"weight_decay"`
	ClipNorm     float64   `json:"clip_norm"`
	Steps        int       `json:"steps"`
	GradNorms    []float64 `json:"grad_norms"`
	Losses       []float64 `json:"losses"`
	FinalLoss    float64   `json:"final_loss"`
}

type stTensor struct {
	shape []int64
	f32   []float32
	i32   []int32
}

var (
	goldenOnce  sync.Once
	goldenCases []*goldenCase
	goldenErr   error
)

// loadGolden parses the embedded golden vectors once.
func loadGolden() ([]*goldenCase, error) {
	goldenOnce.Do(func() { goldenCases, goldenErr = parseGolden() })
	return goldenCases, goldenErr
}

func parseGolden() ([]*goldenCase, error) {
	files, err := goldenFS.ReadDir("golden")
	if err != nil {
		return nil, err
	}
	var cases []*goldenCase
	for _, f := range files {
		name, ok := strings.CutSuffix(f.Name(), ".json")
		if !ok {
			continue
		}
		raw, err := goldenFS.ReadFile(path.Join("golden", f.Name()))
		if err != nil {
			return nil, err
		}
		g := &goldenCase{}
		if err := json.Unmarshal(raw, g); err != nil {
			return nil, fmt.Errorf("golden/%s: %w", f.Name(), err)
		}
		st, err := goldenFS.ReadFile(path.Join("golden", name+".safetensors"))
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

// parseSafetensors reads the F32 and I32 tensors gen_golden.py writes.
func parseSafetensors(raw []byte) (map[string]stTensor, error) {
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
	out := map[string]stTensor{}
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
			return nil, fmt.Errorf("%s: unsupported dtype %s", name, h.Dtype)
		}
		out[name] = st
	}
	return out, nil
}

func (g *goldenCase) posEncoding() pb.PosEncoding {
	if g.Model.PosEncoding == "rope" {
		return pb.PosEncoding_POS_ENCODING_ROPE
	}
	return pb.PosEncoding_POS_ENCODING_LEARNED
}

func (g *goldenCase) mlpType() pb.MLPType {
	if g.Model.MLPType == "swiglu" {
		return pb.MLPType_MLP_TYPE_SWIGLU
	}
	return pb.MLPType_MLP_TYPE_GELU
}

func (g *goldenCase) normType() pb.NormType {
	if g.Model.NormType == "rmsnorm" {
		return pb.NormType_NORM_TYPE_RMSNORM
	}
	return pb.NormType_NORM_TYPE_LAYERNORM
}

// complexity orders cases for checks that need just one: plain batches
// first, then weighted, then packed.
func (g *goldenCase) complexity() int {
	n := 0
	if g.Batch.Packed {
		n += 2
	}
	if g.Batch.Weights != "ones" {
		n++
	}
	return n
}

// spec is the case's ModelSpec (F32 master weights).
func (g *goldenCase) spec() *pb.ModelSpec {
	m := g.Model
	s := &pb.ModelSpec{VocabSize: m.VocabSize, BlockSize: m.BlockSize, NLayer: m.NLayer, NHead: m.NHead,
		NEmbd: m.NEmbd, MlpHidden: m.MLPHidden, Bias: m.Bias, TieWeights: m.TieWeights, RopeTheta: m.RopeTheta,
		RopeScale: m.RopeScale, NormEps: m.NormEps, Dropout: m.Dropout, NeftuneAlpha: m.NeftuneAlpha,
		SegmentPositionReset: m.SegmentPositionReset,
		PosEncoding:          g.posEncoding(), MlpType: g.mlpType(), NormType: g.normType()}
	for _, p := range m.Params {
		s.Params = append(s.Params, &pb.ParamSpec{Name: p.Name, Shape: p.Shape, Dtype: pb.DType_DTYPE_F32, WeightDecay: p.WeightDecay})
	}
	return s
}

func (g *goldenCase) optimizer() *pb.OptimizerSpec {
	return &pb.OptimizerSpec{Beta1: g.Optimizer.Beta1, Beta2: g.Optimizer.Beta2, Eps: g.Optimizer.Eps}
}

// batch returns a fresh copy of the case's batch (callers may modify it).
func (g *goldenCase) batch() *pb.Batch {
	b := &pb.Batch{BatchSize: g.Batch.BatchSize, SeqLen: g.Batch.SeqLen,
		Tokens:      append([]int32(nil), g.tensors["batch.tokens"].i32...),
		Targets:     append([]int32(nil), g.tensors["batch.targets"].i32...),
		LossWeights: append([]float32(nil), g.tensors["batch.loss_weights"].f32...)}
	if s, ok := g.tensors["batch.segment_ids"]; ok {
		b.SegmentIds = append([]int32(nil), s.i32...)
	}
	return b
}

// gradScale is the host's scale for one optimizer step over the case's batch.
func (g *goldenCase) gradScale() float32 { return float32(1 / math.Max(g.WeightSum, 1)) }

func (g *goldenCase) logits() []float32 { return g.tensors["logits"].f32 }

func (g *goldenCase) tensor(name string) []float32 { return g.tensors[name].f32 }

// initState is the case's initial parameters as a state stream.
func (g *goldenCase) initState() *sdk.TensorList {
	var ts []*sdk.Tensor
	for _, p := range g.Model.Params {
		ts = append(ts, sdk.F32Tensor(p.Name, pb.TensorRole_TENSOR_ROLE_PARAM, p.Shape, g.tensor("init."+p.Name)))
	}
	return sdk.NewTensorList(0, ts...)
}

func (g *goldenCase) hasParam(name string) bool {
	for _, p := range g.Model.Params {
		if p.Name == name {
			return true
		}
	}
	return false
}

// hasZeroWeights reports whether some positions carry no loss.
func (g *goldenCase) hasZeroWeights() bool {
	for _, w := range g.tensors["batch.loss_weights"].f32 {
		if w == 0 {
			return true
		}
	}
	return false
}

// segment is one packed episode: row and positions [start, end).
type segment struct {
	row, start, end int
	id              int32
}

// segments lists the non-padding segments of a packed case, row by row.
func (g *goldenCase) segments() []segment {
	ids := g.tensors["batch.segment_ids"].i32
	if ids == nil {
		return nil
	}
	T := int(g.Batch.SeqLen)
	var out []segment
	for r := 0; r < int(g.Batch.BatchSize); r++ {
		row := ids[r*T : (r+1)*T]
		for i := 0; i < T; {
			j := i
			for j < T && row[j] == row[i] {
				j++
			}
			if row[i] != 0 {
				out = append(out, segment{row: r, start: i, end: j, id: row[i]})
			}
			i = j
		}
	}
	return out
}

// crossEntropy returns −log softmax(logits)[target] in float64.
func crossEntropy(logits []float32, target int) (ce float64, probs []float64) {
	mx := math.Inf(-1)
	for _, v := range logits {
		mx = math.Max(mx, float64(v))
	}
	probs = make([]float64, len(logits))
	var sum float64
	for i, v := range logits {
		probs[i] = math.Exp(float64(v) - mx)
		sum += probs[i]
	}
	for i := range probs {
		probs[i] /= sum
	}
	return math.Log(sum) + mx - float64(logits[target]), probs
}

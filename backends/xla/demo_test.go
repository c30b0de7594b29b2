package xla

import (
	"context"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/mypt/mypt/sdk"
	pb "github.com/mypt/mypt/sdk/proto/backendv1"
	"github.com/mypt/mypt/sdk/sdktesting"
)

// demoSpec is configs/chat_demo.json's model (LLaMA style: RoPE, SwiGLU, RMSNorm, tied
// embeddings, n_embd 64, 4 heads, 2 layers, block 48) with the given vocabulary size, as
// core/model describes it (GPT-2's is 50304).
func demoSpec(vocab int) *pb.ModelSpec {
	const c, hidden, layers = 64, 192, 2
	s := &pb.ModelSpec{VocabSize: uint32(vocab), BlockSize: 48, NLayer: layers, NHead: 4, NEmbd: c,
		MlpHidden: hidden, TieWeights: true, RopeTheta: 10000, RopeScale: 1, NormEps: 1e-6,
		SegmentPositionReset: true, PosEncoding: pb.PosEncoding_POS_ENCODING_ROPE,
		MlpType: pb.MLPType_MLP_TYPE_SWIGLU, NormType: pb.NormType_NORM_TYPE_RMSNORM}
	add := func(name string, decay bool, shape ...int64) {
		s.Params = append(s.Params, &pb.ParamSpec{Name: name, Shape: shape, Dtype: pb.DType_DTYPE_F32, WeightDecay: decay})
	}
	add("token_embedding_table.weight", false, int64(vocab), c)
	for l := 0; l < layers; l++ {
		p := fmt.Sprintf("blocks.%d.", l)
		add(p+"ln1.weight", false, c)
		add(p+"sa.qkv.weight", true, 3*c, c)
		add(p+"sa.proj.weight", true, c, c)
		add(p+"ln2.weight", false, c)
		add(p+"fwd.w_gate.weight", true, hidden, c)
		add(p+"fwd.w_up.weight", true, hidden, c)
		add(p+"fwd.w_down.weight", true, c, hidden)
	}
	add("ln_f.weight", false, c)
	add("lm_head.bias", false, int64(vocab))
	return s
}

// tensorList is a SetState stream over prepared tensors.
type tensorList []*sdk.Tensor

func (l *tensorList) Header() *pb.StateHeader { return &pb.StateHeader{TensorCount: uint32(len(*l))} }
func (l *tensorList) Next() (*sdk.Tensor, error) {
	if len(*l) == 0 {
		return nil, io.EOF
	}
	t := (*l)[0]
	*l = (*l)[1:]
	return t, nil
}

// tensorMap collects a GetState stream by parameter name.
type tensorMap map[string][]float32

func (m tensorMap) WriteHeader(*pb.StateHeader) error { return nil }
func (m tensorMap) WriteTensor(t *sdk.Tensor) error {
	v, err := sdk.F32Values(t.Data)
	m[t.Name] = v
	return err
}

// configureDemo configures b with demoSpec(vocab), compute dtype prec and GPT-2-like random
// weights (N(0, 0.02), norms 1), the same for the same seed.
func configureDemo(t testing.TB, b sdk.Backend, vocab int, seed uint64, compute pb.DType) {
	t.Helper()
	ctx := context.Background()
	spec := demoSpec(vocab)
	if _, err := b.Configure(ctx, &pb.ConfigureRequest{Model: spec,
		Precision: &pb.Precision{ParamDtype: pb.DType_DTYPE_F32, ComputeDtype: compute},
		Optimizer: &pb.OptimizerSpec{Beta1: 0.9, Beta2: 0.95, Eps: 1e-8}}); err != nil {
		t.Fatalf("Configure(%v): %v", compute, err)
	}
	rng := rand.New(rand.NewPCG(seed, 1))
	var l tensorList
	for _, p := range spec.Params {
		n := 1
		for _, d := range p.Shape {
			n *= int(d)
		}
		v := make([]float32, n)
		for i := range v {
			v[i] = float32(rng.NormFloat64() * 0.02)
			if strings.Contains(p.Name, "ln") && strings.HasSuffix(p.Name, ".weight") {
				v[i] = 1
			}
		}
		l = append(l, sdk.F32Tensor(p.Name, pb.TensorRole_TENSOR_ROLE_PARAM, p.Shape, v))
	}
	if _, err := b.SetState(ctx, &l); err != nil {
		t.Fatalf("SetState: %v", err)
	}
}

// demoBatch is a random bsz×seq batch with ¾ of the loss weights 1, the rest 0.
func demoBatch(vocab, bsz, seq int, seed uint64) *pb.Batch {
	rng := rand.New(rand.NewPCG(seed, 2))
	bt := &pb.Batch{BatchSize: uint32(bsz), SeqLen: uint32(seq)}
	for i := 0; i < bsz*seq; i++ {
		bt.Tokens = append(bt.Tokens, int32(rng.IntN(vocab)))
		bt.Targets = append(bt.Targets, int32(rng.IntN(vocab)))
		bt.LossWeights = append(bt.LossWeights, float32(min(rng.IntN(4), 1)))
	}
	return bt
}

// peakRSS is the process's peak resident set (VmHWM) as Linux reports it, or "?".
func peakRSS() string {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return "?"
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "VmHWM:") {
			return strings.TrimSpace(strings.TrimPrefix(line, "VmHWM:"))
		}
	}
	return "?"
}

// TestDemoStepTiming times ForwardBackward, OptimizerStep and Evaluate of the demo config at
// its own batch (16×48 tokens, vocabulary 50304) on the simplego engine and logs seconds
// and peak RSS (docs/XLA.md quotes them). A measurement, not a check: it runs only with
// MYPT_XLA_PERF=1 (f32) or MYPT_XLA_PERF=bf16, e.g. with -cpuprofile.
func TestDemoStepTiming(t *testing.T) {
	mode := os.Getenv("MYPT_XLA_PERF")
	if mode == "" {
		t.Skip("set MYPT_XLA_PERF=1 (or bf16) to time the demo config's step on simplego")
	}
	compute := pb.DType_DTYPE_F32
	if mode == "bf16" {
		compute = pb.DType_DTYPE_BF16
	}
	ctx := context.Background()
	const vocab = 50304
	b := New(Options{})
	configureDemo(t, b, vocab, 1, compute)
	bt := demoBatch(vocab, 16, 48, 1)
	for i := 0; i < 3; i++ {
		start := time.Now()
		fb, err := b.ForwardBackward(ctx, &pb.ForwardBackwardRequest{Batch: bt, GradScale: 1})
		if err != nil {
			t.Fatal(err)
		}
		mid := time.Now()
		if _, err := b.OptimizerStep(ctx, &pb.OptimizerStepRequest{LearningRate: 1e-3, WeightDecay: 0.05, ClipNorm: 1}); err != nil {
			t.Fatal(err)
		}
		ev := time.Now()
		if _, err := b.Evaluate(ctx, &pb.EvaluateRequest{Batch: bt}); err != nil {
			t.Fatal(err)
		}
		t.Logf("%v step %d: loss %.4f forward_backward %.2fs optimizer_step %.2fs evaluate %.2fs peak RSS %s", compute,
			i, fb.LossSum/fb.WeightSum, mid.Sub(start).Seconds(), ev.Sub(mid).Seconds(), time.Since(ev).Seconds(), peakRSS())
	}
}

// TestBF16 runs the demo architecture (vocabulary cut to 512) with compute dtype BF16 and
// F32 from the same weights on the same batches: logits, loss, gradients, and the losses of
// five AdamW steps must agree within bf16 bounds (the conformance suite's BF16 tolerances,
// numerics against the golden vectors, run in TestConformance), and the bf16 logits must
// actually differ from the f32 ones (the bf16 path is taken). GetInfo declares BF16 on
// simplego.
func TestBF16(t *testing.T) {
	ctx := context.Background()
	const vocab, bsz, seq = 512, 4, 16
	bs := map[pb.DType]sdk.Backend{}
	for _, d := range []pb.DType{pb.DType_DTYPE_F32, pb.DType_DTYPE_BF16} {
		b := sdktesting.Connect(t, New(Options{}))
		configureDemo(t, b, vocab, 3, d)
		bs[d] = b
	}
	info, err := bs[pb.DType_DTYPE_BF16].GetInfo(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := info.GetCapabilities().GetComputeDtypes(); len(got) != 2 || got[1] != pb.DType_DTYPE_BF16 {
		t.Errorf("simplego declares compute dtypes %v, want [F32 BF16]", got)
	}
	bt := demoBatch(vocab, bsz, seq, 5)

	// Logits: |Δ| ≤ 2e-2 + 2e-2·max|x| + 3e-2·|x| (conformance's BF16 logits tolerance).
	ev := map[pb.DType]*pb.EvaluateResponse{}
	for d, b := range bs {
		r, err := b.Evaluate(ctx, &pb.EvaluateRequest{Batch: bt, ReturnLogits: true})
		if err != nil {
			t.Fatal(err)
		}
		ev[d] = r
	}
	want, got := ev[pb.DType_DTYPE_F32].Logits, ev[pb.DType_DTYPE_BF16].Logits
	var maxAbs, maxDiff float64
	for _, x := range want {
		maxAbs = max(maxAbs, math.Abs(float64(x)))
	}
	for i := range want {
		d := math.Abs(float64(got[i]) - float64(want[i]))
		maxDiff = max(maxDiff, d)
		if d > 2e-2+2e-2*maxAbs+3e-2*math.Abs(float64(want[i])) {
			t.Fatalf("logit %d: bf16 %v, f32 %v", i, got[i], want[i])
		}
	}
	if maxDiff == 0 {
		t.Fatal("bf16 logits are identical to f32: the bf16 path was not taken")
	}
	t.Logf("logits: max |bf16 − f32| %.3g (max |logit| %.3g)", maxDiff, maxAbs)

	// One ForwardBackward: loss 1e-2 relative; gradients 5e-2·max|g| + 0.1·|g| per tensor.
	grads := map[pb.DType]tensorMap{}
	loss := map[pb.DType]float64{}
	for d, b := range bs {
		fb, err := b.ForwardBackward(ctx, &pb.ForwardBackwardRequest{Batch: bt, GradScale: 1 / 48.0})
		if err != nil {
			t.Fatal(err)
		}
		loss[d] = fb.LossSum / fb.WeightSum
		m := tensorMap{}
		if err := b.GetState(ctx, &pb.GetStateRequest{Roles: []pb.TensorRole{pb.TensorRole_TENSOR_ROLE_GRAD}}, m); err != nil {
			t.Fatal(err)
		}
		grads[d] = m
	}
	if r := math.Abs(loss[pb.DType_DTYPE_BF16]-loss[pb.DType_DTYPE_F32]) / loss[pb.DType_DTYPE_F32]; r > 1e-2 {
		t.Errorf("loss: bf16 %v, f32 %v", loss[pb.DType_DTYPE_BF16], loss[pb.DType_DTYPE_F32])
	}
	var worst float64
	for name, w := range grads[pb.DType_DTYPE_F32] {
		g := grads[pb.DType_DTYPE_BF16][name]
		var mx float64
		for _, x := range w {
			mx = max(mx, math.Abs(float64(x)))
		}
		for i := range w {
			d := math.Abs(float64(g[i]) - float64(w[i]))
			tol := 5e-2*mx + 0.1*math.Abs(float64(w[i]))
			if d > tol {
				t.Fatalf("gradient %s[%d]: bf16 %v, f32 %v (max |g| %v)", name, i, g[i], w[i], mx)
			}
			if tol > 0 {
				worst = max(worst, d/tol)
			}
		}
	}
	t.Logf("gradients: worst |bf16 − f32| at %.2f of the bf16 tolerance", worst)

	// Five AdamW steps (the gradients above, then four more): per-step losses 2e-2 relative.
	for step := 0; step < 5; step++ {
		var losses [2]float64
		for i, d := range []pb.DType{pb.DType_DTYPE_F32, pb.DType_DTYPE_BF16} {
			b := bs[d]
			if step > 0 {
				fb, err := b.ForwardBackward(ctx, &pb.ForwardBackwardRequest{Batch: bt, GradScale: 1 / 48.0})
				if err != nil {
					t.Fatal(err)
				}
				losses[i] = fb.LossSum / fb.WeightSum
			}
			if _, err := b.OptimizerStep(ctx, &pb.OptimizerStepRequest{LearningRate: 1e-2, ClipNorm: 1}); err != nil {
				t.Fatal(err)
			}
		}
		if step > 0 {
			if r := math.Abs(losses[1]-losses[0]) / losses[0]; r > 2e-2 {
				t.Errorf("step %d loss: bf16 %v, f32 %v", step, losses[1], losses[0])
			} else {
				t.Logf("step %d loss: bf16 %.6f, f32 %.6f (relative %.2g)", step, losses[1], losses[0], r)
			}
		}
	}
}

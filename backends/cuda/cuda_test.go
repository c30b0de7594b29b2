package cuda

import (
	"context"
	"errors"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/mypt/mypt/backends/cpu"
	"github.com/mypt/mypt/backends/cuda/device"
	"github.com/mypt/mypt/backends/cuda/driver"
	"github.com/mypt/mypt/backends/cuda/kernels"
	"github.com/mypt/mypt/conformance"
	"github.com/mypt/mypt/conformance/golden"
	"github.com/mypt/mypt/sdk"
	"github.com/mypt/mypt/sdk/backendkit"
	pb "github.com/mypt/mypt/sdk/proto/backendv1"
	"github.com/mypt/mypt/sdk/sdktesting"
	"google.golang.org/grpc/codes"
)

// configure sets up any backend for g (whose Model may have been edited) with its init,
// without preallocating for a batch size.
func configure(t *testing.T, b sdk.Backend, g *golden.Case, precision *pb.Precision) {
	t.Helper()
	golden.Open(t, g, b, func(r *pb.ConfigureRequest) { r.MaxBatchSize, r.Precision = 0, precision })
}

func grads(t *testing.T, b sdk.Backend) map[string][]float32 {
	t.Helper()
	return sdktesting.State(t, b, pb.TensorRole_TENSOR_ROLE_GRAD)
}

// Dropout and NEFTune masks are the CPU backend's (same hash, same indices): with dropout
// 0.2 and NEFTune 5 on the packed cases, the emulated device's loss and gradients match the
// CPU reference backend's to float32 rounding.
func TestDropoutNEFTuneMatchCPU(t *testing.T) {
	ctx := context.Background()
	for _, g := range golden.Cases(t) {
		if !g.Batch.Packed {
			continue
		}
		t.Run(g.Case, func(t *testing.T) {
			g.Model.Dropout, g.Model.NeftuneAlpha = 0.2, 5
			defer func() { g.Model.Dropout, g.Model.NeftuneAlpha = 0, 0 }()
			gpu, ref := New(emulated(t)), cpu.New(cpu.Options{Threads: 1})
			configure(t, gpu, g, nil)
			configure(t, ref, g, nil)
			req := &pb.ForwardBackwardRequest{Batch: g.NewBatch(), GradScale: float32(1 / math.Max(g.WeightSum, 1)), DropoutSeed: 1234}
			a, err := gpu.ForwardBackward(ctx, req)
			if err != nil {
				t.Fatal(err)
			}
			b, err := ref.ForwardBackward(ctx, req)
			if err != nil {
				t.Fatal(err)
			}
			if e := conformance.RelErr(a.LossSum, b.LossSum, 1e-12); e > 1e-5 {
				t.Errorf("loss_sum %v, CPU %v", a.LossSum, b.LossSum)
			}
			if conformance.RelErr(a.LossSum, g.LossSum, 1e-12) < 1e-3 {
				t.Errorf("loss_sum %v equals the dropout-free loss: dropout not applied", a.LossSum)
			}
			ga, gb := grads(t, gpu), grads(t, ref)
			for name, want := range gb {
				conformance.AssertClose(t, name, ga[name], want, f32.Grads)
			}
		})
	}
}

// Prefill (all logits) and Decode reproduce Evaluate's logits at every position.
func TestKVCacheMatchesEvaluate(t *testing.T) {
	ctx := context.Background()
	for _, g := range golden.Cases(t) {
		if g.Batch.Packed {
			continue
		}
		t.Run(g.Case, func(t *testing.T) {
			b := newGoldenBackend(t, g)
			batch := g.NewBatch()
			T, V := int(batch.SeqLen), int(g.Model.VocabSize)
			row := &pb.Batch{BatchSize: 1, SeqLen: batch.SeqLen, Tokens: batch.Tokens[:T], Targets: batch.Targets[:T], LossWeights: batch.LossWeights[:T]}
			ev, err := b.Evaluate(ctx, &pb.EvaluateRequest{Batch: row, ReturnLogits: true})
			if err != nil {
				t.Fatal(err)
			}
			split := T / 2
			pf, err := b.Prefill(ctx, &pb.PrefillRequest{Tokens: row.Tokens[:split], AllLogits: true, Capacity: uint32(T)})
			if err != nil {
				t.Fatal(err)
			}
			got := slices.Clone(pf.Logits)
			for i := split; i < T; i++ {
				d, err := b.Decode(ctx, &pb.DecodeRequest{CacheHandle: pf.CacheHandle, Token: row.Tokens[i]})
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, d.Logits...)
			}
			conformance.AssertClose(t, "cached logits", got, ev.Logits[:T*V], conformance.Tolerance{Atol: 1e-5, Rtol: 1e-4})
			if _, err := b.Decode(ctx, &pb.DecodeRequest{CacheHandle: pf.CacheHandle, Token: 1}); sdk.Code(err) != codes.FailedPrecondition {
				t.Errorf("decode into a full cache: %v, want FAILED_PRECONDITION", err)
			}
			if _, err := b.ReleaseCache(ctx, &pb.ReleaseCacheRequest{CacheHandle: pf.CacheHandle}); err != nil {
				t.Fatal(err)
			}
			if _, err := b.Decode(ctx, &pb.DecodeRequest{CacheHandle: pf.CacheHandle, Token: 1}); sdk.Code(err) != codes.NotFound {
				t.Errorf("decode after release: %v, want NOT_FOUND", err)
			}
		})
	}
}

// BF16 matmul inputs (fp32 accumulation, fp32 master weights): logits and gradients stay
// within bf16-scale bounds of the float64 oracle.
func TestBF16Golden(t *testing.T) {
	ctx := context.Background()
	for _, g := range golden.Cases(t) {
		t.Run(g.Case, func(t *testing.T) {
			b := New(emulated(t))
			configure(t, b, g, &pb.Precision{ComputeDtype: pb.DType_DTYPE_BF16})
			ev, err := b.Evaluate(ctx, &pb.EvaluateRequest{Batch: g.NewBatch(), ReturnLogits: true})
			if err != nil {
				t.Fatal(err)
			}
			want := g.F32("logits")
			var maxAbs, worst float64
			for i := range want {
				maxAbs = max(maxAbs, math.Abs(float64(want[i])))
				worst = max(worst, math.Abs(float64(ev.Logits[i]-want[i])))
			}
			if worst > 0.03*maxAbs+0.02 {
				t.Errorf("bf16 logits: worst error %.3g (max |logit| %.3g)", worst, maxAbs)
			}
			if e := conformance.RelErr(ev.LossSum, g.LossSum, 1e-12); e > 1e-2 {
				t.Errorf("bf16 loss_sum %v, want %v (rel %.2g)", ev.LossSum, g.LossSum, e)
			}
			t.Logf("bf16 logits worst abs error %.3g (max |logit| %.3g), loss rel error %.2g", worst, maxAbs, conformance.RelErr(ev.LossSum, g.LossSum, 1e-12))
		})
	}
}

// The order of kernels in one training step, as the emulated device records it (LLaMA case).
func TestStepKernelOrder(t *testing.T) {
	ctx := context.Background()
	var g *golden.Case
	for _, c := range golden.Cases(t) {
		if c.Case == "llama_tied" {
			g = c
		}
	}
	b := newGoldenBackend(t, g)
	dev := emulatedDevice(t, b)
	dev.Trace()
	if _, err := b.ForwardBackward(ctx, &pb.ForwardBackwardRequest{Batch: g.NewBatch(), GradScale: 1}); err != nil {
		t.Fatal(err)
	}
	layer := "norm_fwd gemm rope attn_fwd gemm residual_add norm_fwd gemm gemm swiglu_fwd gemm residual_add"
	fwd := "embed_fwd " + layer + " " + layer + " norm_fwd fill_rows gemm xent"
	blayer := "gemm gemm swiglu_bwd gemm gemm gemm gemm norm_bwd_dx norm_bwd_dw gemm gemm attn_bwd_pre attn_bwd_dq attn_bwd_dkv rope gemm gemm norm_bwd_dx norm_bwd_dw"
	bwd := "gemm gemm col_sum_add norm_bwd_dx norm_bwd_dw " + blayer + " " + blayer + " embed_bwd"
	if got, want := strings.Join(dev.Trace(), " "), fwd+" "+bwd; got != want {
		t.Errorf("ForwardBackward kernels:\n got %s\nwant %s", got, want)
	}
	if _, err := b.OptimizerStep(ctx, &pb.OptimizerStepRequest{LearningRate: 1e-3, ClipNorm: 1}); err != nil {
		t.Fatal(err)
	}
	// sumsq, then one adamw per run of tensors with equal decay
	tr := dev.Trace()
	if tr[0] != "sumsq" || len(tr) < 2 || slices.IndexFunc(tr[1:], func(s string) bool { return s != "adamw" }) >= 0 {
		t.Errorf("OptimizerStep kernels %v", tr)
	}
}

// emulatedDevice returns the emulated device a backend made by New(emulated(t)) computes on.
func emulatedDevice(t *testing.T, b *backendkit.Backend) *device.Emulated {
	t.Helper()
	d, err := b.Engine().(*engine).device()
	if err != nil {
		t.Fatal(err)
	}
	return d.(*device.Emulated)
}

// Every kernel of kernels.cu has a signature parsed from its declaration, and the device
// refuses a launch whose arguments do not match it.
func TestKernelSignatures(t *testing.T) {
	sigs := kernels.Signatures()
	if n := strings.Count(kernels.Source, "__global__ void "); n != len(sigs) {
		t.Errorf("kernels.cu declares %d kernels, %d signatures parsed", n, len(sigs))
	}
	if got, want := sigs["attn_fwd"], "pppppp"+"iiiiiiii"+"uuuf"; got != want {
		t.Errorf("attn_fwd signature %q, want %q (from its declaration in kernels.cu)", got, want)
	}
	b := New(emulated(t))
	d, err := b.Engine().(*engine).device()
	if err != nil {
		t.Fatal(err)
	}
	for name, spec := range sigs {
		args := make([]any, len(spec))
		for i := range args {
			args[i] = "x"
		}
		if err := d.Launch(name, device.D1(1), device.D1(1), args...); err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("%s: launch with bad arguments: %v", name, err)
		}
	}
	if err := d.Launch("no_such_kernel", device.D1(1), device.D1(1)); err == nil {
		t.Error("launch of an unknown kernel succeeded")
	}
}

// Every kernel the model launches goes through its typed launcher (launch.go), and the
// device checks each launch's arguments against the signature parsed from kernels.cu: one
// pass over training (dropout, NEFTune, packing, frozen tensors), evaluation, the optimizer
// and the KV cache, plus one bf16 evaluation (cast_bf16), launches every kernel.
func TestEveryKernelLaunched(t *testing.T) {
	ctx := context.Background()
	launched := map[string]bool{}
	for _, g := range golden.Cases(t) {
		g.Model.Dropout, g.Model.NeftuneAlpha = 0.1, 5
		b := New(emulated(t))
		configure(t, b, g, nil)
		dev := emulatedDevice(t, b)
		if _, err := b.ForwardBackward(ctx, &pb.ForwardBackwardRequest{Batch: g.NewBatch(), GradScale: 1, DropoutSeed: 3}); err != nil {
			t.Fatal(err)
		}
		if _, err := b.OptimizerStep(ctx, &pb.OptimizerStepRequest{LearningRate: 1e-3, ClipNorm: 1}); err != nil {
			t.Fatal(err)
		}
		if _, err := b.Evaluate(ctx, &pb.EvaluateRequest{Batch: g.NewBatch(), ReturnLogits: true}); err != nil {
			t.Fatal(err)
		}
		p, err := b.Prefill(ctx, &pb.PrefillRequest{Tokens: g.NewBatch().Tokens[:3]})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := b.Decode(ctx, &pb.DecodeRequest{CacheHandle: p.CacheHandle, Token: 1}); err != nil {
			t.Fatal(err)
		}
		for _, k := range dev.Trace() {
			launched[k] = true
		}
	}
	g := golden.Cases(t)[0]
	b := New(emulated(t))
	configure(t, b, g, &pb.Precision{ComputeDtype: pb.DType_DTYPE_BF16})
	dev := emulatedDevice(t, b)
	if _, err := b.Evaluate(ctx, &pb.EvaluateRequest{Batch: g.NewBatch()}); err != nil {
		t.Fatal(err)
	}
	for _, k := range dev.Trace() {
		launched[k] = true
	}
	for name := range kernels.Signatures() {
		if !launched[name] {
			t.Errorf("kernel %s was never launched", name)
		}
	}
}

// Without an NVIDIA driver GetInfo and Configure fail with a clear FAILED_PRECONDITION.
func TestNoGPUError(t *testing.T) {
	if _, err := driver.OpenDriver(); err == nil {
		t.Skip("a CUDA driver is present")
	} else if !errors.Is(err, driver.ErrNoDriver) {
		t.Skipf("driver present but unusable: %v", err)
	}
	b := New(Options{})
	_, err := b.GetInfo(context.Background(), nil)
	if sdk.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "libcuda.so.1 not found") {
		t.Fatalf("GetInfo without a driver: %v", err)
	}
	g := golden.Cases(t)[0]
	_, err = b.Configure(context.Background(), &pb.ConfigureRequest{Model: g.Spec(), Optimizer: &pb.OptimizerSpec{Beta1: 0.9, Beta2: 0.95, Eps: 1e-8}})
	if sdk.Code(err) != codes.FailedPrecondition {
		t.Fatalf("Configure without a driver: %v", err)
	}
	t.Log(err)
}

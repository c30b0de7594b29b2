package bench

import (
	"context"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/mypt/mypt/backends/cpu"
	"github.com/mypt/mypt/core/config"
	"github.com/mypt/mypt/core/model"
	"github.com/mypt/mypt/sdk"
	pb "github.com/mypt/mypt/sdk/proto/backendv1"
)

func TestFLOPsPerToken(t *testing.T) {
	cfg, _, err := config.Load(config.Sources{File: "../../configs/750M_1024_chat_sft_phase3a.json"})
	if err != nil {
		t.Fatal(err)
	}
	flops, n := FLOPsPerToken(model.NewSpec(cfg), cfg.BlockSize)
	// Tied LLaMA style, RoPE: every parameter counts (docs/TRAINING.md's count).
	if n != 698_911_104 {
		t.Errorf("N = %d, want 698,911,104", n)
	}
	if want := 6*698_911_104.0 + 12*32*1280*1024.0; flops != want {
		t.Errorf("FLOPs/token = %v, want %v", flops, want)
	}

	// GPT-2 style, untied, learned positions: both lookup tables are left out
	// of N, lm_head stays.
	gpt := config.Default()
	gpt.VocabSize, gpt.BlockSize, gpt.NEmbd, gpt.NLayer, gpt.NHead = 100, 16, 8, 1, 2
	spec := model.NewSpec(gpt)
	total, _ := spec.NumParams()
	flops, n = FLOPsPerToken(spec, 16)
	if want := total - 100*8 - 16*8; n != want {
		t.Errorf("untied GPT-2: N = %d, want %d (total %d less both tables)", n, want, total)
	}
	if want := 6*float64(n) + 12*1*8*16; flops != want {
		t.Errorf("untied GPT-2: FLOPs/token = %v, want %v", flops, want)
	}
}

func TestPeakFor(t *testing.T) {
	for _, c := range []struct {
		kind, name, dtype string
		want              float64
	}{
		{"cuda", "NVIDIA H200", "BF16", 989},
		{"cuda", "NVIDIA H200", "F32", 67},
		{"cuda", "NVIDIA H200 NVL", "BF16", 835},
		{"cuda", "NVIDIA H100 80GB HBM3", "BF16", 989},
		{"cuda", "NVIDIA H100 PCIe", "BF16", 756},
		{"cuda", "NVIDIA A100-SXM4-80GB", "BF16", 312},
		{"cuda", "NVIDIA A100 80GB PCIe", "F32", 19.5},
		{"cuda", "NVIDIA GeForce RTX 4090", "BF16", 0},
		{"cpu", "amd64", "F32", 0},
	} {
		got, source, ok := PeakFor(Device{Kind: c.kind, Name: c.name}, c.dtype)
		if got != c.want || ok != (c.want > 0) || source == "" {
			t.Errorf("%s %q %s: got %v %q %v, want %v", c.kind, c.name, c.dtype, got, source, ok, c.want)
		}
	}
}

func tinyConfig() config.Config {
	cfg := config.Default()
	cfg.VocabSize, cfg.BlockSize, cfg.NEmbd, cfg.NLayer, cfg.NHead = 128, 16, 16, 1, 2
	cfg.BatchSize, cfg.GradAccumSteps, cfg.Dropout = 2, 2, 0.1
	cfg.PosEncoding, cfg.MLPType, cfg.NormType, cfg.TieWeights = "rope", "swiglu", "rmsnorm", true
	return cfg
}

func TestRunCPU(t *testing.T) {
	cfg := tinyConfig()
	res, err := Run(context.Background(), cpu.New(cpu.Options{Threads: 1}), Options{Config: cfg, Warmup: 1, Steps: 3})
	if err != nil {
		t.Fatal(err)
	}
	if res.TokensPerStep != 2*16*2 || res.Backend != "cpu" || res.ComputeDType != "F32" || res.Device.Kind != "cpu" {
		t.Errorf("result %+v", res)
	}
	if len(res.AllStepMS) != 3 || res.StepMS.Min <= 0 || res.StepMS.Min > res.StepMS.Median || res.StepMS.Median > res.StepMS.Max {
		t.Errorf("step times %v, stats %+v", res.AllStepMS, res.StepMS)
	}
	if res.TokensPerS <= 0 || res.AchievedTFLOPS <= 0 || math.Abs(res.FirstLoss-math.Log(128)) > 0.5 {
		t.Errorf("tokens/s %v, TFLOP/s %v, first loss %v (want about ln 128 = %.2f)", res.TokensPerS, res.AchievedTFLOPS, res.FirstLoss, math.Log(128))
	}
	if res.MFU != nil || !strings.Contains(res.MFUNote, "--peak_tflops") {
		t.Errorf("CPU without --peak_tflops: MFU %v, note %q", res.MFU, res.MFUNote)
	}

	res, err = Run(context.Background(), cpu.New(cpu.Options{Threads: 1}), Options{Config: cfg, Steps: 2, PeakTFLOPS: 1e-3})
	if err != nil {
		t.Fatal(err)
	}
	if res.MFU == nil || *res.MFU <= 0 || res.PeakSource != "--peak_tflops" || math.Abs(*res.MFU-res.AchievedTFLOPS/1e-3) > 1e-12 {
		t.Errorf("with a peak: MFU %v, source %q, achieved %v", res.MFU, res.PeakSource, res.AchievedTFLOPS)
	}
}

// TestMaxTime: past the limit the warmup is cut and one timed step still runs.
func TestMaxTime(t *testing.T) {
	res, err := Run(context.Background(), cpu.New(cpu.Options{Threads: 1}), Options{Config: tinyConfig(), Warmup: 2, Steps: 5, MaxTime: time.Nanosecond})
	if err != nil {
		t.Fatal(err)
	}
	if res.Warmup != 0 || res.Steps != 1 || res.StepsRequested != 5 || len(res.AllStepMS) != 1 ||
		!strings.Contains(res.StoppedEarly, "after 0 of 2 warmup steps") {
		t.Errorf("warmup %d, steps %d of %d, step ms %v, stopped early %q", res.Warmup, res.Steps, res.StepsRequested, res.AllStepMS, res.StoppedEarly)
	}
	res, err = Run(context.Background(), cpu.New(cpu.Options{Threads: 1}), Options{Config: tinyConfig(), Warmup: 1, Steps: 3, MaxTime: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if res.Warmup != 1 || res.Steps != 3 || res.StoppedEarly != "" {
		t.Errorf("no limit reached: warmup %d, steps %d, stopped early %q", res.Warmup, res.Steps, res.StoppedEarly)
	}
}

func TestStatistics(t *testing.T) {
	r := &Result{AllStepMS: []float64{40, 10, 30, 20}, TokensPerStep: 1000, FLOPsPerToken: 1e9,
		Device: Device{Kind: "cuda", Name: "NVIDIA H200"}, ComputeDType: "BF16"}
	r.finish(0, "")
	if r.StepMS != (StepStats{Median: 25, Mean: 25, Min: 10, Max: 40}) {
		t.Errorf("stats %+v", r.StepMS)
	}
	if r.TokensPerS != 40000 || r.AchievedTFLOPS != 40 || r.PeakTFLOPS != 989 || r.MFU == nil || *r.MFU != 40.0/989 {
		t.Errorf("tokens/s %v, TFLOP/s %v, peak %v, MFU %v", r.TokensPerS, r.AchievedTFLOPS, r.PeakTFLOPS, r.MFU)
	}
	// PJRT names its device "cuda:0": --peak_device gives the model.
	r.Device, r.MFU, r.PeakTFLOPS = Device{Kind: "cuda", Name: "cuda:0 [processId=0]"}, nil, 0
	r.finish(0, "")
	if r.MFU != nil || !strings.Contains(r.MFUNote, "cuda:0") {
		t.Errorf("unknown device: MFU %v, note %q", r.MFU, r.MFUNote)
	}
	r.finish(0, "NVIDIA H100 PCIe")
	if r.PeakTFLOPS != 756 || r.MFU == nil || !strings.Contains(r.PeakSource, "--peak_device") {
		t.Errorf("--peak_device: peak %v, MFU %v, source %q", r.PeakTFLOPS, r.MFU, r.PeakSource)
	}
	r.finish(100, "NVIDIA H100 PCIe")
	if r.PeakTFLOPS != 100 || *r.MFU != 0.4 || r.PeakSource != "--peak_tflops" {
		t.Errorf("--peak_tflops wins: peak %v, MFU %v, source %q", r.PeakTFLOPS, *r.MFU, r.PeakSource)
	}
}

// nanLoss is a CPU backend whose third ForwardBackward reports a NaN loss.
type nanLoss struct {
	sdk.Backend
	calls int
}

func (b *nanLoss) ForwardBackward(ctx context.Context, req *pb.ForwardBackwardRequest) (*pb.ForwardBackwardResponse, error) {
	resp, err := b.Backend.ForwardBackward(ctx, req)
	if b.calls++; b.calls == 3 && err == nil {
		resp.LossSum = math.NaN()
	}
	return resp, err
}

func TestRunFailsOnNonFinite(t *testing.T) {
	cfg := tinyConfig()
	_, err := Run(context.Background(), &nanLoss{Backend: cpu.New(cpu.Options{Threads: 1})}, Options{Config: cfg, Steps: 3})
	if err == nil || !strings.Contains(err.Error(), "step 1: non-finite") {
		t.Fatalf("error %v, want step 1: non-finite", err)
	}
}

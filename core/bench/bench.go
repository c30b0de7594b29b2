// Package bench measures a backend's training throughput through the same
// calls mypt train makes: it configures the backend as a run does (model spec,
// deterministic initialisation, resolved compute dtype), then times optimizer
// steps — ForwardBackward per micro-batch of random tokens filling the whole
// block, then OptimizerStep — with a wall clock, and reports tokens/s, model
// FLOP/s and MFU against a peak. It works with any backend: in process, or a
// plugin behind sdk.Start (mypt bench).
package bench

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"github.com/mypt/mypt/core/config"
	"github.com/mypt/mypt/core/model"
	"github.com/mypt/mypt/core/train"
	"github.com/mypt/mypt/sdk"
	pb "github.com/mypt/mypt/sdk/proto/backendv1"
)

// FLOPsFormula names the model-FLOPs definition FLOPsPerToken implements.
const FLOPsFormula = "6·N + 12·L·C·T (nanoGPT's estimate_mfu, PaLM appendix B; " +
	"N = parameters except embedding lookup tables, T = block_size, attention over the full T×T scores)"

// Options say what to measure.
type Options struct {
	// Config is the loaded configuration (mypt train's): model, batch_size,
	// block_size, grad_accum_steps, learning_rate, grad_clip, weight_decay,
	// dropout, seed and precision are used.
	Config config.Config
	// Warmup steps run first and are not timed (compilation, allocation);
	// Steps are timed. Steps must be ≥ 1.
	Warmup, Steps int
	// PeakTFLOPS, when > 0, is the peak MFU is taken against; otherwise the
	// device's peak comes from PeakFor, and MFU is omitted when none is known.
	PeakTFLOPS float64
	// PeakDevice, when set, is the device name PeakFor looks up instead of the
	// one GetInfo reports (PJRT reports "cuda:0", not the GPU's model).
	PeakDevice string
	// MaxTime, when > 0, bounds the whole run from Configure on: once it has
	// passed, the remaining warmup steps are skipped and the timed steps stop
	// after at least one, so a benchmark inside a timeout still reports.
	MaxTime time.Duration
	// Log receives a line per step; nil discards them.
	Log *slog.Logger
}

// Device is the backend's first device, as GetInfo reports it.
type Device struct {
	Kind        string `json:"kind"`
	Name        string `json:"name"`
	MemoryBytes uint64 `json:"memory_bytes,omitempty"`
	Cores       uint32 `json:"cores,omitempty"`
}

// StepStats are the timed steps' wall-clock durations in milliseconds.
type StepStats struct {
	Median float64 `json:"median"`
	Mean   float64 `json:"mean"`
	Min    float64 `json:"min"`
	Max    float64 `json:"max"`
}

// Result is what a benchmark measured; mypt bench --json prints it.
type Result struct {
	Backend        string  `json:"backend"` // GetInfo's name
	BackendVersion string  `json:"backend_version"`
	Engine         string  `json:"engine"`
	Device         Device  `json:"device"`
	Precision      string  `json:"precision"`     // the config's: auto, fp32, bf16
	ComputeDType   string  `json:"compute_dtype"` // what it resolved to: F32 or BF16
	Params         int64   `json:"params"`
	FLOPParams     int64   `json:"flop_params"` // N of the FLOPs formula
	NLayer         int     `json:"n_layer"`
	NEmbd          int     `json:"n_embd"`
	NHead          int     `json:"n_head"`
	VocabSize      int     `json:"vocab_size"`
	BatchSize      int     `json:"batch_size"`
	BlockSize      int     `json:"block_size"`
	GradAccumSteps int     `json:"grad_accum_steps"`
	TokensPerStep  int64   `json:"tokens_per_step"`
	Warmup         int     `json:"warmup"` // warmup steps run
	Steps          int     `json:"steps"`  // timed steps run
	StepsRequested int     `json:"steps_requested"`
	StoppedEarly   string  `json:"stopped_early,omitempty"` // why fewer steps ran (MaxTime)
	SetupS         float64 `json:"setup_s"`                 // Configure + initialisation + SetState
	WarmupS        float64 `json:"warmup_s"`                // the untimed warmup steps, compilation included

	StepMS         StepStats `json:"step_ms"`
	TokensPerS     float64   `json:"tokens_per_s"`
	FLOPsPerToken  float64   `json:"flops_per_token"`
	FLOPsFormula   string    `json:"flops_formula"`
	AchievedTFLOPS float64   `json:"achieved_tflops"`
	PeakTFLOPS     float64   `json:"peak_tflops,omitempty"`
	PeakSource     string    `json:"peak_source,omitempty"`
	MFU            *float64  `json:"mfu,omitempty"` // achieved ÷ peak, a fraction
	MFUNote        string    `json:"mfu_note,omitempty"`

	FirstLoss    float64   `json:"first_loss"` // mean CE per token of the first (warmup) step
	LastLoss     float64   `json:"last_loss"`
	LastGradNorm float64   `json:"last_grad_norm"`
	AllStepMS    []float64 `json:"all_step_ms"` // every timed step, in order
}

// Run benchmarks backend b. The backend must be started but not configured;
// Run configures it and replaces its state.
func Run(ctx context.Context, b sdk.Backend, opts Options) (*Result, error) {
	cfg := opts.Config
	if opts.Steps < 1 || opts.Warmup < 0 {
		return nil, fmt.Errorf("steps must be ≥ 1 and warmup ≥ 0 (got %d and %d)", opts.Steps, opts.Warmup)
	}
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	info, err := b.GetInfo(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("backend info: %w", err)
	}
	compute, err := train.ComputeDType(info, cfg.Precision)
	if err != nil {
		return nil, err
	}
	if err := train.CheckFreezing(info, cfg); err != nil {
		return nil, err
	}
	spec := model.NewSpec(cfg)
	total, _ := spec.NumParams()
	flops, n := FLOPsPerToken(spec, cfg.BlockSize)
	res := &Result{
		Backend: info.GetName(), BackendVersion: info.GetVersion(), Engine: info.GetEngine(),
		Precision: cfg.Precision, ComputeDType: strings.TrimPrefix(compute.String(), "DTYPE_"),
		Params: total, FLOPParams: n, NLayer: cfg.NLayer, NEmbd: cfg.NEmbd, NHead: cfg.NHead, VocabSize: cfg.VocabSize,
		BatchSize: cfg.BatchSize, BlockSize: cfg.BlockSize, GradAccumSteps: cfg.GradAccumSteps,
		TokensPerStep:  int64(cfg.BatchSize) * int64(cfg.BlockSize) * int64(cfg.GradAccumSteps),
		StepsRequested: opts.Steps,
		FLOPsPerToken:  flops, FLOPsFormula: FLOPsFormula,
	}
	if ds := info.GetDevices(); len(ds) > 0 {
		d := ds[0]
		res.Device = Device{Kind: d.GetKind(), Name: d.GetName(), MemoryBytes: d.GetMemoryBytes(), Cores: d.GetCores()}
	}
	log.Info("bench", "backend", res.Backend, "engine", res.Engine, "device", res.Device.Kind+": "+res.Device.Name,
		"params", total, "compute", res.ComputeDType, "tokens_per_step", res.TokensPerStep)

	start := time.Now()
	if _, err := b.Configure(ctx, train.ConfigureRequest(cfg, spec, compute)); err != nil {
		return nil, fmt.Errorf("configure backend: %w", err)
	}
	if _, err := b.SetState(ctx, spec.InitState(cfg.Seed)); err != nil {
		return nil, fmt.Errorf("initialise parameters: %w", err)
	}
	res.SetupS = time.Since(start).Seconds()
	log.Info("bench configured", "setup_s", round(res.SetupS, 3))

	rng := rand.New(rand.NewPCG(uint64(cfg.Seed), 0x6d797074_62656e63)) // "myptbenc"
	scale := float32(1 / float64(res.TokensPerStep))
	warmStart := time.Now()
	warmup, warm, timed := opts.Warmup, 0, 0
	for i := 0; timed < opts.Steps; i++ {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("interrupted at step %d: %w", i, err)
		}
		if opts.MaxTime > 0 && time.Since(start) > opts.MaxTime {
			if warm < warmup {
				res.StoppedEarly = fmt.Sprintf("--max_time %s reached after %d of %d warmup steps", opts.MaxTime, warm, warmup)
				warmup = warm
			} else if timed > 0 {
				if res.StoppedEarly == "" {
					res.StoppedEarly = fmt.Sprintf("--max_time %s reached", opts.MaxTime)
				}
				res.StoppedEarly += fmt.Sprintf(", %d of %d timed steps run", timed, opts.Steps)
				break
			}
		}
		warming := warm < warmup
		if !warming && timed == 0 {
			res.WarmupS = time.Since(warmStart).Seconds()
		}
		reqs := make([]*pb.ForwardBackwardRequest, cfg.GradAccumSteps)
		for m := range reqs {
			reqs[m] = &pb.ForwardBackwardRequest{Batch: randomBatch(rng, cfg), GradScale: scale, DropoutSeed: rng.Uint64()}
		}
		t0 := time.Now()
		var lossSum, weightSum float64
		var tokens uint64
		for m, req := range reqs {
			resp, err := b.ForwardBackward(ctx, req)
			if err != nil {
				return nil, fmt.Errorf("step %d: forward/backward of micro-batch %d: %w", i, m, err)
			}
			lossSum += resp.GetLossSum()
			weightSum += resp.GetWeightSum()
			tokens += resp.GetTokens()
		}
		step, err := b.OptimizerStep(ctx, &pb.OptimizerStepRequest{
			LearningRate: cfg.LearningRate, WeightDecay: cfg.WeightDecay, ClipNorm: cfg.GradClip,
		})
		if err != nil {
			return nil, fmt.Errorf("step %d: optimizer step: %w", i, err)
		}
		dt := time.Since(t0)
		loss, norm := lossSum/math.Max(weightSum, 1), step.GetGradNorm()
		if !finite(loss) || !finite(norm) {
			return nil, fmt.Errorf("step %d: non-finite result (loss %v, grad norm %v): the backend's arithmetic broke", i, loss, norm)
		}
		if int64(tokens) != res.TokensPerStep {
			return nil, fmt.Errorf("step %d: backend reports %d tokens, want %d", i, tokens, res.TokensPerStep)
		}
		if i == 0 {
			res.FirstLoss = loss
		}
		res.LastLoss, res.LastGradNorm = loss, norm
		phase := "warmup"
		if warming {
			warm++
		} else {
			phase = "timed"
			timed++
			res.AllStepMS = append(res.AllStepMS, float64(dt.Nanoseconds())/1e6)
		}
		log.Info("bench step", "phase", phase, "step", i+1, "of", warmup+opts.Steps,
			"ms", round(float64(dt.Nanoseconds())/1e6, 2), "loss", round(loss, 4), "grad_norm", round(norm, 4))
	}
	res.Warmup, res.Steps = warm, timed
	if res.StoppedEarly != "" {
		log.Warn("bench stopped early", "reason", res.StoppedEarly)
	}
	res.finish(opts.PeakTFLOPS, opts.PeakDevice)
	return res, nil
}

// finish derives the statistics from AllStepMS and the peak: peakFlag when
// > 0, else the table's for peakDevice or, when that is empty, r.Device.
func (r *Result) finish(peakFlag float64, peakDevice string) {
	ms := slices.Clone(r.AllStepMS)
	slices.Sort(ms)
	var sum float64
	for _, x := range ms {
		sum += x
	}
	r.StepMS = StepStats{Median: median(ms), Mean: sum / float64(len(ms)), Min: ms[0], Max: ms[len(ms)-1]}
	r.TokensPerS = float64(r.TokensPerStep) / (r.StepMS.Mean / 1e3)
	r.AchievedTFLOPS = r.FLOPsPerToken * r.TokensPerS / 1e12
	dev := r.Device
	if peakDevice != "" {
		dev = Device{Kind: "gpu", Name: peakDevice}
	}
	switch peak, source, ok := PeakFor(dev, r.ComputeDType); {
	case peakFlag > 0:
		r.PeakTFLOPS, r.PeakSource = peakFlag, "--peak_tflops"
	case ok:
		r.PeakTFLOPS, r.PeakSource = peak, source
		if peakDevice != "" {
			r.PeakSource += " (--peak_device)"
		}
	default:
		r.MFUNote = source
		return
	}
	mfu := r.AchievedTFLOPS / r.PeakTFLOPS
	r.MFU = &mfu
}

// FLOPsPerToken returns the model FLOPs of one trained token (forward and
// backward) at sequence length T by FLOPsFormula, and the N it used: every
// parameter except the position-embedding table and, when lm_head is not tied
// to it, the token-embedding table (lookups, not matrix products). For a tied
// GPT this is nanoGPT's get_num_params(non_embedding=True).
func FLOPsPerToken(spec model.Spec, T int) (flops float64, n int64) {
	n, _ = spec.NumParams()
	for _, p := range spec.Params {
		if p.Name == "position_embedding_table.weight" || (p.Name == "token_embedding_table.weight" && !spec.TieWeights) {
			n -= p.Numel()
		}
	}
	return 6*float64(n) + 12*float64(spec.NLayer)*float64(spec.NEmbd)*float64(T), n
}

// peakEntry is one row of the peak table: dense tensor-core bf16 (and fp16)
// and plain fp32 (CUDA cores, no TF32), in TFLOP/s, from NVIDIA's datasheets.
type peakEntry struct {
	match      string // a substring of the device name, case-insensitive; first match wins
	bf16, fp32 float64
}

var peakTable = []peakEntry{
	{"H200 NVL", 835, 60},
	{"H200", 989, 67}, // SXM ("NVIDIA H200"); GH200 has the same rates
	{"H100 NVL", 835, 60},
	{"H100 PCIe", 756, 51},
	{"H100", 989, 67}, // SXM ("NVIDIA H100 80GB HBM3")
	{"A100", 312, 19.5},
}

// PeakFor looks up the dense peak of a device for a compute dtype ("BF16",
// "F16" or "F32"). ok is false for CPUs and unknown devices; source then says
// why. The fp32 peak is the CUDA-core rate: a backend whose fp32 products use
// TF32 tensor cores can exceed it (pass --peak_tflops, e.g. 494.5 on an H100
// SXM / H200, to compare with TF32's dense rate).
func PeakFor(d Device, computeDType string) (peak float64, source string, ok bool) {
	if d.Kind == "cpu" || d.Kind == "" {
		return 0, fmt.Sprintf("no peak known for %s device %q: pass --peak_tflops for MFU", cmp.Or(d.Kind, "an unnamed"), d.Name), false
	}
	name := strings.ToLower(d.Name)
	for _, e := range peakTable {
		if !strings.Contains(name, strings.ToLower(e.match)) {
			continue
		}
		switch computeDType {
		case "BF16", "F16":
			return e.bf16, fmt.Sprintf("table: %s, dense %s tensor cores", e.match, strings.ToLower(computeDType)), true
		default:
			return e.fp32, fmt.Sprintf("table: %s, fp32 without TF32", e.match), true
		}
	}
	return 0, fmt.Sprintf("no peak known for device %q: pass --peak_tflops for MFU", d.Name), false
}

// randomBatch draws B rows of T+1 uniform tokens: the first T are the inputs,
// the last T the targets, every loss weight 1, one segment per row.
func randomBatch(rng *rand.Rand, cfg config.Config) *pb.Batch {
	b, t := cfg.BatchSize, cfg.BlockSize
	tokens, targets := make([]int32, b*t), make([]int32, b*t)
	weights := make([]float32, b*t)
	row := make([]int32, t+1)
	for i := range b {
		for j := range row {
			row[j] = int32(rng.IntN(cfg.VocabSize))
		}
		copy(tokens[i*t:], row[:t])
		copy(targets[i*t:], row[1:])
	}
	for i := range weights {
		weights[i] = 1
	}
	return &pb.Batch{BatchSize: uint32(b), SeqLen: uint32(t), Tokens: tokens, Targets: targets, LossWeights: weights}
}

func median(sorted []float64) float64 {
	n := len(sorted)
	if n%2 == 1 {
		return sorted[n/2]
	}
	return (sorted[n/2-1] + sorted[n/2]) / 2
}

func finite(x float64) bool { return !math.IsNaN(x) && !math.IsInf(x, 0) }

func round(x float64, digits int) float64 {
	p := math.Pow(10, float64(digits))
	return math.Round(x*p) / p
}

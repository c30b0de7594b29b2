// Package train is the core training loop: it owns everything that must be
// the same on every backend — batches and loss weights, the learning-rate
// schedule, gradient accumulation and its normalisation, clipping policy,
// evaluation (the val split and MyPT's extra eval sets) and checkpoint
// cadence, the best checkpoint, early stopping and exact resume — and drives
// a backend through the sdk.Backend interface.
//
// A run directory holds:
//
//	latest/         the newest checkpoint (resumed from when the run restarts)
//	best/           the checkpoint with the lowest val loss so far
//	metrics.jsonl   one JSON object per step and per eval (eval_<name> per eval set,
//	                gen/gen_nocache with eval prompts)
//	loss.png        train, val and eval-set losses, redrawn at every eval
//	events.out.tfevents.*   the same metrics for TensorBoard (tensorboard --logdir RUN)
package train

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"time"

	"github.com/mypt/mypt/core/config"
	"github.com/mypt/mypt/core/dataset"
	"github.com/mypt/mypt/core/model"
	"github.com/mypt/mypt/sdk"
	pb "github.com/mypt/mypt/sdk/proto/backendv1"
)

// Run is one training run.
type Run struct {
	Config  config.Config
	Spec    model.Spec
	Backend sdk.Backend
	// BackendName is recorded in checkpoints.
	BackendName string
	Data        *dataset.Dataset
	// TokenizerState is the tokenizer.json written into checkpoints.
	TokenizerState []byte
	// OutDir is the run directory.
	OutDir string
	// InitFrom is a checkpoint directory whose parameters start a fresh run
	// ("" = the deterministic initialisation). Ignored when resuming.
	InitFrom string
	// StopAfter ends this invocation after that many optimizer steps,
	// saving a checkpoint as on SIGINT (0 = run to max_iters).
	StopAfter int
	// EvalPromptsFile is MyPT's --eval_prompts_file: JSON {"prompts":
	// {name: prompt}} generated greedily at every eval, with and without the
	// KV cache ("" = none). EvalMaxNewTokens caps each generation (0 = 64).
	EvalPromptsFile  string
	EvalMaxNewTokens int
	Log              *slog.Logger
	// Progress receives the progress bar; nil for none.
	Progress io.Writer
}

// Summary is what a finished (or stopped) run reports.
type Summary struct {
	StartStep, EndStep int // steps run in this invocation: [StartStep, EndStep)
	FinalLoss          float64
	BestValLoss        float64
	Tokens             int64
	Elapsed            time.Duration
	Stopped            string // why the run ended early, "" when it reached max_iters
}

// state is what a checkpoint records about the run besides tensors.
type state struct {
	Step          int    `json:"step"` // next optimizer step to run
	OptimizerStep uint64 `json:"-"`    // the checkpoint records it from the backend's state

	TrainSampler  dataset.Position `json:"train_sampler"`
	BestValLoss   float64          `json:"best_val_loss"`
	EvalsNoGain   int              `json:"evals_without_improvement"`
	EvaluatedStep int              `json:"evaluated_step"` // last step whose eval is logged; -1 none
	Tokens        int64            `json:"tokens_processed"`
	Elapsed       float64          `json:"elapsed_s"`
	Backend       string           `json:"backend"`
	Config        config.Config    `json:"training_config"`
}

// group is one optimizer step's micro-batches and the sampler position
// after drawing them.
type group struct {
	batches []*dataset.Batch
	after   dataset.Position
	err     error
}

// Train runs the loop until max_iters, a stop request, early stopping or an
// error. Cancelling ctx (SIGINT) saves a checkpoint and returns cleanly.
func (r *Run) Train(ctx context.Context) (*Summary, error) {
	cfg := r.Config
	log := r.Log
	if log == nil {
		log = slog.Default()
	}
	info, err := r.Backend.GetInfo(context.WithoutCancel(ctx), nil)
	if err != nil {
		return nil, fmt.Errorf("backend info: %w", err)
	}
	// Eval prompts and extra eval sets are checked before anything is
	// created or trained.
	gen, err := r.loadEvalPrompts(info, log)
	if err != nil {
		return nil, err
	}
	sets, err := r.openEvalSets()
	if err != nil {
		return nil, err
	}
	defer func() {
		for _, s := range sets {
			s.ds.Close()
		}
	}()
	if err := os.MkdirAll(r.OutDir, 0o755); err != nil {
		return nil, fmt.Errorf("create run directory: %w", err)
	}
	compute, err := ComputeDType(info, cfg.Precision)
	if err != nil {
		return nil, err
	}
	log.Info("precision", "config", cfg.Precision, "compute", compute.String(), "params", "F32")
	if err := CheckFreezing(info, cfg); err != nil {
		return nil, err
	}
	if _, err := r.Backend.Configure(context.WithoutCancel(ctx), ConfigureRequest(cfg, r.Spec, compute)); err != nil {
		return nil, fmt.Errorf("configure backend: %w", err)
	}

	st := state{BestValLoss: math.Inf(1), EvaluatedStep: -1, Backend: r.BackendName, Config: cfg}
	latest := filepath.Join(r.OutDir, "latest")
	switch {
	case isCheckpoint(latest):
		loaded, err := r.loadCheckpoint(ctx, latest, true)
		if err != nil {
			return nil, fmt.Errorf("resume from %s: %w", latest, err)
		}
		st = *loaded
		st.Backend, st.Config = r.BackendName, cfg
		log.Info("resuming", "checkpoint", latest, "step", st.Step)
	case r.InitFrom != "":
		if _, err := r.loadCheckpoint(ctx, r.InitFrom, false); err != nil {
			return nil, fmt.Errorf("initialise from %s: %w", r.InitFrom, err)
		}
		log.Info("initialised parameters", "from", r.InitFrom)
	default:
		if _, err := r.Backend.SetState(ctx, r.Spec.InitState(cfg.Seed)); err != nil {
			return nil, fmt.Errorf("initialise parameters: %w", err)
		}
	}

	train, err := r.trainSampler()
	if err != nil {
		return nil, err
	}
	if st.Step > 0 || st.TrainSampler.Count > 0 {
		if err := train.SetPosition(st.TrainSampler); err != nil {
			return nil, fmt.Errorf("restore sampler position: %w", err)
		}
	}
	if cfg.UseLossMask {
		log.Info("Using loss masking (assistant-only training)")
	}
	total, _ := r.Spec.NumParams()
	for _, s := range sets {
		log.Info("eval set", "name", s.name, "dir", s.dir, "val_episodes", s.ds.Val.NumEpisodes(), "logged_as", evalSetKey(s.name))
	}
	log.Info("training", "params", total, "steps", fmt.Sprintf("%d..%d", st.Step, cfg.MaxIters),
		"batch", cfg.BatchSize, "block", cfg.BlockSize, "grad_accum", cfg.GradAccumSteps, "backend", r.BackendName)

	metricsPath := filepath.Join(r.OutDir, "metrics.jsonl")
	if err := truncateMetrics(metricsPath, st.Step, st.EvaluatedStep); err != nil {
		return nil, err
	}
	metrics, err := openMetrics(metricsPath)
	if err != nil {
		return nil, err
	}
	defer metrics.Close()

	sched := Schedule{Peak: cfg.LearningRate, MinRatio: cfg.MinLRRatio, Warmup: cfg.WarmupSteps(), MaxIters: cfg.MaxIters}
	sum := &Summary{StartStep: st.Step, BestValLoss: st.BestValLoss}
	bar := newProgress(r.Progress, log, st.Step, cfg.MaxIters)
	defer bar.finish()

	// Batches are drawn ahead on another goroutine, overlapping data
	// loading with backend compute.
	loadCtx, stopLoading := context.WithCancel(context.WithoutCancel(ctx))
	defer stopLoading()
	groups := prefetch(loadCtx, train, cfg.GradAccumSteps, cfg.BatchSize, cfg.BlockSize, cfg.MaxIters-st.Step)

	started := time.Now()
	elapsedBefore := st.Elapsed
	save := func(reason string) error {
		st.Elapsed = elapsedBefore + time.Since(started).Seconds()
		if err := r.saveCheckpoint(context.WithoutCancel(ctx), latest, &st); err != nil {
			return fmt.Errorf("save checkpoint (%s) at step %d: %w", reason, st.Step, err)
		}
		log.Debug("saved checkpoint", "dir", latest, "step", st.Step, "reason", reason)
		return nil
	}
	stepsThisRun := 0
	// Backend calls run to completion even after SIGINT (work is never
	// half-applied); the loop checks for the interrupt between steps.
	work := context.WithoutCancel(ctx)
	for st.Step < cfg.MaxIters {
		if ctx.Err() != nil || (r.StopAfter > 0 && stepsThisRun >= r.StopAfter) {
			sum.Stopped = "interrupted"
			if ctx.Err() == nil {
				sum.Stopped = "stop requested"
			}
			if err := save(sum.Stopped); err != nil {
				return sum, err
			}
			break
		}
		if st.Step%cfg.EvalInterval == 0 && st.EvaluatedStep != st.Step {
			stop, err := r.evaluate(work, &st, sets, gen, metrics, log, sched.LR(st.Step))
			if err != nil {
				return sum, err
			}
			st.EvaluatedStep = st.Step
			if cfg.SaveEvery == 0 || st.Step%cfg.SaveEvery == 0 {
				if err := save("eval"); err != nil {
					return sum, err
				}
			}
			if stop != "" {
				sum.Stopped = stop
				break
			}
		} else if cfg.SaveEvery > 0 && st.Step%cfg.SaveEvery == 0 && st.Step > sum.StartStep {
			if err := save("save_every"); err != nil {
				return sum, err
			}
		}

		g, ok := <-groups
		if !ok || g.err != nil {
			return sum, fmt.Errorf("step %d: draw batches: %w", st.Step, g.err)
		}
		lr := sched.LR(st.Step)
		stepStart := time.Now()
		loss, tokens, gradNorm, err := r.step(work, g.batches, lr, st.Step)
		if err != nil {
			return sum, fmt.Errorf("step %d: %w", st.Step, err)
		}
		if math.IsNaN(loss) || math.IsInf(loss, 0) || math.IsNaN(gradNorm) || math.IsInf(gradNorm, 0) {
			return sum, fmt.Errorf("step %d: training diverged (loss %v, grad norm %v); stopping without saving — "+
				"the last good checkpoint is %s; lower learning_rate or check the data", st.Step, loss, gradNorm, latest)
		}
		st.Step++
		st.OptimizerStep++
		st.TrainSampler = g.after
		st.Tokens += tokens
		stepsThisRun++
		sum.FinalLoss = loss
		dt := time.Since(stepStart).Seconds()
		metrics.write(map[string]any{
			"event": "step", "step": st.Step, "loss": loss, "lr": lr, "grad_norm": gradNorm,
			"tokens": st.Tokens, "tokens_per_s": float64(tokens) / dt, "elapsed_s": elapsedBefore + time.Since(started).Seconds(),
		})
		bar.update(st.Step, loss, lr, float64(tokens)/dt)
	}
	if sum.Stopped == "" {
		if _, err := r.evaluate(work, &st, sets, gen, metrics, log, sched.LR(st.Step)); err != nil {
			return sum, err
		}
		st.EvaluatedStep = st.Step
		if err := save("final"); err != nil {
			return sum, err
		}
	}
	sum.EndStep, sum.Tokens, sum.BestValLoss = st.Step, st.Tokens, st.BestValLoss
	sum.Elapsed = time.Since(started)
	return sum, nil
}

// step runs one optimizer step over a group of micro-batches and returns
// the mean loss per supervised token, the tokens processed and the gradient
// norm before clipping.
func (r *Run) step(ctx context.Context, batches []*dataset.Batch, lr float64, step int) (loss float64, tokens int64, gradNorm float64, err error) {
	cfg := r.Config
	// Global normalisation divides every micro-batch's Σ weight·CE by the
	// supervised weight of the whole accumulated batch, so each supervised
	// token counts the same however the tokens fall across micro-batches.
	// MyPT instead averages the micro-batches' own means ("mypt"; docs/MYPT.md
	// §13 loss).
	var total float64
	for _, b := range batches {
		total += weightSum(b.Weights)
	}
	var lossSum, wsum float64
	for i, b := range batches {
		scale := 1 / math.Max(total, 1)
		if cfg.LossNormalization == "mypt" {
			scale = 1 / (float64(len(batches)) * math.Max(weightSum(b.Weights), 1))
		}
		resp, err := r.Backend.ForwardBackward(ctx, &pb.ForwardBackwardRequest{
			Batch:       toProto(b),
			GradScale:   float32(scale),
			DropoutSeed: dropoutSeed(cfg.Seed, step, i),
		})
		if err != nil {
			return 0, 0, 0, fmt.Errorf("forward/backward of micro-batch %d: %w", i, err)
		}
		lossSum += resp.GetLossSum()
		wsum += resp.GetWeightSum()
		tokens += int64(resp.GetTokens())
	}
	resp, err := r.Backend.OptimizerStep(ctx, &pb.OptimizerStepRequest{
		LearningRate: lr, WeightDecay: cfg.WeightDecay, ClipNorm: cfg.GradClip,
	})
	if err != nil {
		return 0, 0, 0, fmt.Errorf("optimizer step: %w", err)
	}
	return lossSum / math.Max(wsum, 1), tokens, resp.GetGradNorm(), nil
}

// dropoutSeed derives a distinct, reproducible seed per micro-batch so a
// resumed run draws the same dropout masks as an uninterrupted one.
func dropoutSeed(seed int64, step, micro int) uint64 {
	x := uint64(seed)*0x9E3779B97F4A7C15 ^ uint64(step)<<20 ^ uint64(micro)
	// splitmix64 finaliser
	x ^= x >> 30
	x *= 0xBF58476D1CE4E5B9
	x ^= x >> 27
	x *= 0x94D049BB133111EB
	return x ^ x>>31
}

func weightSum(w []float32) float64 {
	var s float64
	for _, x := range w {
		s += float64(x)
	}
	return s
}

func toProto(b *dataset.Batch) *pb.Batch {
	return &pb.Batch{
		BatchSize: uint32(b.B), SeqLen: uint32(b.T),
		Tokens: b.Tokens, Targets: b.Targets, LossWeights: b.Weights, SegmentIds: b.Segments,
	}
}

func (r *Run) samplerOptions(mode dataset.Mode) dataset.Options {
	cfg := r.Config
	opt := dataset.Options{
		Mode: mode, Shuffle: cfg.EpochShuffle, Seed: int64(cfg.EpochSeed), MinTokens: cfg.EpisodeMinTokens,
		UseLossMask: cfg.UseLossMask, Truncate: dataset.Truncation(cfg.Truncation),
	}
	if cfg.PadTokenID >= 0 {
		pad := uint32(cfg.PadTokenID)
		opt.PadID = &pad
	}
	return opt
}

func (r *Run) trainSampler() (*dataset.Sampler, error) {
	if r.Data.Train == nil || r.Data.Train.Empty() {
		return nil, fmt.Errorf("dataset %s has no training data", r.Data.Dir)
	}
	s, err := r.Data.Train.NewSampler(r.samplerOptions(dataset.Mode(r.Config.BatchSamplingMode)))
	if err != nil {
		return nil, fmt.Errorf("train sampler: %w", err)
	}
	return s, nil
}

// prefetch draws up to n groups of micro-batches ahead of the loop.
func prefetch(ctx context.Context, s *dataset.Sampler, accum, batch, block, n int) <-chan group {
	out := make(chan group, 2)
	go func() {
		defer close(out)
		for range max(n, 0) {
			g := group{batches: make([]*dataset.Batch, accum)}
			for i := range accum {
				g.batches[i], g.err = s.Next(batch, block)
				if g.err != nil {
					break
				}
			}
			g.after = s.Position()
			select {
			case out <- g:
			case <-ctx.Done():
				return
			}
			if g.err != nil {
				return
			}
		}
	}()
	return out
}

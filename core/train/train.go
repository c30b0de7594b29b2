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
	s, err := r.setup(ctx)
	if err != nil {
		return nil, err
	}
	defer s.close()
	return s.loop(ctx)
}

// session is a run that setup has prepared for the loop: the backend
// configured and holding the starting parameters, the train sampler at the
// position to continue from, the run directory created and the metrics file
// open. close releases what setup opened.
type session struct {
	run     *Run
	cfg     config.Config
	log     *slog.Logger
	sets    []evalSet
	gen     *evalGen // nil without eval prompts
	st      state
	train   *dataset.Sampler
	metrics *metricsFile
	sched   Schedule
	latest  string // the checkpoint directory resumed from and saved to

	// Set when the loop starts: the wall clock of this invocation, and the
	// time earlier invocations recorded, so checkpoints keep the total.
	started       time.Time
	elapsedBefore float64
}

// setup prepares a session. Everything that can fail without leaving
// anything on disk runs first — the backend's GetInfo, the eval prompts and
// eval sets, the precision and freezing checks, Configure, restoring or
// initialising the parameters (which writes only into the backend) and the
// train sampler — so a run refused by any of them creates no run directory.
// Only then is the directory created and the metrics file opened.
func (r *Run) setup(ctx context.Context) (_ *session, err error) {
	s := &session{run: r, cfg: r.Config, log: r.Log, latest: filepath.Join(r.OutDir, "latest")}
	if s.log == nil {
		s.log = slog.Default()
	}
	defer func() {
		if err != nil {
			s.close()
		}
	}()
	if err = s.configure(ctx); err != nil {
		return nil, err
	}
	if s.st, err = r.restoreState(ctx, s.latest, s.log); err != nil {
		return nil, err
	}
	if s.train, err = r.trainSampler(); err != nil {
		return nil, err
	}
	if s.st.Step > 0 || s.st.TrainSampler.Count > 0 {
		if err = s.train.SetPosition(s.st.TrainSampler); err != nil {
			return nil, fmt.Errorf("restore sampler position: %w", err)
		}
	}
	if err = os.MkdirAll(r.OutDir, 0o755); err != nil {
		return nil, fmt.Errorf("create run directory: %w", err)
	}
	s.logStart()
	if s.metrics, err = openRunMetrics(filepath.Join(r.OutDir, "metrics.jsonl"), &s.st); err != nil {
		return nil, err
	}
	s.sched = Schedule{Peak: s.cfg.LearningRate, MinRatio: s.cfg.MinLRRatio, Warmup: s.cfg.WarmupSteps(), MaxIters: s.cfg.MaxIters}
	return s, nil
}

// configure checks the run's inputs against the backend's GetInfo — eval
// prompts (tokenized, and whether the backend has a KV cache), eval sets,
// precision, freezing — and configures the backend. The checks come first so
// a mistake in them is reported as ours rather than as the backend's refusal.
func (s *session) configure(ctx context.Context) error {
	r := s.run
	info, err := r.Backend.GetInfo(context.WithoutCancel(ctx), nil)
	if err != nil {
		return fmt.Errorf("backend info: %w", err)
	}
	if s.gen, err = r.loadEvalPrompts(info, s.log); err != nil {
		return err
	}
	if s.sets, err = r.openEvalSets(); err != nil {
		return err
	}
	compute, err := ComputeDType(info, s.cfg.Precision)
	if err != nil {
		return err
	}
	s.log.Info("precision", "config", s.cfg.Precision, "compute", compute.String(), "params", "F32")
	if err := CheckFreezing(info, s.cfg); err != nil {
		return err
	}
	if _, err := r.Backend.Configure(context.WithoutCancel(ctx), ConfigureRequest(s.cfg, r.Spec, compute)); err != nil {
		return fmt.Errorf("configure backend: %w", err)
	}
	return nil
}

// restoreState puts the starting parameters into the configured backend and
// returns the run state to continue from: latest's checkpoint when the run
// directory has one (an exact resume: AdamW moments, step, sampler position,
// best val loss), else InitFrom's parameters, else the deterministic
// initialisation from the seed. The config and backend name are this
// invocation's, whatever the checkpoint recorded.
func (r *Run) restoreState(ctx context.Context, latest string, log *slog.Logger) (state, error) {
	st := state{BestValLoss: math.Inf(1), EvaluatedStep: -1}
	switch {
	case isCheckpoint(latest):
		loaded, err := r.loadCheckpoint(ctx, latest, true)
		if err != nil {
			return st, fmt.Errorf("resume from %s: %w", latest, err)
		}
		st = *loaded
		log.Info("resuming", "checkpoint", latest, "step", st.Step)
	case r.InitFrom != "":
		if _, err := r.loadCheckpoint(ctx, r.InitFrom, false); err != nil {
			return st, fmt.Errorf("initialise from %s: %w", r.InitFrom, err)
		}
		log.Info("initialised parameters", "from", r.InitFrom)
	default:
		if _, err := r.Backend.SetState(ctx, r.Spec.InitState(r.Config.Seed)); err != nil {
			return st, fmt.Errorf("initialise parameters: %w", err)
		}
	}
	st.Backend, st.Config = r.BackendName, r.Config
	return st, nil
}

// logStart describes the run about to start.
func (s *session) logStart() {
	cfg := s.cfg
	if cfg.UseLossMask {
		s.log.Info("Using loss masking (assistant-only training)")
	}
	for _, set := range s.sets {
		s.log.Info("eval set", "name", set.name, "dir", set.dir, "val_episodes", set.ds.Val.NumEpisodes(), "logged_as", evalSetKey(set.name))
	}
	total, _ := s.run.Spec.NumParams()
	s.log.Info("training", "params", total, "steps", fmt.Sprintf("%d..%d", s.st.Step, cfg.MaxIters),
		"batch", cfg.BatchSize, "block", cfg.BlockSize, "grad_accum", cfg.GradAccumSteps, "backend", s.run.BackendName)
}

// openRunMetrics opens the run's metrics file for appending, first dropping
// the lines after st's checkpoint, which this invocation writes again.
func openRunMetrics(path string, st *state) (*metricsFile, error) {
	if err := truncateMetrics(path, st.Step, st.EvaluatedStep); err != nil {
		return nil, err
	}
	return openMetrics(path)
}

// close releases what setup opened; a partly set-up session is fine.
func (s *session) close() {
	if s.metrics != nil {
		s.metrics.Close()
	}
	for _, set := range s.sets {
		set.ds.Close()
	}
}

// loop trains from the session's state to max_iters, saving latest at every
// eval (or every save_every steps), on a stop request and at the end. The
// summary is returned with an error too: it covers the steps that ran.
func (s *session) loop(ctx context.Context) (*Summary, error) {
	cfg, st := s.cfg, &s.st
	sum := &Summary{StartStep: st.Step, BestValLoss: st.BestValLoss}
	bar := newProgress(s.run.Progress, s.log, st.Step, cfg.MaxIters)
	defer bar.finish()

	// Batches are drawn ahead on another goroutine, overlapping data
	// loading with backend compute.
	loadCtx, stopLoading := context.WithCancel(context.WithoutCancel(ctx))
	defer stopLoading()
	groups := prefetch(loadCtx, s.train, cfg.GradAccumSteps, cfg.BatchSize, cfg.BlockSize, cfg.MaxIters-st.Step)

	s.started, s.elapsedBefore = time.Now(), st.Elapsed
	stepsThisRun := 0
	// Backend calls run to completion even after SIGINT (work is never
	// half-applied); the loop checks for the interrupt between steps.
	work := context.WithoutCancel(ctx)
	for st.Step < cfg.MaxIters {
		if reason := s.stopReason(ctx, stepsThisRun); reason != "" {
			sum.Stopped = reason
			if err := s.save(work, reason); err != nil {
				return sum, err
			}
			break
		}
		stop, err := s.evalAndSave(work, sum.StartStep)
		if err != nil {
			return sum, err
		}
		if stop != "" {
			sum.Stopped = stop
			break
		}
		g, ok := <-groups
		if !ok || g.err != nil {
			return sum, fmt.Errorf("step %d: draw batches: %w", st.Step, g.err)
		}
		loss, err := s.trainStep(work, g, bar)
		if err != nil {
			return sum, err
		}
		stepsThisRun++
		sum.FinalLoss = loss
	}
	if sum.Stopped == "" {
		// Reached max_iters: the final step gets its eval and a checkpoint.
		if _, err := s.evaluate(work); err != nil {
			return sum, err
		}
		if err := s.save(work, "final"); err != nil {
			return sum, err
		}
	}
	sum.EndStep, sum.Tokens, sum.BestValLoss = st.Step, st.Tokens, st.BestValLoss
	sum.Elapsed = time.Since(s.started)
	return sum, nil
}

// stopReason says why the loop should stop before the next step: SIGINT
// ("interrupted") or StopAfter steps done in this invocation ("stop
// requested"); "" to go on.
func (s *session) stopReason(ctx context.Context, stepsThisRun int) string {
	switch {
	case ctx.Err() != nil:
		return "interrupted"
	case s.run.StopAfter > 0 && stepsThisRun >= s.run.StopAfter:
		return "stop requested"
	}
	return ""
}

// evalAndSave runs the eval due at the current step, unless a resumed run
// already logged it, and saves latest when that eval or save_every asks for
// it. It returns a non-empty reason when training should stop.
func (s *session) evalAndSave(ctx context.Context, startStep int) (string, error) {
	cfg, st := s.cfg, &s.st
	if st.Step%cfg.EvalInterval != 0 || st.EvaluatedStep == st.Step {
		// A resumed run does not save again the step it started from.
		if cfg.SaveEvery > 0 && st.Step%cfg.SaveEvery == 0 && st.Step > startStep {
			return "", s.save(ctx, "save_every")
		}
		return "", nil
	}
	stop, err := s.evaluate(ctx)
	if err != nil {
		return "", err
	}
	if cfg.SaveEvery == 0 || st.Step%cfg.SaveEvery == 0 {
		if err := s.save(ctx, "eval"); err != nil {
			return "", err
		}
	}
	return stop, nil
}

// evaluate runs an eval at the current step (Run.evaluate) and records it as
// logged, so a run resumed from a checkpoint of this step does not repeat it.
func (s *session) evaluate(ctx context.Context) (string, error) {
	stop, err := s.run.evaluate(ctx, &s.st, s.sets, s.gen, s.metrics, s.log, s.sched.LR(s.st.Step))
	if err != nil {
		return "", err
	}
	s.st.EvaluatedStep = s.st.Step
	return stop, nil
}

// trainStep runs one optimizer step over g and advances the run state,
// metrics and progress bar. A non-finite loss or gradient norm stops the run
// without saving, so latest stays the last good checkpoint.
func (s *session) trainStep(ctx context.Context, g group, bar *progress) (float64, error) {
	st := &s.st
	lr := s.sched.LR(st.Step)
	stepStart := time.Now()
	loss, tokens, gradNorm, err := s.run.step(ctx, g.batches, lr, st.Step)
	if err != nil {
		return 0, fmt.Errorf("step %d: %w", st.Step, err)
	}
	if math.IsNaN(loss) || math.IsInf(loss, 0) || math.IsNaN(gradNorm) || math.IsInf(gradNorm, 0) {
		return 0, fmt.Errorf("step %d: training diverged (loss %v, grad norm %v); stopping without saving — "+
			"the last good checkpoint is %s; lower learning_rate or check the data", st.Step, loss, gradNorm, s.latest)
	}
	st.Step++
	st.OptimizerStep++
	st.TrainSampler = g.after
	st.Tokens += tokens
	dt := time.Since(stepStart).Seconds()
	s.metrics.write(map[string]any{
		"event": "step", "step": st.Step, "loss": loss, "lr": lr, "grad_norm": gradNorm,
		"tokens": st.Tokens, "tokens_per_s": float64(tokens) / dt, "elapsed_s": s.elapsed(),
	})
	bar.update(st.Step, loss, lr, float64(tokens)/dt)
	return loss, nil
}

// save writes the run's state to latest; reason is for the log and errors.
func (s *session) save(ctx context.Context, reason string) error {
	s.st.Elapsed = s.elapsed()
	if err := s.run.saveCheckpoint(ctx, s.latest, &s.st); err != nil {
		return fmt.Errorf("save checkpoint (%s) at step %d: %w", reason, s.st.Step, err)
	}
	s.log.Debug("saved checkpoint", "dir", s.latest, "step", s.st.Step, "reason", reason)
	return nil
}

// elapsed is the run's training time in seconds, earlier invocations included.
func (s *session) elapsed() float64 {
	return s.elapsedBefore + time.Since(s.started).Seconds()
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

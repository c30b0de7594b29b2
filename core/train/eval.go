package train

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"path/filepath"

	"github.com/mypt/mypt/core/dataset"
	pb "github.com/mypt/mypt/sdk/proto/backendv1"
)

// evaluate measures val loss and masked-token accuracy over a fixed val
// order (a fresh sequential sampler each time, so every eval sees the same
// batches and no training data is consumed), logs it, keeps the best
// checkpoint and applies early stopping. It returns a non-empty reason when
// training should stop.
func (r *Run) evaluate(ctx context.Context, st *state, m *metricsFile, log *slog.Logger, lr float64) (string, error) {
	cfg := r.Config
	if r.Data.Val == nil || r.Data.Val.Empty() {
		log.Warn("no validation data: skipping eval (the best checkpoint and early stopping need val data)", "step", st.Step)
		return "", nil
	}
	val, err := r.Data.Val.NewSampler(r.samplerOptions(dataset.ModeSequential))
	if err != nil {
		return "", fmt.Errorf("val sampler: %w", err)
	}
	// Never walk the val set more than once per eval: the rows of the last
	// batch that wrap around to the start get zero weight.
	n := val.NumEpisodes()
	batches := min(cfg.EvalIters, (n+cfg.BatchSize-1)/cfg.BatchSize)
	var lossSum, wsum float64
	var correct, counted uint64
	for i := range batches {
		b, err := val.Next(cfg.BatchSize, cfg.BlockSize)
		if err != nil {
			return "", fmt.Errorf("val batch: %w", err)
		}
		if fresh := n - i*cfg.BatchSize; fresh < cfg.BatchSize {
			clear(b.Weights[fresh*b.T:])
		}
		resp, err := r.Backend.Evaluate(ctx, &pb.EvaluateRequest{Batch: toProto(b)})
		if err != nil {
			return "", fmt.Errorf("evaluate at step %d: %w", st.Step, err)
		}
		lossSum += resp.GetLossSum()
		wsum += resp.GetWeightSum()
		correct += resp.GetCorrect()
		counted += resp.GetCounted()
	}
	valLoss := lossSum / math.Max(wsum, 1)
	acc := math.NaN()
	if counted > 0 {
		acc = float64(correct) / float64(counted)
	}
	improved := valLoss < st.BestValLoss
	if improved {
		st.BestValLoss, st.EvalsNoGain = valLoss, 0
	} else {
		st.EvalsNoGain++
	}
	event := map[string]any{
		"event": "eval", "step": st.Step, "val_loss": valLoss, "val_batches": batches, "lr": lr,
		"val_supervised_tokens": wsum, "best_val_loss": st.BestValLoss,
	}
	if counted > 0 {
		event["val_masked_token_acc"] = acc
	}
	m.write(event)
	if err := writeLossPlot(filepath.Join(r.OutDir, "metrics.jsonl"), filepath.Join(r.OutDir, "loss.png")); err != nil {
		log.Warn("loss plot not updated", "err", err)
	}
	log.Info("eval", "step", fmt.Sprintf("%d/%d", st.Step, cfg.MaxIters), "val_loss", fmt.Sprintf("%.4f", valLoss),
		"val_acc", fmt.Sprintf("%.3f", acc), "lr", fmt.Sprintf("%.2e", lr), "best", improved)
	if improved {
		if err := r.saveCheckpoint(context.WithoutCancel(ctx), filepath.Join(r.OutDir, "best"), st); err != nil {
			return "", fmt.Errorf("save best checkpoint at step %d: %w", st.Step, err)
		}
	}
	if cfg.EarlyStopPatience > 0 && st.EvalsNoGain >= cfg.EarlyStopPatience {
		log.Info("early stopping", "evals_without_improvement", st.EvalsNoGain, "best_val_loss", st.BestValLoss)
		return "early stopping", nil
	}
	return "", nil
}

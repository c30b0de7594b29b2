package train

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"

	"github.com/mypt/mypt/core/dataset"
	"github.com/mypt/mypt/core/tokenizer"
	pb "github.com/mypt/mypt/sdk/proto/backendv1"
)

// evalResult sums one evaluation pass over a split.
type evalResult struct {
	lossSum, weightSum float64
	correct, counted   uint64
	batches            int
}

// loss is the mean loss per supervised token.
func (e evalResult) loss() float64 { return e.lossSum / math.Max(e.weightSum, 1) }

// evalSplit measures loss and masked-token accuracy over at most eval_iters
// batches of a split in a fixed, sequential order (a fresh sequential
// sampler each time, so every eval sees the same batches and no training
// data is consumed). The main val loss and every extra eval set go through
// it.
func (r *Run) evalSplit(ctx context.Context, sp *dataset.Split) (evalResult, error) {
	cfg := r.Config
	var res evalResult
	s, err := sp.NewSampler(r.samplerOptions(dataset.ModeSequential))
	if err != nil {
		return res, fmt.Errorf("sampler: %w", err)
	}
	// Never walk the split more than once per eval: the rows of the last
	// batch that wrap around to the start get zero weight.
	n := s.NumEpisodes()
	res.batches = min(cfg.EvalIters, (n+cfg.BatchSize-1)/cfg.BatchSize)
	for i := range res.batches {
		b, err := s.Next(cfg.BatchSize, cfg.BlockSize)
		if err != nil {
			return res, fmt.Errorf("batch %d: %w", i, err)
		}
		if fresh := n - i*cfg.BatchSize; fresh < cfg.BatchSize {
			clear(b.Weights[fresh*b.T:])
		}
		resp, err := r.Backend.Evaluate(ctx, &pb.EvaluateRequest{Batch: toProto(b)})
		if err != nil {
			return res, err
		}
		res.lossSum += resp.GetLossSum()
		res.weightSum += resp.GetWeightSum()
		res.correct += resp.GetCorrect()
		res.counted += resp.GetCounted()
	}
	return res, nil
}

// evalSet is one of MyPT's extra eval sets (config eval_sets, or
// --eval_dataset_dir as "general"): its val split is evaluated after the
// main val loss and logged as eval_<name>.
type evalSet struct {
	name, dir string
	ds        *dataset.Dataset
}

// openEvalSets opens and checks the configured eval sets, in name order:
// each must be a prepared dataset with a non-empty val split, prepared with
// the same tokenizer as the training dataset, and with no token id outside
// the model's vocabulary. Errors name the set and its directory.
func (r *Run) openEvalSets() ([]evalSet, error) {
	var sets []evalSet
	closeAll := func() {
		for _, s := range sets {
			s.ds.Close()
		}
	}
	for _, name := range slices.Sorted(maps.Keys(r.Config.EvalSets)) {
		dir := r.Config.EvalSets[name]
		ds, err := dataset.Open(dir)
		if err != nil {
			closeAll()
			return nil, fmt.Errorf("eval set %q (%s): %w", name, dir, err)
		}
		sets = append(sets, evalSet{name: name, dir: dir, ds: ds})
		if err := r.checkEvalSet(ds); err != nil {
			closeAll()
			return nil, fmt.Errorf("eval set %q (%s): %w", name, dir, err)
		}
	}
	return sets, nil
}

func (r *Run) checkEvalSet(ds *dataset.Dataset) error {
	if ds.Val == nil || ds.Val.Empty() {
		return errors.New("no val split (val/" + dataset.TokensFile + "): extra eval sets are evaluated on their val split; " +
			"prepare the set with mypt prepare --val_split or --val_only")
	}
	if _, err := ds.Val.NewSampler(r.samplerOptions(dataset.ModeSequential)); err != nil {
		return fmt.Errorf("val split: %w", err)
	}
	if err := sameTokenizer(r.Data.Dir, ds.Dir); err != nil {
		return err
	}
	for _, sh := range ds.Val.Shards {
		for _, id := range sh.Tokens {
			if int(id) >= r.Config.VocabSize {
				return fmt.Errorf("val split has token id %d, outside the model's vocab_size %d: the set was prepared with another tokenizer or vocabulary", id, r.Config.VocabSize)
			}
		}
	}
	return nil
}

// sameTokenizer checks that two dataset directories were prepared with the
// same tokenizer (their tokenizer_state.json files describe the same
// tokenizer and vocabulary, or neither has one).
func sameTokenizer(trainDir, setDir string) error {
	read := func(dir string) (*tokenizer.Tokenizer, []byte, error) {
		b, err := os.ReadFile(filepath.Join(dir, dataset.TokenizerFile))
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil, nil
		}
		if err != nil {
			return nil, nil, err
		}
		tok, err := tokenizer.Parse(b, tokenizer.DefaultVocabSize)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", filepath.Join(dir, dataset.TokenizerFile), err)
		}
		canon, err := tokenizer.MarshalState(tok.State())
		return tok, canon, err
	}
	trainTok, trainState, err := read(trainDir)
	if err != nil {
		return fmt.Errorf("training dataset: %w", err)
	}
	setTok, setState, err := read(setDir)
	if err != nil {
		return err
	}
	switch {
	case trainTok == nil && setTok == nil:
		return nil
	case setTok == nil:
		return fmt.Errorf("no %s, so it cannot be checked against the training dataset's tokenizer (%s); prepare it with mypt prepare and the same --tokenization",
			dataset.TokenizerFile, describeTokenizer(trainTok))
	case trainTok == nil:
		return fmt.Errorf("it has a %s (%s) but the training dataset %s has none; prepare both the same way",
			dataset.TokenizerFile, describeTokenizer(setTok), trainDir)
	case !bytes.Equal(trainState, setState):
		return fmt.Errorf("prepared with a different tokenizer (%s) than the training dataset %s (%s); prepare it with the same --tokenization",
			describeTokenizer(setTok), trainDir, describeTokenizer(trainTok))
	}
	return nil
}

func describeTokenizer(t *tokenizer.Tokenizer) string {
	return fmt.Sprintf("%s, vocab %d", t.Kind(), t.VocabSize())
}

// evaluate measures the val loss and masked-token accuracy, then each extra
// eval set's loss (evalSplit for all of them), generates the eval prompts
// (evalgen.go), logs them, keeps the best checkpoint and applies early
// stopping — both by the main val loss only.
// It returns a non-empty reason when training should stop.
func (r *Run) evaluate(ctx context.Context, st *state, sets []evalSet, gen *evalGen, m *metricsFile, log *slog.Logger, lr float64) (string, error) {
	cfg := r.Config
	if r.Data.Val == nil || r.Data.Val.Empty() {
		log.Warn("no validation data: skipping eval, eval_sets included (the best checkpoint and early stopping need val data)", "step", st.Step)
		return "", nil
	}
	res, err := r.evalSplit(ctx, r.Data.Val)
	if err != nil {
		return "", fmt.Errorf("eval at step %d: val: %w", st.Step, err)
	}
	valLoss := res.loss()
	acc := math.NaN()
	if res.counted > 0 {
		acc = float64(res.correct) / float64(res.counted)
	}
	setLoss := make([]float64, len(sets))
	for i, s := range sets {
		sr, err := r.evalSplit(ctx, s.ds.Val)
		if err != nil {
			return "", fmt.Errorf("eval at step %d: eval set %q (%s): %w", st.Step, s.name, s.dir, err)
		}
		setLoss[i] = sr.loss()
	}
	var genRes *genResult
	if gen != nil {
		if genRes, err = gen.run(ctx, r, st.Step); err != nil {
			return "", fmt.Errorf("eval at step %d: %w", st.Step, err)
		}
	}
	improved := valLoss < st.BestValLoss
	if improved {
		st.BestValLoss, st.EvalsNoGain = valLoss, 0
	} else {
		st.EvalsNoGain++
	}
	event := map[string]any{
		"event": "eval", "step": st.Step, "val_loss": valLoss, "val_batches": res.batches, "lr": lr,
		"val_supervised_tokens": res.weightSum, "best_val_loss": st.BestValLoss,
	}
	if res.counted > 0 {
		event["val_masked_token_acc"] = acc
	}
	attrs := []any{"step", fmt.Sprintf("%d/%d", st.Step, cfg.MaxIters), "val_loss", fmt.Sprintf("%.4f", valLoss),
		"val_acc", fmt.Sprintf("%.3f", acc)}
	for i, s := range sets {
		event[evalSetKey(s.name)] = setLoss[i]
		attrs = append(attrs, evalSetKey(s.name), fmt.Sprintf("%.4f", setLoss[i]))
	}
	attrs = append(attrs, "lr", fmt.Sprintf("%.2e", lr), "best", improved)
	if genRes != nil {
		genRes.addTo(event)
	}
	m.write(event)
	if err := writeLossPlot(filepath.Join(r.OutDir, "metrics.jsonl"), filepath.Join(r.OutDir, "loss.png")); err != nil {
		log.Warn("loss plot not updated", "err", err)
	}
	log.Info("eval", attrs...)
	if genRes != nil {
		genRes.log(log)
	}
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

// evalSetKey is the metrics.jsonl field (and log attribute) of an extra
// eval set's loss: MyPT's eval_<name>.
func evalSetKey(name string) string { return "eval_" + name }

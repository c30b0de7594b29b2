package config

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"
)

// Validate range-checks every value and names the first bad key.
func (c *Config) Validate() error {
	var errs []error
	bad := func(key string, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
	}
	positive := map[string]int{
		"batch_size": c.BatchSize, "block_size": c.BlockSize, "vocab_size": c.VocabSize,
		"n_embd": c.NEmbd, "n_head": c.NHead, "n_layer": c.NLayer, "max_iters": c.MaxIters,
		"eval_interval": c.EvalInterval, "eval_iters": c.EvalIters, "grad_accum_steps": c.GradAccumSteps,
		"episode_min_tokens": c.EpisodeMinTokens,
	}
	for _, key := range []string{"batch_size", "block_size", "vocab_size", "n_embd", "n_head", "n_layer",
		"max_iters", "eval_interval", "eval_iters", "grad_accum_steps", "episode_min_tokens"} {
		if positive[key] < 1 {
			bad(key, "must be ≥ 1, got %d", positive[key])
		}
	}
	// The model's sizes travel as the protocol's uint32 fields.
	for _, key := range []string{"batch_size", "block_size", "vocab_size", "n_embd", "n_head", "n_layer"} {
		if positive[key] > math.MaxUint32 {
			bad(key, "must be ≤ %d, got %d", uint32(math.MaxUint32), positive[key])
		}
	}
	if c.NHead >= 1 && c.NEmbd%c.NHead != 0 {
		bad("n_embd", "%d is not divisible by n_head %d", c.NEmbd, c.NHead)
	}
	if c.PosEncoding == "rope" && c.NHead >= 1 && (c.NEmbd/c.NHead)%2 != 0 {
		bad("n_embd", "rope needs an even head size, n_embd/n_head = %d", c.NEmbd/c.NHead)
	}
	inRange := func(key string, v, lo, hi float64, loOpen bool) {
		if math.IsNaN(v) || v > hi || v < lo || (loOpen && v == lo) {
			open := "["
			if loOpen {
				open = "("
			}
			bad(key, "must be in %s%g, %g], got %g", open, lo, hi, v)
		}
	}
	inRange("dropout", c.Dropout, 0, 0.99, false)
	inRange("learning_rate", c.LearningRate, 0, 10, true)
	inRange("weight_decay", c.WeightDecay, 0, 10, false)
	inRange("grad_clip", c.GradClip, 0, 1e6, false)
	inRange("beta1", c.Beta1, 0, 0.999999, false)
	inRange("beta2", c.Beta2, 0, 0.999999, false)
	inRange("adam_eps", c.AdamEps, 0, 1, true)
	inRange("min_lr_ratio", c.MinLRRatio, 0, 1, false)
	inRange("rope_theta", c.RopeTheta, 1, 1e9, false)
	inRange("rope_scale", c.RopeScale, 1, 1e6, false)
	inRange("neftune_alpha", c.NeftuneAlpha, 0, 1e3, false)
	if c.WarmupIters < 0 || math.IsNaN(c.WarmupIters) {
		bad("warmup_iters", "must be ≥ 0 (a fraction of max_iters below 1, else steps), got %g", c.WarmupIters)
	} else if c.WarmupIters >= 1 && c.WarmupIters != math.Trunc(c.WarmupIters) {
		bad("warmup_iters", "%g is neither a fraction in (0,1) nor a whole number of steps", c.WarmupIters)
	}
	if c.SaveEvery < 0 {
		bad("save_every", "must be ≥ 0 (0 saves at every eval), got %d", c.SaveEvery)
	}
	if c.FreezeLayers < 0 || c.NLayer >= 1 && c.FreezeLayers > c.NLayer {
		bad("freeze_layers", "must be in [0, n_layer=%d] (the number of leading transformer blocks to freeze), got %d", c.NLayer, c.FreezeLayers)
	}
	if c.EarlyStopPatience < 0 {
		bad("early_stopping_patience", "must be ≥ 0 (0 disables), got %d", c.EarlyStopPatience)
	}
	if c.PadTokenID < -1 || c.PadTokenID >= c.VocabSize {
		bad("pad_token_id", "must be null/-1 (the tokenizer's eot) or in [0, vocab_size), got %d", c.PadTokenID)
	}
	oneOf := func(key, v string, allowed ...string) {
		for _, a := range allowed {
			if v == a {
				return
			}
		}
		bad(key, "must be one of %q, got %q", allowed, v)
	}
	oneOf("pos_encoding", c.PosEncoding, "learned", "rope")
	oneOf("mlp_type", c.MLPType, "gelu", "swiglu")
	oneOf("norm_type", c.NormType, "layernorm", "rmsnorm")
	oneOf("batch_sampling_mode", c.BatchSamplingMode, "epoch", "random")
	oneOf("loss_normalization", c.LossNormalization, "global", "mypt")
	oneOf("truncation", c.Truncation, "tail", "head")
	oneOf("precision", c.Precision, "auto", "fp32", "bf16")
	for _, name := range slices.Sorted(maps.Keys(c.EvalSets)) {
		switch {
		case strings.TrimSpace(name) == "":
			bad("eval_sets", "a set has an empty name (its dataset is %q)", c.EvalSets[name])
		case strings.TrimSpace(c.EvalSets[name]) == "":
			bad("eval_sets", "set %q has an empty dataset directory", name)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("invalid config: %w", errors.Join(errs...))
	}
	return nil
}

// WarmupSteps resolves warmup_iters: a fraction of max_iters when in (0,1),
// else a step count (MyPT's rule).
func (c *Config) WarmupSteps() int {
	if c.WarmupIters > 0 && c.WarmupIters < 1 {
		return int(c.WarmupIters * float64(c.MaxIters))
	}
	return int(c.WarmupIters)
}

// Package config loads a training configuration: mypt's defaults, then a
// MyPT-compatible JSON file, then MYPT_* environment variables, then
// command-line flags, each overriding the one before. MyPT's JSON configs
// load as they are; an unknown key is an error naming it and the closest
// known key, and every value is range-checked.
package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"os"
	"sort"
	"strings"

	kjson "github.com/knadh/koanf/parsers/json"
	"github.com/knadh/koanf/providers/confmap"
	"github.com/knadh/koanf/providers/posflag"
	"github.com/knadh/koanf/providers/rawbytes"
	"github.com/knadh/koanf/providers/structs"
	"github.com/knadh/koanf/v2"
	"github.com/spf13/pflag"
)

// Config is a model plus training configuration. Keys are MyPT's where MyPT
// has one (docs/MYPT.md §20 configuration keys); the rest are mypt's own.
type Config struct {
	// Model (MyPT GPTConfig).
	BatchSize            int     `koanf:"batch_size" json:"batch_size"`
	BlockSize            int     `koanf:"block_size" json:"block_size"`
	VocabSize            int     `koanf:"vocab_size" json:"vocab_size"`
	NEmbd                int     `koanf:"n_embd" json:"n_embd"`
	NHead                int     `koanf:"n_head" json:"n_head"`
	NLayer               int     `koanf:"n_layer" json:"n_layer"`
	Dropout              float64 `koanf:"dropout" json:"dropout"`
	Bias                 bool    `koanf:"bias" json:"bias"`
	TieWeights           bool    `koanf:"tie_weights" json:"tie_weights"`
	PosEncoding          string  `koanf:"pos_encoding" json:"pos_encoding"` // learned | rope
	MLPType              string  `koanf:"mlp_type" json:"mlp_type"`         // gelu | swiglu
	NormType             string  `koanf:"norm_type" json:"norm_type"`       // layernorm | rmsnorm
	RopeTheta            float64 `koanf:"rope_theta" json:"rope_theta"`
	RopeScale            float64 `koanf:"rope_scale" json:"rope_scale"`
	SegmentPositionReset bool    `koanf:"segment_position_reset" json:"segment_position_reset"`
	NeftuneAlpha         float64 `koanf:"neftune_alpha" json:"neftune_alpha"`

	// Data (MyPT episode loader).
	UseLossMask       bool   `koanf:"use_loss_mask" json:"use_loss_mask"`
	BatchSamplingMode string `koanf:"batch_sampling_mode" json:"batch_sampling_mode"` // epoch | random
	PadTokenID        int    `koanf:"pad_token_id" json:"pad_token_id"`               // -1: the tokenizer's eot
	EpisodeMinTokens  int    `koanf:"episode_min_tokens" json:"episode_min_tokens"`
	EpochSeed         int    `koanf:"epoch_seed" json:"epoch_seed"`
	EpochShuffle      bool   `koanf:"epoch_shuffle" json:"epoch_shuffle"`
	EpochDropLast     bool   `koanf:"epoch_drop_last" json:"epoch_drop_last"`

	// Training (MyPT train.py keys).
	LearningRate   float64 `koanf:"learning_rate" json:"learning_rate"`
	MaxIters       int     `koanf:"max_iters" json:"max_iters"`
	EvalInterval   int     `koanf:"eval_interval" json:"eval_interval"`
	EvalIters      int     `koanf:"eval_iters" json:"eval_iters"`
	SaveEvery      int     `koanf:"save_every" json:"save_every"`     // 0: at every eval
	WarmupIters    float64 `koanf:"warmup_iters" json:"warmup_iters"` // fraction of max_iters if in (0,1), else steps
	GradClip       float64 `koanf:"grad_clip" json:"grad_clip"`
	WeightDecay    float64 `koanf:"weight_decay" json:"weight_decay"`
	GradAccumSteps int     `koanf:"grad_accum_steps" json:"grad_accum_steps"`
	// FreezeLayers freezes the first N transformer blocks and FreezeEmbeddings the
	// token and position embedding tables (with tied weights also lm_head.weight, the
	// same tensor), as MyPT sets requires_grad=False: no gradient norm share, no AdamW
	// update, no weight decay. Needs a backend declaring FEATURE_FROZEN_PARAMS.
	FreezeLayers     int  `koanf:"freeze_layers" json:"freeze_layers"`
	FreezeEmbeddings bool `koanf:"freeze_embeddings" json:"freeze_embeddings"`

	// mypt's own.
	Seed              int64   `koanf:"seed" json:"seed"` // initialisation and dropout
	Beta1             float64 `koanf:"beta1" json:"beta1"`
	Beta2             float64 `koanf:"beta2" json:"beta2"`
	AdamEps           float64 `koanf:"adam_eps" json:"adam_eps"`
	MinLRRatio        float64 `koanf:"min_lr_ratio" json:"min_lr_ratio"`
	LossNormalization string  `koanf:"loss_normalization" json:"loss_normalization"` // global | mypt
	EarlyStopPatience int     `koanf:"early_stopping_patience" json:"early_stopping_patience"`
	Truncation        string  `koanf:"truncation" json:"truncation"` // tail (MyPT) | head
	// Precision is the backend's compute dtype: auto (bf16 matrix products on an
	// accelerator that declares them, as MyPT autocasts on CUDA; fp32 otherwise),
	// fp32 or bf16. Master weights and AdamW moments stay fp32.
	Precision string `koanf:"precision" json:"precision"`

	// EvalSets are MyPT's extra eval sets: name → prepared dataset directory
	// (relative paths are relative to the working directory, as in MyPT).
	// Each set's val split is evaluated at every eval and logged as
	// eval_<name>. Read from the config file's "eval_sets" object by Load
	// (not through koanf, whose "." delimiter would split names with dots);
	// mypt train --eval_dataset_dir DIR adds the set "general".
	EvalSets map[string]string `koanf:"-" json:"eval_sets,omitempty"`
}

// Default returns mypt's defaults: MyPT's GPTConfig and train.py defaults
// where they exist.
func Default() Config {
	return Config{
		BatchSize: 32, BlockSize: 256, VocabSize: 50304, NEmbd: 384, NHead: 6, NLayer: 6,
		Dropout: 0.2, PosEncoding: "learned", MLPType: "gelu", NormType: "layernorm",
		RopeTheta: 10000, RopeScale: 1, SegmentPositionReset: true,
		BatchSamplingMode: "epoch", PadTokenID: -1, EpisodeMinTokens: 2, EpochSeed: 1337,
		EpochShuffle: true, EpochDropLast: true,
		LearningRate: 3e-4, MaxIters: 1000, EvalInterval: 50, EvalIters: 200, GradClip: 1.0,
		WeightDecay: 0.1, GradAccumSteps: 1,
		Seed: 1337, Beta1: 0.9, Beta2: 0.95, AdamEps: 1e-8, MinLRRatio: 0.1,
		LossNormalization: "global", Truncation: "tail", Precision: "auto",
	}
}

// ignoredKey is why mypt does not act on an accepted MyPT key, and the level
// loading it is logged at (mypt train): warn when it changes what is trained or
// evaluated, info when it changes what is written where, debug for metadata and
// settings a backend decides.
type ignoredKey struct {
	reason string
	level  slog.Level
}

// acceptedIgnored are MyPT keys that load without error but that mypt does
// not act on.
var acceptedIgnored = map[string]ignoredKey{
	"name":                      {"metadata", slog.LevelDebug},
	"description":               {"metadata", slog.LevelDebug},
	"device":                    {"the backend chooses its device", slog.LevelDebug},
	"use_checkpoint":            {"activation checkpointing is a backend matter", slog.LevelDebug},
	"use_amp":                   {"the precision key (auto | fp32 | bf16) chooses the compute dtype", slog.LevelDebug},
	"amp_dtype":                 {"the precision key (auto | fp32 | bf16) chooses the compute dtype", slog.LevelDebug},
	"save_dtype":                {"training checkpoints are fp32; mypt export --dtype writes bf16/f16 copies", slog.LevelInfo},
	"eval_seed":                 {"evals (val and eval_sets) draw from a fixed sequential order, no reseeding needed", slog.LevelDebug},
	"log_file":                  {"metrics go to <output>/metrics.jsonl", slog.LevelInfo},
	"terminal_log_file":         {"redirect the terminal instead (2>&1 | tee FILE)", slog.LevelInfo},
	"curriculum":                {"curricula are not supported yet: only --dataset is trained on", slog.LevelWarn},
	"gold_selection":            {"the best checkpoint (<output>/best) is kept by val loss, MyPT's default strategy", slog.LevelInfo},
	"token_accuracy_saturation": {"masked-token accuracy is logged; no saturation flags", slog.LevelInfo},
}

// IsIgnoredKey reports whether a key is accepted and ignored (MyPT's
// comment_* keys, metadata, features mypt does not have).
func IsIgnoredKey(key string) bool {
	_, ok := acceptedIgnored[key]
	return ok || strings.HasPrefix(key, "comment_")
}

// IgnoredKey says why an accepted-and-ignored key is ignored and at which
// level loading it should be logged: warn when mypt trains or evaluates
// differently than the key asks, info when it writes elsewhere, debug for
// metadata and settings a backend decides.
func IgnoredKey(key string) (reason string, level slog.Level) {
	if k, ok := acceptedIgnored[key]; ok {
		return k.reason, k.level
	}
	return "comment", slog.LevelDebug
}

// Keys returns every configuration key mypt acts on, sorted.
func Keys() []string {
	k := koanf.New(".")
	_ = k.Load(structs.Provider(Default(), "koanf"), nil)
	keys := append(k.Keys(), evalSetsKey)
	sort.Strings(keys)
	return keys
}

// Sources says where a configuration comes from, lowest precedence first
// after the defaults.
type Sources struct {
	File    string         // a JSON config file; "" for none
	Data    []byte         // JSON config contents, used instead of reading File (which then only names it)
	Environ []string       // "KEY=value" pairs; MYPT_<KEY> set <key>
	Flags   *pflag.FlagSet // changed flags whose names are config keys override
}

// Load builds a Config from defaults < file < environment < flags and
// validates it. ignored receives the keys that were accepted but ignored.
func Load(src Sources) (cfg Config, ignored []string, err error) {
	var evalSets map[string]string
	k := koanf.New(".")
	if err := k.Load(structs.Provider(Default(), "koanf"), nil); err != nil {
		return cfg, nil, fmt.Errorf("load defaults: %w", err)
	}
	known := map[string]bool{}
	for _, key := range k.Keys() {
		known[key] = true
	}
	if src.File != "" || src.Data != nil {
		raw := src.Data
		if raw == nil {
			if raw, err = os.ReadFile(src.File); err != nil {
				return cfg, nil, fmt.Errorf("read config: %w", err)
			}
		}
		var drop []string
		ignored, drop, evalSets, err = checkFileKeys(src.File, raw, known)
		if err != nil {
			return cfg, nil, err
		}
		fk := koanf.New(".")
		if err := fk.Load(rawbytes.Provider(raw), kjson.Parser()); err != nil {
			return cfg, nil, fmt.Errorf("config %s: %w", src.File, err)
		}
		for _, key := range drop {
			fk.Delete(key)
		}
		if err := k.Merge(fk); err != nil {
			return cfg, nil, fmt.Errorf("config %s: %w", src.File, err)
		}
	}
	envValues := map[string]any{}
	for _, kv := range src.Environ {
		name, value, _ := strings.Cut(kv, "=")
		if key, ok := strings.CutPrefix(name, "MYPT_"); ok && known[strings.ToLower(key)] {
			envValues[strings.ToLower(key)] = value
		}
	}
	if err := k.Load(confmap.Provider(envValues, "."), nil); err != nil {
		return cfg, nil, fmt.Errorf("environment: %w", err)
	}
	if src.Flags != nil {
		fl := koanf.New(".")
		if err := fl.Load(posflag.ProviderWithFlag(src.Flags, ".", nil, func(f *pflag.Flag) (string, any) {
			if !f.Changed || !known[f.Name] {
				return "", nil
			}
			return f.Name, posflag.FlagVal(src.Flags, f)
		}), nil); err != nil {
			return cfg, nil, fmt.Errorf("flags: %w", err)
		}
		if err := k.Merge(fl); err != nil {
			return cfg, nil, fmt.Errorf("flags: %w", err)
		}
	}
	if err := k.UnmarshalWithConf("", &cfg, koanf.UnmarshalConf{Tag: "koanf", FlatPaths: false}); err != nil {
		return cfg, nil, fmt.Errorf("config: %w", err)
	}
	cfg.EvalSets = evalSets
	if err := cfg.Validate(); err != nil {
		return cfg, ignored, err
	}
	return cfg, ignored, nil
}

// evalSetsKey is MyPT's extra-eval-sets key, read by checkFileKeys itself.
const evalSetsKey = "eval_sets"

// checkFileKeys rejects unknown top-level keys, naming the closest known
// one. It returns the accepted-but-ignored keys present, every key to drop
// before merging (those, eval_sets, and MyPT's "pad_token_id": null, which
// means the default) and the eval_sets object (nil when absent or null).
func checkFileKeys(path string, raw []byte, known map[string]bool) (ignored, drop []string, evalSets map[string]string, err error) {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(raw, &top); err != nil {
		var se *json.SyntaxError
		if errors.As(err, &se) {
			line := 1 + strings.Count(string(raw[:se.Offset]), "\n")
			return nil, nil, nil, fmt.Errorf("config %s: line %d: invalid JSON: %w", path, line, err)
		}
		return nil, nil, nil, fmt.Errorf("config %s: %w", path, err)
	}
	var unknown []string
	for key, val := range top {
		switch {
		case key == evalSetsKey:
			drop = append(drop, key)
			if err := json.Unmarshal(val, &evalSets); err != nil {
				return nil, nil, nil, fmt.Errorf("config %s: eval_sets must be an object mapping a set name to a dataset directory, e.g. {\"general\": \"data/general_eval\"}: %w", path, err)
			}
		case known[key]:
			if string(val) == "null" {
				if key != "pad_token_id" {
					return nil, nil, nil, fmt.Errorf("config %s: key %q is null; give it a value or leave it out", path, key)
				}
				drop = append(drop, key)
			}
		case IsIgnoredKey(key):
			ignored = append(ignored, key)
			drop = append(drop, key)
		default:
			unknown = append(unknown, key)
		}
	}
	sort.Strings(ignored)
	if len(unknown) > 0 {
		sort.Strings(unknown)
		candidates := maps.Clone(known)
		candidates[evalSetsKey] = true
		var msgs []string
		for _, key := range unknown {
			msg := fmt.Sprintf("unknown key %q", key)
			if s := closest(key, candidates); s != "" {
				msg += fmt.Sprintf(" (did you mean %q?)", s)
			}
			msgs = append(msgs, msg)
		}
		return nil, nil, nil, fmt.Errorf("config %s: %s", path, strings.Join(msgs, "; "))
	}
	return ignored, drop, evalSets, nil
}

// closest returns the known key nearest to key by edit distance, if any is
// near enough to be a plausible typo.
func closest(key string, known map[string]bool) string {
	best, bestD := "", math.MaxInt
	for k := range known {
		d := editDistance(key, k)
		if d < bestD || (d == bestD && k < best) {
			best, bestD = k, d
		}
	}
	if bestD > max(2, len(key)/3) {
		return ""
	}
	return best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

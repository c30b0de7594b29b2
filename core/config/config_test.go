package config

import (
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

func writeConfig(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "cfg.json")
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestPhase3aConfigLoadsAsIs loads MyPT's 750M phase-3a config unchanged
// (comment_* keys, null pad id) and checks the values and derived numbers of
// docs/MYPT.md §20 (configuration keys, phase-3a config).
func TestPhase3aConfigLoadsAsIs(t *testing.T) {
	cfg, ignored, err := Load(Sources{File: "../../configs/750M_1024_chat_sft_phase3a.json"})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.BatchSize != 10 || cfg.BlockSize != 1024 || cfg.NEmbd != 1280 || cfg.NHead != 20 || cfg.NLayer != 32 ||
		cfg.Dropout != 0.12 || !cfg.TieWeights || cfg.PosEncoding != "rope" || cfg.MLPType != "swiglu" ||
		cfg.NormType != "rmsnorm" || cfg.LearningRate != 3e-5 || cfg.MaxIters != 5000 || cfg.EvalInterval != 500 ||
		cfg.SaveEvery != 1000 || cfg.EpochSeed != 3301 || cfg.WeightDecay != 0.05 || !cfg.UseLossMask ||
		cfg.EpisodeMinTokens != 10 || cfg.PadTokenID != -1 {
		t.Fatalf("loaded %+v", cfg)
	}
	// Defaults for keys the file does not set.
	if cfg.EvalIters != 200 || cfg.GradClip != 1.0 || cfg.GradAccumSteps != 1 || cfg.RopeScale != 1.0 {
		t.Fatalf("defaults not applied: %+v", cfg)
	}
	if got := cfg.WarmupSteps(); got != 150 {
		t.Fatalf("warmup steps = %d, want 150", got)
	}
	want := []string{"amp_dtype", "comment_architecture", "comment_episode_indexed", "comment_note",
		"comment_optimizer", "comment_sft", "comment_training", "description", "name", "use_amp"}
	if strings.Join(ignored, ",") != strings.Join(want, ",") {
		t.Fatalf("ignored = %v, want %v", ignored, want)
	}
}

func TestUnknownKeySuggestsClosest(t *testing.T) {
	p := writeConfig(t, `{"n_embd": 64, "learnin_rate": 0.001, "zzz_totally_new": 1}`)
	_, _, err := Load(Sources{File: p})
	if err == nil {
		t.Fatal("unknown keys accepted")
	}
	for _, s := range []string{`unknown key "learnin_rate" (did you mean "learning_rate"?)`, `unknown key "zzz_totally_new"`, p} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q does not contain %q", err, s)
		}
	}
	if strings.Contains(err.Error(), `"zzz_totally_new" (did you mean`) {
		t.Errorf("suggested a key for a name nothing resembles: %v", err)
	}
}

func TestRangeAndTypeErrorsNameTheKey(t *testing.T) {
	for body, want := range map[string]string{
		`{"dropout": 1.5}`:                                    "dropout: must be in [0, 0.99], got 1.5",
		`{"n_embd": 100, "n_head": 3}`:                        "n_embd: 100 is not divisible by n_head 3",
		`{"mlp_type": "relu"}`:                                `mlp_type: must be one of ["gelu" "swiglu"], got "relu"`,
		`{"learning_rate": "fast"}`:                           "learning_rate",
		`{"warmup_iters": 2.5}`:                               "warmup_iters: 2.5 is neither",
		`{"batch_size": 0}`:                                   "batch_size: must be ≥ 1, got 0",
		`{"vocab_size": 4294967296}`:                          "vocab_size: must be ≤ 4294967295, got 4294967296",
		`{"n_layer": null}`:                                   `key "n_layer" is null`,
		"{\n\"n_layer\": 2,\n\"x\": }":                        "line 3: invalid JSON",
		`{"pos_encoding": "rope", "n_embd": 12, "n_head": 4}`: "rope needs an even head size",
	} {
		_, _, err := Load(Sources{File: writeConfig(t, body)})
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: error = %v, want it to contain %q", body, err, want)
		}
	}
}

// TestPrecedence checks defaults < file < MYPT_* environment < flags.
func TestPrecedence(t *testing.T) {
	p := writeConfig(t, `{"learning_rate": 0.001, "max_iters": 50, "batch_size": 4, "dropout": 0.1}`)
	fs := pflag.NewFlagSet("train", pflag.ContinueOnError)
	fs.Float64("learning_rate", 0, "")
	fs.Int("max_iters", 0, "")
	fs.Float64("dropout", 0, "")
	fs.String("dataset", "", "") // not a config key: ignored
	if err := fs.Parse([]string{"--max_iters", "70", "--dataset", "d"}); err != nil {
		t.Fatal(err)
	}
	cfg, _, err := Load(Sources{
		File:    p,
		Environ: []string{"MYPT_MAX_ITERS=60", "MYPT_BATCH_SIZE=6", "MYPT_PLUGIN_PATH=/x", "HOME=/root"},
		Flags:   fs,
	})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.LearningRate != 0.001 || cfg.MaxIters != 70 || cfg.BatchSize != 6 || cfg.Dropout != 0.1 || cfg.NEmbd != 384 {
		t.Fatalf("precedence wrong: lr %v (file), max_iters %d (flag), batch %d (env), dropout %v (file, flag unchanged), n_embd %d (default)",
			cfg.LearningRate, cfg.MaxIters, cfg.BatchSize, cfg.Dropout, cfg.NEmbd)
	}
}

func TestShippedPresetsLoad(t *testing.T) {
	files, _ := filepath.Glob("../../configs/*.json")
	if len(files) < 5 {
		t.Fatalf("found %d presets", len(files))
	}
	for _, f := range files {
		if _, _, err := Load(Sources{File: f}); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
}

// TestIgnoredKeysSayWhy checks that every accepted-and-ignored MyPT key has
// a reason, and that the ones that change what is trained are warnings.
func TestIgnoredKeysSayWhy(t *testing.T) {
	for key := range acceptedIgnored {
		if reason, _ := IgnoredKey(key); reason == "" {
			t.Errorf("%s: no reason", key)
		}
	}
	for key, want := range map[string]slog.Level{
		"curriculum": slog.LevelWarn, "eval_seed": slog.LevelDebug,
		"log_file": slog.LevelInfo, "save_dtype": slog.LevelInfo,
		"use_amp": slog.LevelDebug, "name": slog.LevelDebug, "comment_note": slog.LevelDebug,
	} {
		if _, got := IgnoredKey(key); got != want {
			t.Errorf("%s: level %v, want %v", key, got, want)
		}
	}
	p := writeConfig(t, `{"freeze_layers": 4, "curriculum": {"phases": []}, "n_layer": 6}`)
	_, ignored, err := Load(Sources{File: p})
	if err != nil || strings.Join(ignored, ",") != "curriculum" {
		t.Fatalf("ignored = %v, err %v", ignored, err)
	}
}

// TestFreezeKeys checks that MyPT's freeze_layers and freeze_embeddings load (they are
// acted on, not ignored) and that freeze_layers is range-checked against n_layer.
func TestFreezeKeys(t *testing.T) {
	cfg, ignored, err := Load(Sources{File: writeConfig(t, `{"freeze_layers": 2, "freeze_embeddings": true, "n_layer": 6}`)})
	if err != nil || len(ignored) != 0 || cfg.FreezeLayers != 2 || !cfg.FreezeEmbeddings {
		t.Fatalf("freeze_layers %d, freeze_embeddings %v, ignored %v, err %v", cfg.FreezeLayers, cfg.FreezeEmbeddings, ignored, err)
	}
	if d := Default(); d.FreezeLayers != 0 || d.FreezeEmbeddings {
		t.Errorf("defaults freeze: %d %v", d.FreezeLayers, d.FreezeEmbeddings)
	}
	if cfg, err := loadJSON(t, `{"freeze_layers": 6, "n_layer": 6}`); err != nil || cfg.FreezeLayers != 6 {
		t.Errorf("freeze_layers = n_layer: %v", err)
	}
	for _, bad := range []string{`{"freeze_layers": 7, "n_layer": 6}`, `{"freeze_layers": -1}`} {
		if _, err := loadJSON(t, bad); err == nil || !strings.Contains(err.Error(), "freeze_layers:") {
			t.Errorf("%s: err %v, want a freeze_layers range error", bad, err)
		}
	}
	if cfg, _, err := Load(Sources{Environ: []string{"MYPT_FREEZE_LAYERS=3", "MYPT_FREEZE_EMBEDDINGS=true"}}); err != nil || cfg.FreezeLayers != 3 || !cfg.FreezeEmbeddings {
		t.Errorf("environment: %d %v %v", cfg.FreezeLayers, cfg.FreezeEmbeddings, err)
	}
}

func loadJSON(t *testing.T, js string) (Config, error) {
	t.Helper()
	cfg, _, err := Load(Sources{File: writeConfig(t, js)})
	return cfg, err
}

// TestEvalSets loads MyPT's eval_sets object (the current Phase 3 config's
// shape, eval_seed alongside, ignored) into Config.EvalSets.
func TestEvalSets(t *testing.T) {
	p := writeConfig(t, `{"n_layer": 2, "eval_seed": 1337, "eval_sets": {"phase1_format": "data/p1_val",
		"phase2_operators": "/abs/p2_ops", "v1.2": "data/dotted"}}`)
	cfg, ignored, err := Load(Sources{File: p})
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.EvalSets) != 3 || cfg.EvalSets["phase1_format"] != "data/p1_val" ||
		cfg.EvalSets["phase2_operators"] != "/abs/p2_ops" || cfg.EvalSets["v1.2"] != "data/dotted" {
		t.Fatalf("eval sets %v", cfg.EvalSets)
	}
	if strings.Join(ignored, ",") != "eval_seed" {
		t.Fatalf("ignored = %v, want eval_seed only", ignored)
	}
	if IsIgnoredKey("eval_sets") || !slices.Contains(Keys(), "eval_sets") {
		t.Fatal("eval_sets is not an acted-on key")
	}
	cfg, _, err = Load(Sources{File: writeConfig(t, `{"eval_sets": null}`)})
	if err != nil || cfg.EvalSets != nil {
		t.Fatalf("null eval_sets: %v, %v", cfg.EvalSets, err)
	}
	for body, want := range map[string]string{
		`{"eval_sets": ["data/x"]}`:      "eval_sets must be an object mapping a set name to a dataset directory",
		`{"eval_sets": {"general": 3}}`:  "eval_sets must be an object",
		`{"eval_sets": {"general": ""}}`: `eval_sets: set "general" has an empty dataset directory`,
		`{"eval_sets": {"": "data/x"}}`:  "eval_sets: a set has an empty name",
		`{"eval_set": {}}`:               `unknown key "eval_set" (did you mean "eval_sets"?)`,
	} {
		if _, _, err := Load(Sources{File: writeConfig(t, body)}); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: error %v, want %q", body, err, want)
		}
	}
}

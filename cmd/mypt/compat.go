package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// myptFlagHints says, per subcommand, what to do instead of a MyPT flag that
// mypt does not take (docs/MYPT_COMPAT.md). Flags mypt takes under MyPT's
// name, or as an alias, are not listed.
var myptFlagHints = map[string]map[string]string{
	"train": {
		"use_amp":           "mypt picks the compute dtype with --precision auto|fp32|bf16 (auto = bf16 on an accelerator backend that supports it, like MyPT's AMP on CUDA); the config keys use_amp/amp_dtype are accepted and ignored",
		"amp_dtype":         "mypt picks the compute dtype with --precision auto|fp32|bf16; the config keys use_amp/amp_dtype are accepted and ignored",
		"tokenization":      "mypt train takes the tokenizer from the dataset's tokenizer_state.json (choose it with mypt prepare --tokenization); drop the flag",
		"input_file":        "prepare the text first with mypt prepare --text FILE --output_dir DIR, then train with --dataset DIR",
		"block_size":        "MyPT ignores its architecture flags too (the config file decides); set block_size in the --config JSON, or MYPT_BLOCK_SIZE=N",
		"n_embd":            "MyPT ignores its architecture flags too (the config file decides); set n_embd in the --config JSON, or MYPT_N_EMBD=N",
		"n_head":            "MyPT ignores its architecture flags too (the config file decides); set n_head in the --config JSON, or MYPT_N_HEAD=N",
		"n_layer":           "MyPT ignores its architecture flags too (the config file decides); set n_layer in the --config JSON, or MYPT_N_LAYER=N",
		"bias":              "MyPT ignores its architecture flags too (the config file decides); set bias in the --config JSON, or MYPT_BIAS=true",
		"save_dtype":        "training checkpoints are fp32 (exact resume); write a bf16/f16 copy with mypt export --dtype",
		"terminal_log_file": "redirect instead: mypt train ... 2>&1 | tee FILE (metrics also go to RUN/metrics.jsonl)",
	},
	"generate": {
		"legacy_checkpoint": "legacy single-file MyPT checkpoints (latest.pt/final.pt) are not supported; load and re-save them with MyPT (model.pt + config.json), which --model reads",
		"force_fp16":        "the backend chooses the inference dtype; write an f16 copy with mypt export --dtype f16 if you need one",
	},
	"serve": {
		"reload": "there is no auto-reload; restart mypt serve",
		"debug":  "use the global --log-level debug (or MYPT_LOG_LEVEL=debug)",
	},
}

// flagError turns pflag's "unknown flag" errors into advice: what to use
// instead of a MyPT flag mypt does not take, or the full name of an
// abbreviation (argparse accepts unique prefixes, pflag does not).
func flagError(cmd *cobra.Command, err error) error {
	name, ok := strings.CutPrefix(err.Error(), "unknown flag: --")
	if !ok {
		return err
	}
	if hint, ok := myptFlagHints[cmd.Name()][name]; ok {
		return fmt.Errorf("%w: MyPT's --%s is not supported by mypt %s: %s", err, name, cmd.Name(), hint)
	}
	var matches []string
	cmd.Flags().VisitAll(func(f *pflag.Flag) {
		if !f.Hidden && strings.HasPrefix(f.Name, name) {
			matches = append(matches, "--"+f.Name)
		}
	})
	sort.Strings(matches)
	switch len(matches) {
	case 0:
		return err
	case 1:
		return fmt.Errorf("%w (did you mean %s? mypt does not expand abbreviations as MyPT's argparse does)", err, matches[0])
	default:
		return fmt.Errorf("%w (did you mean one of %s?)", err, strings.Join(matches, ", "))
	}
}

// myptName maps a bare MyPT model name (MyPT's --model_name and
// --init_from_model name a directory under checkpoints/) onto that
// directory when arg itself does not exist and checkpoints/arg does.
func myptName(arg string) string {
	if arg == "" || filepath.IsAbs(arg) {
		return arg
	}
	if _, err := os.Stat(arg); !errors.Is(err, os.ErrNotExist) {
		return arg
	}
	alt := filepath.Join("checkpoints", arg)
	if st, err := os.Stat(alt); err == nil && st.IsDir() {
		return alt
	}
	return arg
}

// modelNameAlias accepts MyPT generate.py's --model_name for --model.
func modelNameAlias(_ *pflag.FlagSet, name string) pflag.NormalizedName {
	if name == "model_name" {
		name = "model"
	}
	return pflag.NormalizedName(name)
}

package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/mypt/mypt/core/config"
	"github.com/mypt/mypt/core/dataset"
	"github.com/mypt/mypt/core/model"
	"github.com/mypt/mypt/core/myptckpt"
	"github.com/mypt/mypt/core/tokenizer"
	"github.com/mypt/mypt/core/train"
)

func newTrainCmd() *cobra.Command {
	var (
		configFile, datasetDir, outDir, initFrom, backend string
		modelName, evalDatasetDir, evalPromptsFile        string
		stopAfter, evalMaxNewTokens                       int
		noProgress                                        bool
	)
	cmd := &cobra.Command{
		Use:   "train --config FILE --dataset DIR --output DIR [--model BASE] [--backend NAME]",
		Short: "Fine-tune a model on a prepared dataset through a backend plugin",
		Long: `Train a model on an episode-indexed dataset. Settings come from mypt's defaults,
then the --config file (MyPT JSON configs load as they are), then MYPT_<KEY>
environment variables, then the flags below.

The output directory holds latest/ (resumed from when the same command runs
again), best/ (lowest val loss) and metrics.jsonl. Ctrl-C saves and exits.

Extra eval sets (MyPT's eval_sets config object, name → prepared dataset
directory, and --eval_dataset_dir DIR, the set "general") are evaluated on
their val split at every eval and logged as eval_<name>; the best checkpoint
and early stopping still follow the main val loss.

--eval_prompts_file FILE (MyPT's JSON {"prompts": {"name": "prompt text"}},
prompts used as written, tags included) generates each prompt greedily at
every eval, up to --eval_max_new_tokens, with the backend's KV cache and by
full re-forward; metrics.jsonl's eval events carry them as gen and
gen_nocache, and a difference is logged as CACHE MISMATCH.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if modelName != "" {
				if outDir != "" {
					return errors.New("give --output RUN or MyPT's --model_name NAME (= --output checkpoints/NAME), not both")
				}
				outDir = filepath.Join("checkpoints", modelName)
			}
			if datasetDir == "" || outDir == "" {
				return errors.New("--dataset and --output are required (MyPT's --dataset_dir and --model_name NAME, = --output checkpoints/NAME, work too)")
			}
			if myptckpt.IsMyPTCheckpoint(outDir) {
				return fmt.Errorf("%s holds a MyPT checkpoint (model.pt); mypt does not resume MyPT runs: start a new run from it with --model %s --output NEW_RUN", outDir, outDir)
			}
			cfg, err := loadConfig(cmd.Flags(), configFile)
			if err != nil {
				return err
			}
			if cmd.Flags().Changed("eval_dataset_dir") {
				if cfg, err = addGeneralEvalSet(cfg, evalDatasetDir); err != nil {
					return err
				}
			}
			ds, err := dataset.Open(datasetDir)
			if err != nil {
				return err
			}
			defer ds.Close()
			tok, err := ds.Tokenizer()
			if err != nil {
				return fmt.Errorf("dataset %s: %w", datasetDir, err)
			}
			tokState, err := tokenizer.MarshalState(tok.State())
			if err != nil {
				return err
			}
			if initFrom != "" {
				dir, cleanup, err := checkpointDir(initFrom, slog.Default())
				if err != nil {
					return err
				}
				defer cleanup()
				initFrom = dir
			}
			client, err := startBackend(cmd.Context(), backend, slog.Default())
			if err != nil {
				return err
			}
			defer client.Close()

			run := &train.Run{
				Config: cfg, Spec: model.NewSpec(cfg), Backend: client, BackendName: backend,
				Data: ds, TokenizerState: tokState, OutDir: outDir, InitFrom: initFrom,
				StopAfter: stopAfter, Log: slog.Default(),
				EvalPromptsFile: evalPromptsFile, EvalMaxNewTokens: evalMaxNewTokens,
			}
			if !noProgress {
				run.Progress = cmd.ErrOrStderr()
			}
			sum, err := run.Train(cmd.Context())
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "steps %d..%d, last loss %.4f, best val loss %.4f, %d tokens in %s%s\n",
				sum.StartStep, sum.EndStep, sum.FinalLoss, sum.BestValLoss, sum.Tokens, sum.Elapsed.Round(time.Second),
				stoppedNote(sum.Stopped))
			fmt.Fprintf(cmd.OutOrStdout(), "checkpoints: %s/latest, %s/best\n", outDir, outDir)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&configFile, "config", "", "JSON config file (MyPT's format)")
	f.StringVar(&datasetDir, "dataset", "", "prepared dataset directory (mypt prepare or MyPT)")
	f.StringVar(&outDir, "output", "", "run directory for checkpoints and metrics")
	f.StringVar(&modelName, "model_name", "", "MyPT's run name: --model_name NAME is --output checkpoints/NAME")
	f.StringVar(&initFrom, "model", "", "initialise parameters from a base model: a checkpoint or run directory, or a MyPT checkpoint (model.pt)")
	f.StringVar(&backend, "backend", "cpu", "backend plugin: a NAME (mypt-backend-NAME) or a path")
	f.IntVar(&stopAfter, "stop-after", 0, "save and stop after this many steps in this invocation (0: run to max_iters)")
	f.BoolVar(&noProgress, "no-progress", false, "do not draw the progress bar")
	f.StringVar(&evalDatasetDir, "eval_dataset_dir", "", `extra eval set "general" (MyPT's flag): a prepared dataset whose val split is evaluated at every eval and logged as eval_general`)
	f.StringVar(&evalPromptsFile, "eval_prompts_file", "", `JSON {"prompts": {"name": "prompt text"}}: generate each greedily at every eval, with and without the KV cache (metrics: gen, gen_nocache)`)
	f.IntVar(&evalMaxNewTokens, "eval_max_new_tokens", train.DefaultEvalMaxNewTokens, "tokens to generate at most per eval prompt")
	addConfigFlags(f)
	// MyPT's spellings (--init_from_model takes a path, or a name under
	// checkpoints/ as in MyPT).
	f.SetNormalizeFunc(func(_ *pflag.FlagSet, name string) pflag.NormalizedName {
		switch name {
		case "config_file":
			name = "config"
		case "dataset_dir":
			name = "dataset"
		case "init_from_model":
			name = "model"
		}
		return pflag.NormalizedName(name)
	})
	return cmd
}

// loadConfig loads mypt's defaults < the config file < MYPT_<KEY> environment
// variables < the flags the user set, as mypt train and mypt bench do.
func loadConfig(flags *pflag.FlagSet, file string) (config.Config, error) {
	cfg, ignored, err := config.Load(config.Sources{File: file, Environ: os.Environ(), Flags: flags})
	if err != nil {
		return cfg, err
	}
	for _, key := range ignored {
		reason, level := config.IgnoredKey(key)
		slog.Log(context.Background(), level, "config key accepted and ignored", "key", key, "why", reason)
	}
	return cfg, nil
}

// addGeneralEvalSet adds MyPT's --eval_dataset_dir DIR to the config's eval
// sets under the name "general", as MyPT registers it; the flag wins over a
// "general" set in the config file.
func addGeneralEvalSet(cfg config.Config, dir string) (config.Config, error) {
	if dir == "" {
		return cfg, errors.New("--eval_dataset_dir: give a prepared dataset directory")
	}
	sets := make(map[string]string, len(cfg.EvalSets)+1)
	for name, d := range cfg.EvalSets {
		sets[name] = d
	}
	if old, ok := sets["general"]; ok && old != dir {
		slog.Info("--eval_dataset_dir replaces the config's eval set \"general\"", "config", old, "flag", dir)
	}
	sets["general"] = dir
	cfg.EvalSets = sets
	return cfg, nil
}

// addConfigFlags adds a flag per training-relevant config key; only flags
// the user sets override the config.
func addConfigFlags(f *pflag.FlagSet) {
	d := config.Default()
	addStepConfigFlags(f)
	f.Int("max_iters", d.MaxIters, "optimizer steps")
	f.Int("eval_interval", d.EvalInterval, "steps between evals")
	f.Int("eval_iters", d.EvalIters, "val batches per eval (at most one pass over val)")
	f.Int("save_every", d.SaveEvery, "steps between checkpoints (0: at every eval)")
	f.Float64("warmup_iters", d.WarmupIters, "warmup: a fraction of max_iters below 1, else steps")
	f.Int("early_stopping_patience", d.EarlyStopPatience, "stop after this many evals without a better val loss (0: off)")
	f.String("loss_normalization", d.LossNormalization, "global (per supervised token of the accumulated batch) or mypt (mean of micro-batch means)")
}

// addStepConfigFlags adds the config keys that shape one optimizer step
// (batch, accumulation, optimizer, dropout, seed, precision): what both
// mypt train and mypt bench take.
func addStepConfigFlags(f *pflag.FlagSet) {
	d := config.Default()
	f.Float64("learning_rate", d.LearningRate, "peak learning rate")
	f.Float64("grad_clip", d.GradClip, "clip the global gradient norm (0: off)")
	f.Float64("weight_decay", d.WeightDecay, "AdamW decoupled weight decay")
	f.Int("grad_accum_steps", d.GradAccumSteps, "micro-batches per optimizer step")
	f.Int("batch_size", d.BatchSize, "rows per micro-batch")
	f.Float64("dropout", d.Dropout, "dropout probability")
	f.Int64("seed", d.Seed, "seed for initialisation and dropout")
	f.String("precision", d.Precision, "compute dtype: auto (bf16 on an accelerator backend that declares it, else fp32), fp32 or bf16")
}

func stoppedNote(reason string) string {
	if reason == "" {
		return ""
	}
	return " (" + reason + ")"
}

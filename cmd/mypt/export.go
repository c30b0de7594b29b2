package main

import (
	"errors"
	"fmt"
	"log/slog"

	"github.com/spf13/cobra"

	"github.com/mypt/mypt/core/export"
)

func newExportCmd() *cobra.Command {
	var (
		modelDir, format, output, dtype string
		dropBias, force                 bool
	)
	cmd := &cobra.Command{
		Use:   "export --model DIR --format hf --output OUT",
		Short: "Export a checkpoint to another format (Hugging Face transformers)",
		Long: `Export a checkpoint (a checkpoint directory, a run directory whose best/ is
preferred over latest/, or a MyPT checkpoint directory with model.pt) as a
Hugging Face model directory: GPT-2-style models (learned positions,
LayerNorm, GELU) as GPT2LMHeadModel, LLaMA-style models (RoPE, RMSNorm,
SwiGLU) as LlamaForCausalLM. Writes model.safetensors, config.json,
generation_config.json and the tokenizer files that can be derived offline.
MyPT's lm_head always has a bias and Hugging Face's has none: a constant
bias is dropped (probabilities are unchanged); any other is refused unless
--drop-lm-head-bias. See docs/INTEROP.md.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if modelDir == "" || output == "" {
				return errors.New("--model and --output are required")
			}
			if format != "hf" {
				return fmt.Errorf("unknown --format %q (supported: hf)", format)
			}
			log := slog.Default()
			dir, cleanup, err := checkpointDir(modelDir, log)
			if err != nil {
				return err
			}
			defer cleanup()
			res, err := export.HF(dir, output, export.Options{DType: dtype, DropLMHeadBias: dropBias, Force: force, Logger: log})
			if err != nil {
				return err
			}
			for _, n := range res.Notes {
				fmt.Fprintln(cmd.ErrOrStderr(), "note:", n)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "exported %s as %s to %s\n", dir, res.Architecture, output)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&modelDir, "model", "", "checkpoint, run directory or MyPT checkpoint directory")
	f.StringVar(&format, "format", "hf", "output format: hf (Hugging Face transformers)")
	f.StringVar(&output, "output", "", "output directory (must not exist unless --force)")
	f.StringVar(&dtype, "dtype", "f32", "weight dtype: f32, bf16 or f16")
	f.BoolVar(&dropBias, "drop-lm-head-bias", false, "export even if lm_head.bias is not constant, dropping it (changes outputs)")
	f.BoolVar(&force, "force", false, "replace an existing output directory")
	return cmd
}

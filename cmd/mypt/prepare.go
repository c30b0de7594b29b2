package main

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/mypt/mypt/core/prepare"
)

func newPrepareCmd() *cobra.Command {
	o := prepare.DefaultOptions()
	var text string
	var output string
	cmd := &cobra.Command{
		Use:   "prepare --input FILE.jsonl --output_dir DIR [flags]",
		Short: "Prepare gold conversation JSONL into an episode-indexed dataset (MyPT's prepare_chat_sft.py)",
		Long: `prepare serializes each conversation as MyPT does (system prompt, user and
assistant blocks, one <myPT_eot>, no separators), tokenizes it with GPT-2 BPE
plus MyPT's special tokens, masks everything but the assistant replies, splits
train/val and writes train/ and val/ with tokens.bin, mask.bin and
episodes.idx (segment_ids.bin when packing, mask_weighted.bin with
--weighted_mask). For the same input and flags the files are byte-identical
to MyPT's.

With --text FILE it instead writes a plain-text corpus as a token stream
(train/tokens.bin and val/tokens.bin) for pre-training style runs; char
tokenization is allowed there.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if output != "" {
				o.Output = output
			}
			start := time.Now()
			out := cmd.OutOrStdout()
			o.Log = slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), nil))
			if text != "" {
				vs := o.ValSplit
				res, err := prepare.PrepareText(cmd.Context(), prepare.TextOptions{
					Input: text, Output: o.Output, Tokenization: o.Tokenization, ValSplit: vs, VocabSize: o.VocabSize, Log: o.Log})
				if err != nil {
					return err
				}
				fmt.Fprintf(out, "Token-stream dataset written to %s: %d train tokens, %d val tokens, vocab %d (%s)\n",
					o.Output, res.TrainTokens, res.ValTokens, res.VocabSize, time.Since(start).Round(time.Millisecond))
				return nil
			}
			if o.Input == "" {
				return fmt.Errorf("prepare: --input (or --text) is required")
			}
			if err := inputIsFile(o.Input); err != nil {
				return err
			}
			res, err := prepare.Run(cmd.Context(), o)
			if err != nil {
				return err
			}
			st, _ := os.Stat(o.Input)
			fmt.Fprintf(out, "Episode-indexed SFT dataset written to %s\n", o.Output)
			fmt.Fprintf(out, "  conversations: %d (train %d, val %d)\n", res.Conversations, res.TrainConversations, res.ValConversations)
			unit := "episodes"
			if res.Packing {
				unit = "packed sequences"
				fmt.Fprintf(out, "  packed %d train / %d val episodes, training efficiency gain %.1fx\n",
					res.OriginalTrainEpisodes, res.OriginalValEpisodes, res.TrainingEfficiencyGain)
			}
			fmt.Fprintf(out, "  train: %d tokens, %d %s, %d shard(s), mask ratio %.1f%%\n",
				res.TrainTokens, res.TrainEpisodes, unit, res.TrainShards, 100*res.TrainMaskRatio)
			fmt.Fprintf(out, "  val:   %d tokens, %d %s, %d shard(s), mask ratio %.1f%%\n",
				res.ValTokens, res.ValEpisodes, unit, res.ValShards, 100*res.ValMaskRatio)
			if n := len(res.Skipped); n > 0 {
				fmt.Fprintf(out, "  skipped %d malformed rows (first: %v)\n", n, res.Skipped[0])
			}
			if res.UnsupervisedCount > 0 {
				fmt.Fprintf(out, "  %d episodes have no supervised tokens besides <myPT_eot> (first: %v)\n",
					res.UnsupervisedCount, res.Unsupervised[0])
			}
			if res.InputSchema != nil && res.InputSchema.Invalid > 0 {
				fmt.Fprintf(out, "  schema: %d/%d conversations invalid (%v)\n",
					res.InputSchema.Invalid, res.InputSchema.Total, res.InputSchema.TopIssues(3))
			}
			el := time.Since(start)
			if st != nil && el > 0 {
				fmt.Fprintf(out, "  %.1f MB in %s (%.1f MB/s)\n", float64(st.Size())/1e6, el.Round(time.Millisecond),
					float64(st.Size())/1e6/el.Seconds())
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.Input, "input", "", "input JSONL file, one conversation per line")
	f.StringVar(&o.Output, "output_dir", "", "output dataset directory (replaced atomically if it holds a dataset)")
	f.StringVar(&output, "output", "", "alias of --output_dir")
	f.StringVar(&text, "text", "", "prepare this plain-text file as a token stream instead of conversations")
	f.StringVar(&o.Tokenization, "tokenization", o.Tokenization, "gpt2 (conversations and text) or char (text only)")
	f.Float64Var(&o.ValSplit, "val_split", o.ValSplit, "fraction of conversations for val (ignored with --val_file / --val_only)")
	f.StringVar(&o.ValFile, "val_file", "", "separate validation JSONL (train = all of --input)")
	f.BoolVar(&o.ValOnly, "val_only", false, "put every input conversation in val/ (train/ stays empty)")
	f.IntVar(&o.TokensPerShard, "tokens_per_shard", o.TokensPerShard, "start a new shard past this many tokens")
	f.IntVar(&o.VocabSize, "vocab_size", o.VocabSize, "model vocabulary size recorded in the tokenizer state")
	f.Int64Var(&o.Seed, "seed", o.Seed, "seed of the val split permutation (numpy) and the pack shuffle (Python random)")
	f.BoolVar(&o.EnablePacking, "enable_packing", false, "pack several episodes into each block (writes segment_ids.bin)")
	f.IntVar(&o.PackBlockSize, "pack_block_size", o.PackBlockSize, "length of a packed sequence")
	f.StringVar(&o.PackByField, "pack_by_field", "", "pack within groups of this dotted field, e.g. _meta.operator")
	f.BoolVar(&o.PackShuffle, "pack_shuffle", true, "shuffle train episodes before packing")
	noShuffle := f.Bool("no_pack_shuffle", false, "do not shuffle train episodes before packing")
	f.BoolVar(&o.NoSystemPrompt, "no_system_prompt", false, "omit the <myPT_system> block")
	f.StringVar(&o.SystemPrompt, "system_prompt", "", `system prompt text (default "`+prepare.DefaultSystemPrompt+`")`)
	f.BoolVar(&o.EnableRAGTags, "enable_rag_tags", false, "serialize user context, assistant think/cite and assistant_context turns")
	f.BoolVar(&o.WeightedMask, "weighted_mask", false, "write mask_weighted.bin (weights 1.5/2.0 on steering/stop tokens when packing)")
	f.StringVar(&o.SchemaValidationMode, "schema_validation_mode", o.SchemaValidationMode, "off, warn or error")
	f.BoolVar(&o.SkipInvalid, "skip-invalid", false, "skip malformed rows and report their count instead of failing")
	f.BoolVar(&o.SkipInvalid, "skip_invalid", false, "alias of --skip-invalid")
	f.BoolVar(&o.AllowOverlap, "allow_overlap", false, "with --val_file, warn instead of failing on train/val payload or template overlap")
	f.IntVar(&o.Workers, "workers", 0, "tokenization goroutines (default: all CPUs)")
	f.BoolP("verbose", "v", false, "accepted for MyPT compatibility (mypt prints the same summary either way)")
	f.MarkHidden("skip_invalid")
	cmd.PreRun = func(*cobra.Command, []string) {
		if *noShuffle {
			o.PackShuffle = false
		}
	}
	return cmd
}

// inputIsFile refuses a directory as --input (MyPT's README shows one, but
// prepare_chat_sft.py reads a single JSONL file too), naming the JSONL files
// inside it.
func inputIsFile(input string) error {
	st, err := os.Stat(input)
	if err != nil || !st.IsDir() {
		return nil // prepare.Run reports a missing file
	}
	files, _ := filepath.Glob(filepath.Join(input, "*.jsonl"))
	switch len(files) {
	case 0:
		return fmt.Errorf("prepare: --input %s is a directory with no .jsonl file; give one JSONL file (as MyPT's prepare_chat_sft.py needs too)", input)
	case 1:
		return fmt.Errorf("prepare: --input %s is a directory; give the JSONL file itself (as MyPT's prepare_chat_sft.py needs too): --input %s", input, files[0])
	default:
		return fmt.Errorf("prepare: --input %s is a directory; give one JSONL file (as MyPT's prepare_chat_sft.py needs too), e.g. --input %s, or concatenate them: cat %s/*.jsonl > all.jsonl",
			input, files[0], input)
	}
}

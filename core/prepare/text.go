package prepare

import (
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"unicode/utf8"

	"github.com/mypt/mypt/core/dataset"
	"github.com/mypt/mypt/core/tokenizer"
)

// TextOptions configure PrepareText.
type TextOptions struct {
	Input        string  // UTF-8 text file
	Output       string  // dataset directory
	Tokenization string  // "gpt2" or "char"
	ValSplit     float64 // the last ValSplit of the tokens go to val (MyPT: 0.1)
	VocabSize    int     // gpt2 model vocabulary
	Log          *slog.Logger
}

// TextResult summarizes PrepareText.
type TextResult struct {
	TrainTokens, ValTokens int
	VocabSize              int
}

// PrepareText writes a plain-text corpus as a token-stream dataset:
// train/tokens.bin with the first (1-ValSplit) of the tokens and
// val/tokens.bin with the rest (MyPT's GPTDataLoader.prepare_data split),
// plus tokenizer_state.json and dataset_metadata.json. The char kind builds
// its vocabulary from the corpus (sorted distinct characters).
func PrepareText(ctx context.Context, opt TextOptions) (*TextResult, error) {
	if opt.Log == nil {
		opt.Log = slog.Default()
	}
	if opt.VocabSize == 0 {
		opt.VocabSize = tokenizer.DefaultVocabSize
	}
	if opt.ValSplit < 0 || opt.ValSplit >= 1 {
		return nil, fmt.Errorf("prepare text: --val_split %v must be in [0, 1)", opt.ValSplit)
	}
	if err := checkReplaceable(opt.Output); err != nil {
		return nil, err
	}
	raw, err := os.ReadFile(opt.Input)
	if err != nil {
		return nil, fmt.Errorf("prepare text: %w", err)
	}
	if !utf8.Valid(raw) {
		return nil, fmt.Errorf("prepare text: %s is not valid UTF-8", opt.Input)
	}
	text := string(raw)
	var tok *tokenizer.Tokenizer
	switch opt.Tokenization {
	case "char":
		tok = tokenizer.NewChar(text)
	case "gpt2", "":
		opt.Tokenization = "gpt2"
		if tok, err = tokenizer.NewGPT2(opt.VocabSize); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("prepare text: unknown --tokenization %q (want gpt2 or char)", opt.Tokenization)
	}
	ids, err := tok.Encode(text)
	if err != nil {
		return nil, fmt.Errorf("prepare text: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	n := int((1 - opt.ValSplit) * float64(len(ids)))
	stage, commit, cleanup, err := stageDir(opt.Output)
	if err != nil {
		return nil, err
	}
	defer cleanup()
	for split, part := range map[string][]uint32{"train": ids[:n], "val": ids[n:]} {
		dir := filepath.Join(stage, split)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, err
		}
		if len(part) == 0 {
			continue
		}
		buf := make([]byte, 0, 4*len(part))
		for _, id := range part {
			buf = binary.LittleEndian.AppendUint32(buf, id)
		}
		if err := os.WriteFile(filepath.Join(dir, dataset.TokensFile), buf, 0o644); err != nil {
			return nil, err
		}
	}
	st, err := tokenizer.MarshalState(tok.State())
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(stage, dataset.TokenizerFile), st, 0o644); err != nil {
		return nil, err
	}
	meta := &orderedMap{}
	meta.set("schema", dataset.SchemaStream)
	meta.set("has_loss_mask", false)
	meta.set("tokenization", opt.Tokenization)
	meta.set("vocab_size", tok.VocabSize())
	meta.set("num_train_tokens", n)
	meta.set("num_val_tokens", len(ids)-n)
	meta.set("val_split", opt.ValSplit)
	meta.set("source_file", absPath(opt.Input))
	meta.set("prepared_by", "mypt prepare --text")
	b, err := marshalIndent(meta)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(stage, dataset.MetadataFile), b, 0o644); err != nil {
		return nil, err
	}
	if err := commit(); err != nil {
		return nil, err
	}
	return &TextResult{TrainTokens: n, ValTokens: len(ids) - n, VocabSize: tok.VocabSize()}, nil
}

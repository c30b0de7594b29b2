package export

import (
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strconv"

	"github.com/mypt/mypt/core/atomicfile"
	"github.com/mypt/mypt/core/tokenizer"
)

// EndOfText is GPT-2's <|endoftext|> id, Hugging Face's bos/eos for GPT-2.
const EndOfText = 50256

// tokenizerFiles returns the tokenizer files written beside the model and the
// eos id (-1 if none). MyPT's tokenizer state is kept as mypt_tokenizer.json
// (not tokenizer.json, which Hugging Face reads as its fast-tokenizer
// format). For the gpt2 kind the special tokens are written in Hugging
// Face's files; vocab.json and merges.txt are GPT-2's published files, which
// mypt does not carry in that form (see docs/INTEROP.md).
func tokenizerFiles(state []byte, vocab int) (map[string]any, int, error) {
	if len(state) == 0 {
		return nil, -1, nil
	}
	var st struct {
		TokenKind string `json:"token_kind"`
	}
	if err := json.Unmarshal(state, &st); err != nil {
		return nil, -1, fmt.Errorf("tokenizer.json: %w", err)
	}
	files := map[string]any{"mypt_tokenizer.json": json.RawMessage(state)}
	if st.TokenKind != string(tokenizer.KindGPT2) || vocab <= EndOfText {
		return files, -1, nil
	}
	const eot = "<|endoftext|>"
	added := map[string]int{eot: EndOfText}
	decoder := map[string]any{strconv.Itoa(EndOfText): addedToken(eot)}
	var extra []string
	for _, s := range tokenizer.Specials() {
		if int(s.ID) >= vocab {
			continue
		}
		added[s.Text] = int(s.ID)
		decoder[strconv.Itoa(int(s.ID))] = addedToken(s.Text)
		extra = append(extra, s.Text)
	}
	files["added_tokens.json"] = added
	files["special_tokens_map.json"] = map[string]any{
		"bos_token": eot, "eos_token": eot, "unk_token": eot, "additional_special_tokens": extra,
	}
	files["tokenizer_config.json"] = map[string]any{
		"tokenizer_class":              "GPT2Tokenizer",
		"add_prefix_space":             false,
		"bos_token":                    eot,
		"eos_token":                    eot,
		"unk_token":                    eot,
		"additional_special_tokens":    extra,
		"added_tokens_decoder":         decoder,
		"model_max_length":             1024,
		"clean_up_tokenization_spaces": false,
	}
	return files, EndOfText, nil
}

func addedToken(content string) map[string]any {
	return map[string]any{"content": content, "lstrip": false, "rstrip": false,
		"normalized": false, "single_word": false, "special": true}
}

func sortedKeys(m map[string]any) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// commitDir moves the finished tmp directory to out. An existing out is
// refused unless force.
func commitDir(tmp, out string, force bool) error {
	if _, err := os.Lstat(out); err == nil && !force {
		return fmt.Errorf("output %s already exists (use --force to replace it)", out)
	}
	return atomicfile.ReplaceDir(tmp, out)
}

package tokenizer

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"

	"github.com/mypt/mypt/core/atomicfile"
)

// State is MyPT's serialized tokenizer (Tokenizer.get_state()), stored as
// tokenizer_state.json in a dataset and tokenizer.json in a checkpoint
// (docs/MYPT.md §4).
type State struct {
	TokenKind      Kind     `json:"token_kind"`
	Chars          []string `json:"chars"`
	BaseVocabSize  *int     `json:"base_vocab_size"`
	ModelVocabSize *int     `json:"model_vocab_size"`
	// The gpt2 special-token maps, in MyPT's order; absent for char.
	SpecialTokenEncoder *orderedIDs `json:"special_token_encoder,omitempty"`
	SpecialTokensByName *orderedIDs `json:"special_tokens_by_name,omitempty"`
	SpecialTokenVersion *int        `json:"special_token_version,omitempty"`
}

// State returns the tokenizer's MyPT state.
func (t *Tokenizer) State() State {
	model := t.modelVocab
	st := State{TokenKind: t.kind, ModelVocabSize: &model}
	switch t.kind {
	case KindGPT2:
		base, version := BaseVocabSize, 1
		enc := make(orderedIDs, len(specials))
		byName := make(orderedIDs, len(specials))
		for i, s := range specials {
			enc[i] = keyID{s.Text, s.ID}
			byName[i] = keyID{s.Name, s.ID}
		}
		st.BaseVocabSize = &base
		st.SpecialTokenEncoder, st.SpecialTokensByName, st.SpecialTokenVersion = &enc, &byName, &version
	case KindChar:
		st.Chars = make([]string, len(t.chars))
		for i, r := range t.chars {
			st.Chars[i] = string(r)
		}
		// MyPT leaves base_vocab_size null for char.
	}
	return st
}

// FromState rebuilds a tokenizer from a MyPT state. defaultVocab is used
// when the state has no model_vocab_size (MyPT falls back to the config's).
// A gpt2 state whose special-token ids differ from the pinned ones (an old
// MyPT mapping) is canonicalized to the pinned ids with a warning, as MyPT
// does; one without a mapping gets the pinned ids.
func FromState(st State, defaultVocab int) (*Tokenizer, error) {
	vocab := defaultVocab
	if st.ModelVocabSize != nil {
		vocab = *st.ModelVocabSize
	}
	switch st.TokenKind {
	case KindGPT2:
		if st.BaseVocabSize != nil && *st.BaseVocabSize != BaseVocabSize {
			return nil, fmt.Errorf("tokenizer state: base_vocab_size %d, but GPT-2 has %d", *st.BaseVocabSize, BaseVocabSize)
		}
		if st.SpecialTokenEncoder != nil && !st.SpecialTokenEncoder.isPinned() {
			slog.Warn("detected legacy special-token id mapping in tokenizer state; canonicalized to the pinned ids 50257-50275")
		}
		return NewGPT2(vocab)
	case KindChar:
		if st.Chars == nil {
			return nil, fmt.Errorf("tokenizer state: token_kind char has no chars (MyPT: \"Char vocabulary not built\")")
		}
		chars := make([]rune, len(st.Chars))
		for i, c := range st.Chars {
			r := []rune(c)
			if len(r) != 1 {
				return nil, fmt.Errorf("tokenizer state: chars[%d] = %q is not one character", i, c)
			}
			chars[i] = r[0]
		}
		if st.ModelVocabSize == nil {
			vocab = len(chars)
		}
		return newCharFromList(chars, vocab), nil
	case "":
		return nil, fmt.Errorf("tokenizer state: missing token_kind")
	default:
		return nil, fmt.Errorf("tokenizer state: unknown token_kind %q (want gpt2 or char)", st.TokenKind)
	}
}

// Load reads a tokenizer_state.json / tokenizer.json file.
func Load(path string, defaultVocab int) (*Tokenizer, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read tokenizer state: %w", err)
	}
	t, err := Parse(b, defaultVocab)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return t, nil
}

// Parse builds a tokenizer from the contents of a tokenizer state file.
func Parse(b []byte, defaultVocab int) (*Tokenizer, error) {
	var st State
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("parse tokenizer state: %w", err)
	}
	return FromState(st, defaultVocab)
}

// MarshalState renders a state as MyPT writes it: JSON indented by two
// spaces, keys in MyPT's order.
func MarshalState(st State) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(st); err != nil {
		return nil, err
	}
	return bytes.TrimRight(buf.Bytes(), "\n"), nil
}

// Save writes the tokenizer's state to path atomically.
func (t *Tokenizer) Save(path string) error {
	b, err := MarshalState(t.State())
	if err != nil {
		return fmt.Errorf("encode tokenizer state: %w", err)
	}
	return atomicfile.WriteFile(path, b, 0o644)
}

type keyID struct {
	Key string
	ID  uint32
}

// orderedIDs is a JSON object from string to id that keeps its key order.
type orderedIDs []keyID

func (o orderedIDs) MarshalJSON() ([]byte, error) {
	var buf bytes.Buffer
	buf.WriteByte('{')
	for i, kv := range o {
		if i > 0 {
			buf.WriteByte(',')
		}
		var k bytes.Buffer
		enc := json.NewEncoder(&k)
		enc.SetEscapeHTML(false) // MyPT writes "<myPT_eot>", not "\u003cmyPT_eot\u003e"
		if err := enc.Encode(kv.Key); err != nil {
			return nil, err
		}
		buf.Write(bytes.TrimRight(k.Bytes(), "\n"))
		fmt.Fprintf(&buf, ":%d", kv.ID)
	}
	buf.WriteByte('}')
	return buf.Bytes(), nil
}

func (o *orderedIDs) UnmarshalJSON(b []byte) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return fmt.Errorf("expected a JSON object of ids")
	}
	*o = (*o)[:0]
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		var id uint32
		if err := dec.Decode(&id); err != nil {
			return fmt.Errorf("id of %v: %w", tok, err)
		}
		*o = append(*o, keyID{tok.(string), id})
	}
	return nil
}

// isPinned reports whether a saved tag -> id map is exactly MyPT's pinned one.
func (o orderedIDs) isPinned() bool {
	if len(o) != len(specials) {
		return false
	}
	for _, kv := range o {
		if id, ok := specialIDs[kv.Key]; !ok || id != kv.ID {
			return false
		}
	}
	return true
}

// Package tokenizer turns text into token ids and back exactly as MyPT does.
//
// The gpt2 kind is GPT-2's byte-level BPE (tiktoken "gpt2" / r50k_base,
// ranks embedded through github.com/tiktoken-go/tokenizer, nothing is
// downloaded) plus MyPT's 19 special tokens at their pinned ids
// 50257..50275. Encode first splits the text on the special tag strings;
// every span between tags is BPE-encoded on its own, so merges never cross a
// tag, and other special-looking strings such as <|endoftext|> are plain
// text. The model vocabulary is 50304.
//
// The char kind is MyPT's character vocabulary for plain-text corpora: the
// sorted set of code points of a corpus, no special tokens.
//
// A Tokenizer is immutable and safe for concurrent use. Its State is MyPT's
// tokenizer_state.json / tokenizer.json.
package tokenizer

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Kind names a tokenization scheme, as MyPT's token_kind.
type Kind string

// The two tokenization kinds MyPT knows.
const (
	KindGPT2 Kind = "gpt2"
	KindChar Kind = "char"
)

// Tokenizer encodes and decodes text for one Kind.
type Tokenizer struct {
	kind       Kind
	modelVocab int

	bpe *bpe // gpt2

	chars  []rune          // char: id -> code point
	charID map[rune]uint32 // char: code point -> id
}

// NewGPT2 returns the GPT-2 BPE tokenizer with MyPT's special tokens for a
// model vocabulary of vocabSize (MyPT's default is DefaultVocabSize). Like
// MyPT it refuses a vocabulary too small to hold the pinned special ids.
func NewGPT2(vocabSize int) (*Tokenizer, error) {
	if vocabSize <= int(EOT) {
		return nil, fmt.Errorf("vocab size %d cannot hold the special tokens (ids %d-%d): use at least %d (MyPT uses %d)",
			vocabSize, SystemOpen, EOT, EOT+1, DefaultVocabSize)
	}
	b, err := gpt2BPE()
	if err != nil {
		return nil, err
	}
	return &Tokenizer{kind: KindGPT2, modelVocab: vocabSize, bpe: b}, nil
}

// NewChar builds MyPT's character vocabulary from a corpus: the distinct
// code points of text in ascending order, id = position.
func NewChar(text string) *Tokenizer {
	seen := make(map[rune]struct{})
	for _, r := range text {
		seen[r] = struct{}{}
	}
	chars := make([]rune, 0, len(seen))
	for r := range seen {
		chars = append(chars, r)
	}
	slices.Sort(chars)
	return newCharFromList(chars, len(chars))
}

func newCharFromList(chars []rune, modelVocab int) *Tokenizer {
	ids := make(map[rune]uint32, len(chars))
	for i, r := range chars {
		ids[r] = uint32(i)
	}
	return &Tokenizer{kind: KindChar, modelVocab: modelVocab, chars: chars, charID: ids}
}

// Kind reports the tokenization kind.
func (t *Tokenizer) Kind() Kind { return t.kind }

// VocabSize is the model vocabulary size (embedding rows): 50304 by default
// for gpt2, the number of distinct characters for char unless the state
// said otherwise.
func (t *Tokenizer) VocabSize() int { return t.modelVocab }

// Chars returns the char vocabulary (nil for gpt2).
func (t *Tokenizer) Chars() []rune { return slices.Clone(t.chars) }

// PadID is the id MyPT pads episodes with: <myPT_eot> for gpt2. A char
// vocabulary has none.
func (t *Tokenizer) PadID() (uint32, bool) {
	if t.kind == KindGPT2 {
		return EOT, true
	}
	return 0, false
}

// Encode returns the token ids of text. For gpt2, special tag strings become
// their pinned ids; invalid UTF-8 is first replaced the way Python decodes it
// with errors="replace". For char, a character outside the vocabulary is an
// error.
func (t *Tokenizer) Encode(text string) ([]uint32, error) {
	return t.AppendEncode(make([]uint32, 0, len(text)/3+4), text)
}

// AppendEncode is Encode appending to dst.
func (t *Tokenizer) AppendEncode(dst []uint32, text string) ([]uint32, error) {
	if t.kind == KindChar {
		return t.appendChars(dst, text)
	}
	text = replaceInvalidUTF8(text)
	var err error
	for len(text) > 0 {
		at, id, n := nextSpecial(text)
		if at < 0 {
			return t.bpe.appendEncode(dst, text)
		}
		if dst, err = t.bpe.appendEncode(dst, text[:at]); err != nil {
			return dst, err
		}
		dst = append(dst, id)
		text = text[at+n:]
	}
	return dst, nil
}

// EncodeOrdinary encodes text with no special-token handling: a tag string
// is BPE-encoded like any other text (tiktoken's encode_ordinary).
func (t *Tokenizer) EncodeOrdinary(text string) ([]uint32, error) {
	if t.kind == KindChar {
		return t.appendChars(nil, text)
	}
	return t.bpe.appendEncode(nil, replaceInvalidUTF8(text))
}

func (t *Tokenizer) appendChars(dst []uint32, text string) ([]uint32, error) {
	for i, r := range text {
		id, ok := t.charID[r]
		if !ok {
			return dst, fmt.Errorf("character %q at byte %d is not in the char vocabulary (%d characters)", r, i, len(t.chars))
		}
		dst = append(dst, id)
	}
	return dst, nil
}

// nextSpecial finds the first special tag in text: its byte offset, id and
// length, or at = -1. Every tag starts with '<' and ends at its only '>',
// and no tag is a prefix of another, so the candidate at each '<' is the
// text up to the next '>' and at most one tag can match there.
func nextSpecial(text string) (at int, id uint32, n int) {
	const longest = len("</myPT_assistant_context>")
	for off := 0; ; {
		i := strings.IndexByte(text[off:], '<')
		if i < 0 {
			return -1, 0, 0
		}
		i += off
		rest := text[i:]
		if len(rest) > longest {
			rest = rest[:longest]
		}
		if j := strings.IndexByte(rest, '>'); j > 0 {
			if id, ok := specialIDs[rest[:j+1]]; ok {
				return i, id, j + 1
			}
		}
		off = i + 1
	}
}

var specialIDs = func() map[string]uint32 {
	m := make(map[string]uint32, len(specials))
	for _, s := range specials {
		m[s.Text] = s.ID
	}
	return m
}()

// Decode turns ids back into text. For gpt2, runs of ordinary ids are
// decoded together with invalid UTF-8 replaced by U+FFFD (tiktoken's
// default), special ids become their tag strings, and any other id at or
// above the base vocabulary becomes "<unk_tok_ID>", as MyPT does.
func (t *Tokenizer) Decode(ids []uint32) (string, error) {
	var sb strings.Builder
	if t.kind == KindChar {
		for _, id := range ids {
			if int(id) >= len(t.chars) {
				return "", fmt.Errorf("token id %d is outside the char vocabulary (%d characters)", id, len(t.chars))
			}
			sb.WriteRune(t.chars[id])
		}
		return sb.String(), nil
	}
	start := 0
	flush := func(end int) error {
		if start < end {
			return t.bpe.decodeBytes(&sb, ids[start:end])
		}
		return nil
	}
	for i, id := range ids {
		if id < BaseVocabSize {
			continue
		}
		if err := flush(i); err != nil {
			return "", err
		}
		start = i + 1
		if s, ok := SpecialText(id); ok {
			sb.WriteString(s)
		} else {
			sb.WriteString("<unk_tok_" + strconv.FormatUint(uint64(id), 10) + ">")
		}
	}
	if err := flush(len(ids)); err != nil {
		return "", err
	}
	return sb.String(), nil
}

// TokenText returns a printable rendering of one token: the tag for a
// special id, the decoded text otherwise (bytes that are not valid UTF-8 on
// their own are shown as \xNN).
func (t *Tokenizer) TokenText(id uint32) string {
	if t.kind == KindChar {
		if int(id) < len(t.chars) {
			return string(t.chars[id])
		}
		return "<unk_tok_" + strconv.FormatUint(uint64(id), 10) + ">"
	}
	if s, ok := SpecialText(id); ok {
		return s
	}
	s, ok := t.bpe.bytesOf(id)
	if !ok {
		return "<unk_tok_" + strconv.FormatUint(uint64(id), 10) + ">"
	}
	if utf8.ValidString(s) {
		return s
	}
	var sb strings.Builder
	for i := 0; i < len(s); i++ {
		fmt.Fprintf(&sb, "\\x%02x", s[i])
	}
	return sb.String()
}

package tokenizer

import (
	"fmt"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"unicode/utf8"

	"github.com/dlclark/regexp2/v2"
	"github.com/tiktoken-go/tokenizer/codec"
)

// gpt2Pattern is GPT-2's pre-tokenization regex (tiktoken's
// '(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+').
// Its \s+(?!\S) look-ahead is not expressible in RE2, so it runs on
// regexp2, compiled with regexp2.Compile: unlike MustCompile, Compile never
// swaps in the code-generated matcher tiktoken-go registers for the r50k
// pattern, which skips U+007F (DEL) entirely where tiktoken emits token 221
// (see the "controls" test vector and TestPreTokenizerCoversEveryCodePoint).
// The outer group keeps the pattern string distinct from that registered one
// as well.
const gpt2Pattern = `(?:'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)`

// maxCachedPieces bounds the piece cache; past it pieces are merged afresh.
const maxCachedPieces = 1 << 20

// bpe is GPT-2 byte-level BPE over the r50k_base ranks embedded in
// tiktoken-go, with a cache from pre-tokenized piece to token ids: real
// text repeats its words, so almost every piece skips the merge loop.
// It is safe for concurrent use.
type bpe struct {
	split      *regexp2.Regexp
	ranks      map[string]uint32 // token bytes -> rank (= token id)
	tokenBytes []string          // token id -> bytes
	cache      sync.Map          // piece -> []uint32
	cached     atomic.Int64
}

var (
	sharedBPEOnce sync.Once
	sharedBPE     *bpe
	sharedBPEErr  error
)

// gpt2BPE returns the process-wide BPE engine; building it costs the
// vocabulary tables, so it is built once and shared.
func gpt2BPE() (*bpe, error) {
	sharedBPEOnce.Do(func() { sharedBPE, sharedBPEErr = newBPE() })
	return sharedBPE, sharedBPEErr
}

func newBPE() (*bpe, error) {
	split, err := regexp2.Compile(gpt2Pattern, regexp2.None)
	if err != nil {
		return nil, fmt.Errorf("compile gpt2 pre-tokenizer: %w", err)
	}
	// tiktoken-go exposes the r50k ranks through its codec; reading each id
	// back gives the id -> bytes table, and ranks are the ids.
	c := codec.NewR50kBase()
	b := &bpe{split: split, ranks: make(map[string]uint32, BaseVocabSize-1), tokenBytes: make([]string, BaseVocabSize)}
	for id := range uint32(BaseVocabSize - 1) { // 50256 is <|endoftext|>, not a mergeable rank
		s, err := c.Decode([]uint{uint(id)})
		if err != nil || s == "" {
			return nil, fmt.Errorf("r50k_base vocabulary has no token %d: %v", id, err)
		}
		b.tokenBytes[id] = s
		b.ranks[s] = id
	}
	b.tokenBytes[BaseVocabSize-1] = "<|endoftext|>"
	if len(b.ranks) != BaseVocabSize-1 {
		return nil, fmt.Errorf("r50k_base vocabulary has %d distinct tokens, want %d", len(b.ranks), BaseVocabSize-1)
	}
	return b, nil
}

// appendEncode appends the ids of text, encoded as ordinary text (special
// strings such as <|endoftext|> get no special treatment), to dst.
// text must be valid UTF-8.
func (b *bpe) appendEncode(dst []uint32, text string) ([]uint32, error) {
	if text == "" {
		return dst, nil
	}
	m, err := b.split.FindStringMatch(text)
	if err != nil {
		return dst, fmt.Errorf("gpt2 pre-tokenizer: %w", err)
	}
	for m != nil {
		piece := m.String()
		if ids, ok := b.cache.Load(piece); ok {
			dst = append(dst, ids.([]uint32)...)
		} else {
			ids := b.merge(piece)
			if b.cached.Load() < maxCachedPieces {
				b.cache.Store(piece, ids)
				b.cached.Add(1)
			}
			dst = append(dst, ids...)
		}
		if m, err = b.split.FindNextMatch(m); err != nil {
			return dst, fmt.Errorf("gpt2 pre-tokenizer: %w", err)
		}
	}
	return dst, nil
}

// merge byte-pair encodes one pre-tokenized piece: start from single bytes
// and repeatedly join the adjacent pair whose joined bytes have the lowest
// rank (leftmost on ties) until no adjacent pair is in the vocabulary.
func (b *bpe) merge(piece string) []uint32 {
	if id, ok := b.ranks[piece]; ok {
		return []uint32{id}
	}
	const none = math.MaxUint32
	// starts[i] is where part i begins; part i ends where part i+1 begins.
	starts := make([]int, len(piece)+1)
	for i := range starts {
		starts[i] = i
	}
	// pairRank[i] is the rank of parts i and i+1 joined.
	pairRank := make([]uint32, len(piece))
	rankAt := func(i int) uint32 {
		if i+2 >= len(starts) {
			return none
		}
		if r, ok := b.ranks[piece[starts[i]:starts[i+2]]]; ok {
			return r
		}
		return none
	}
	for i := range pairRank {
		pairRank[i] = rankAt(i)
	}
	for len(starts) > 2 {
		best, at := uint32(none), -1
		for i, r := range pairRank[:len(starts)-2] {
			if r < best {
				best, at = r, i
			}
		}
		if at < 0 {
			break
		}
		starts = append(starts[:at+1], starts[at+2:]...)
		pairRank = append(pairRank[:at+1], pairRank[at+2:]...)
		pairRank[at] = rankAt(at)
		if at > 0 {
			pairRank[at-1] = rankAt(at - 1)
		}
	}
	ids := make([]uint32, len(starts)-1)
	for i := range ids {
		ids[i] = b.ranks[piece[starts[i]:starts[i+1]]]
	}
	return ids
}

// bytesOf returns the byte string a base-vocabulary id stands for.
func (b *bpe) bytesOf(id uint32) (string, bool) {
	if int(id) >= len(b.tokenBytes) {
		return "", false
	}
	return b.tokenBytes[id], true
}

// decodeBytes concatenates the bytes of ordinary ids and decodes them the way
// Python's bytes.decode("utf-8", errors="replace") does (tiktoken's default).
func (b *bpe) decodeBytes(sb *strings.Builder, ids []uint32) error {
	var raw strings.Builder
	for _, id := range ids {
		s, ok := b.bytesOf(id)
		if !ok {
			return fmt.Errorf("token id %d is not in the GPT-2 vocabulary", id)
		}
		raw.WriteString(s)
	}
	sb.WriteString(replaceInvalidUTF8(raw.String()))
	return nil
}

// replaceInvalidUTF8 replaces each maximal invalid subsequence with U+FFFD,
// as Python's UTF-8 decoder does with errors="replace" (one replacement per
// maximal subpart of an ill-formed sequence, Unicode §3.9).
func replaceInvalidUTF8(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	var sb strings.Builder
	sb.Grow(len(s) + 8)
	for len(s) > 0 {
		r, n := utf8.DecodeRuneInString(s)
		if r == utf8.RuneError && n == 1 {
			sb.WriteRune(utf8.RuneError)
			n = invalidPrefixLen(s)
		} else {
			sb.WriteString(s[:n])
		}
		s = s[n:]
	}
	return sb.String()
}

// invalidPrefixLen is the length of the longest prefix of s (which starts
// with an ill-formed sequence) that could begin a well-formed one: the lead
// byte plus the continuation bytes that are still in range. At least 1.
func invalidPrefixLen(s string) int {
	lead := s[0]
	total, lo, hi := 0, byte(0x80), byte(0xBF)
	switch {
	case lead >= 0xC2 && lead <= 0xDF:
		total = 2
	case lead >= 0xE0 && lead <= 0xEF:
		total = 3
		if lead == 0xE0 {
			lo = 0xA0 // no overlong 3-byte forms
		} else if lead == 0xED {
			hi = 0x9F // no surrogates
		}
	case lead >= 0xF0 && lead <= 0xF4:
		total = 4
		if lead == 0xF0 {
			lo = 0x90 // no overlong 4-byte forms
		} else if lead == 0xF4 {
			hi = 0x8F // nothing above U+10FFFF
		}
	default:
		return 1
	}
	n := 1
	for n < total && n < len(s) {
		c := s[n]
		if n == 1 && (c < lo || c > hi) || n > 1 && (c < 0x80 || c > 0xBF) {
			break
		}
		n++
	}
	return n
}

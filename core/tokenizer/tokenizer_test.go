package tokenizer

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

type vectorFile struct {
	Cases []struct {
		Name     string
		Text     string
		Ordinary []uint32
		Mypt     []uint32
	}
	Decodes []struct {
		IDs  []uint32
		Text string
	}
}

// vectors.json comes from npm's tiktoken and js-tiktoken (gen_vectors.cjs).
func loadVectors(t *testing.T) vectorFile {
	t.Helper()
	b, err := os.ReadFile("testdata/vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	var v vectorFile
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	if len(v.Cases) < 300 || len(v.Decodes) == 0 {
		t.Fatalf("vectors.json looks truncated: %d cases", len(v.Cases))
	}
	return v
}

func gpt2(t testing.TB) *Tokenizer {
	t.Helper()
	tok, err := NewGPT2(DefaultVocabSize)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestEncodeMatchesTiktoken(t *testing.T) {
	tok := gpt2(t)
	for _, c := range loadVectors(t).Cases {
		got, err := tok.EncodeOrdinary(c.Text)
		if err != nil {
			t.Fatalf("%s: %v", c.Name, err)
		}
		if !slices.Equal(got, c.Ordinary) && !(len(got) == 0 && len(c.Ordinary) == 0) {
			t.Errorf("%s: EncodeOrdinary(%q)\n got %v\nwant %v", c.Name, c.Text, got, c.Ordinary)
		}
		got, err = tok.Encode(c.Text)
		if err != nil {
			t.Fatalf("%s: %v", c.Name, err)
		}
		if !slices.Equal(got, c.Mypt) && !(len(got) == 0 && len(c.Mypt) == 0) {
			t.Errorf("%s: Encode(%q)\n got %v\nwant %v", c.Name, c.Text, got, c.Mypt)
		}
	}
}

// Encoding twice must give the same ids: the second pass is served from the
// piece cache.
func TestEncodeCacheConsistent(t *testing.T) {
	tok := gpt2(t)
	for _, c := range loadVectors(t).Cases[:60] {
		a, _ := tok.Encode(c.Text)
		b, _ := tok.Encode(c.Text)
		if !slices.Equal(a, b) {
			t.Fatalf("%s: cached encode differs", c.Name)
		}
	}
}

func TestDecodeMatchesReference(t *testing.T) {
	tok := gpt2(t)
	v := loadVectors(t)
	for _, d := range v.Decodes {
		got, err := tok.Decode(d.IDs)
		if err != nil {
			t.Fatal(err)
		}
		if got != d.Text {
			t.Errorf("Decode(%v) = %q, want %q", d.IDs, got, d.Text)
		}
	}
	// Round trip: decode(encode(x)) == x for valid UTF-8.
	for _, c := range v.Cases {
		got, err := tok.Decode(c.Mypt)
		if err != nil {
			t.Fatal(err)
		}
		if got != c.Text {
			t.Errorf("%s: round trip gave %q", c.Name, got)
		}
	}
}

func TestSpecialTokens(t *testing.T) {
	ss := Specials()
	if len(ss) != 19 {
		t.Fatalf("%d specials", len(ss))
	}
	for i, s := range ss {
		if s.ID != uint32(50257+i) {
			t.Errorf("%s has id %d, want %d", s.Name, s.ID, 50257+i)
		}
		if txt, ok := SpecialText(s.ID); !ok || txt != s.Text {
			t.Errorf("SpecialText(%d) = %q", s.ID, txt)
		}
		if b, ok := SpecialByName(s.Name); !ok || b != s {
			t.Errorf("SpecialByName(%q) = %v", s.Name, b)
		}
	}
	if s, _ := SpecialByName("myPT_assistant_open"); s.ID != 50261 || s.Text != "<myPT_assistant>" {
		t.Errorf("assistant open = %+v", s)
	}
	if s, _ := SpecialByName("myPT_eot"); s.ID != 50275 {
		t.Errorf("eot = %+v", s)
	}
	tok := gpt2(t)
	ids, _ := tok.Encode("<myPT_assistant>x</myPT_assistant><myPT_eot>")
	if !slices.Equal(ids, []uint32{50261, 87, 50262, 50275}) {
		t.Errorf("tags encode to %v", ids)
	}
	if pad, ok := tok.PadID(); !ok || pad != 50275 {
		t.Errorf("pad = %d", pad)
	}
}

func TestVocabTooSmall(t *testing.T) {
	if _, err := NewGPT2(50275); err == nil {
		t.Fatal("vocab 50275 accepted, but id 50275 does not fit")
	}
	if _, err := NewGPT2(50276); err != nil {
		t.Fatal(err)
	}
}

func TestInvalidUTF8Replaced(t *testing.T) {
	tok := gpt2(t)
	// Python reads such bytes with errors="replace" as U+FFFD per maximal
	// subpart: "\xe2\x82" is one subpart, "\xff" another.
	got, _ := tok.Encode("a\xe2\x82b\xffc")
	want, _ := tok.Encode("a\uFFFDb\uFFFDc")
	if !slices.Equal(got, want) {
		t.Errorf("invalid bytes: %v, want %v", got, want)
	}
	for in, want := range map[string]string{
		"\xe2\x82":     "\uFFFD",
		"\xe2\x82\xac": "€",
		"\xf0\x9f\x98": "\uFFFD",
		"\xed\xa0\x80": "\uFFFD\uFFFD\uFFFD", // surrogate: E0..9F is out of range after ED
		"\xc0\xaf":     "\uFFFD\uFFFD",
		"x\x80y":       "x\uFFFDy",
	} {
		if got := replaceInvalidUTF8(in); got != want {
			t.Errorf("replaceInvalidUTF8(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestCharTokenizer(t *testing.T) {
	tok := NewChar("hello wörld")
	if tok.Kind() != KindChar || tok.VocabSize() != 9 {
		t.Fatalf("kind %s vocab %d", tok.Kind(), tok.VocabSize())
	}
	// sorted(set(text)) by code point: ' ', d, e, h, l, o, r, w, ö
	if got := string(tok.Chars()); got != " dehlorwö" {
		t.Errorf("chars = %q", got)
	}
	ids, err := tok.Encode("world")
	if err != nil || !slices.Equal(ids, []uint32{7, 5, 6, 4, 1}) {
		t.Errorf("Encode(world) = %v, %v", ids, err)
	}
	if s, _ := tok.Decode(ids); s != "world" {
		t.Errorf("decode = %q", s)
	}
	if _, err := tok.Encode("hex"); err == nil || !strings.Contains(err.Error(), `'x'`) {
		t.Errorf("unknown char error = %v", err)
	}
	if _, err := tok.Decode([]uint32{9}); err == nil {
		t.Error("decode of out-of-vocabulary id succeeded")
	}
	if _, ok := tok.PadID(); ok {
		t.Error("char tokenizer claims a pad id")
	}
}

func TestStateRoundTrip(t *testing.T) {
	dir := t.TempDir()
	tok := gpt2(t)
	path := filepath.Join(dir, "tokenizer_state.json")
	if err := tok.Save(path); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(path)
	var raw map[string]any
	if err := json.Unmarshal(b, &raw); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"token_kind", "chars", "base_vocab_size", "model_vocab_size",
		"special_token_encoder", "special_tokens_by_name", "special_token_version"} {
		if _, ok := raw[k]; !ok {
			t.Errorf("state lacks %q", k)
		}
	}
	if raw["token_kind"] != "gpt2" || raw["chars"] != nil || raw["base_vocab_size"] != 50257.0 ||
		raw["model_vocab_size"] != 50304.0 || raw["special_token_version"] != 1.0 {
		t.Errorf("state values: %v", raw)
	}
	enc := raw["special_token_encoder"].(map[string]any)
	if len(enc) != 19 || enc["<myPT_assistant>"] != 50261.0 || enc["<myPT_eot>"] != 50275.0 {
		t.Errorf("special_token_encoder = %v", enc)
	}
	// Keys keep MyPT's order.
	if i, j := strings.Index(string(b), `"<myPT_system>"`), strings.Index(string(b), `"<myPT_eot>"`); i < 0 || i > j {
		t.Error("special_token_encoder keys not in MyPT order")
	}
	back, err := Load(path, DefaultVocabSize)
	if err != nil || back.Kind() != KindGPT2 || back.VocabSize() != 50304 {
		t.Fatalf("Load: %v %v", back, err)
	}

	ch := NewChar("abc ä")
	cpath := filepath.Join(dir, "char.json")
	if err := ch.Save(cpath); err != nil {
		t.Fatal(err)
	}
	back, err = Load(cpath, DefaultVocabSize)
	if err != nil || string(back.Chars()) != " abcä" || back.VocabSize() != 5 {
		t.Fatalf("char Load: %v %v", back, err)
	}
}

// A state written by MyPT itself (shape from its Tokenizer.get_state()), and
// an old one with a legacy id order, both load as the pinned mapping.
func TestLoadMyPTStates(t *testing.T) {
	dir := t.TempDir()
	mypt := `{"token_kind": "gpt2", "chars": null, "base_vocab_size": 50257, "model_vocab_size": 50304,
 "special_token_encoder": {"<myPT_system>": 50257, "<myPT_eot>": 50275},
 "special_tokens_by_name": {"myPT_system_open": 50257}, "special_token_version": 1}`
	legacy := `{"token_kind": "gpt2", "chars": null, "base_vocab_size": 50257, "model_vocab_size": 50304,
 "special_token_encoder": {"<myPT_assistant>": 50263, "<myPT_eot>": 50271}}`
	bare := `{"token_kind": "gpt2", "chars": null}`
	for name, body := range map[string]string{"mypt": mypt, "legacy": legacy, "bare": bare} {
		p := filepath.Join(dir, name+".json")
		os.WriteFile(p, []byte(body), 0o644)
		tok, err := Load(p, DefaultVocabSize)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if ids, _ := tok.Encode("<myPT_assistant><myPT_eot>"); !slices.Equal(ids, []uint32{50261, 50275}) {
			t.Errorf("%s: tags encode to %v", name, ids)
		}
	}
	p := filepath.Join(dir, "bad.json")
	os.WriteFile(p, []byte(`{"token_kind": "sentencepiece"}`), 0o644)
	if _, err := Load(p, DefaultVocabSize); err == nil || !strings.Contains(err.Error(), "sentencepiece") {
		t.Errorf("unknown kind error = %v", err)
	}
}

func BenchmarkEncode(b *testing.B) {
	tok := gpt2(b)
	text := strings.Repeat("<myPT_user>What is the capital of Germany? Über 12 345 Leute!</myPT_user>"+
		"<myPT_assistant>The capital of Germany is Berlin. 😀\n  def f(x): return x*2</myPT_assistant><myPT_eot>", 500)
	b.SetBytes(int64(len(text)))
	for b.Loop() {
		if _, err := tok.Encode(text); err != nil {
			b.Fatal(err)
		}
	}
}

// The pre-tokenizer must cover every character: tiktoken-go's generated
// matcher silently skipped U+007F, so check all code points between two
// letters.
func TestPreTokenizerCoversEveryCodePoint(t *testing.T) {
	b, err := gpt2BPE()
	if err != nil {
		t.Fatal(err)
	}
	for r := rune(0); r <= 0x10FFFF; r++ {
		if r >= 0xD800 && r <= 0xDFFF {
			continue
		}
		s := "a" + string(r) + "b"
		end := 0
		m, _ := b.split.FindStringMatch(s)
		for m != nil {
			if m.RuneIndex != end {
				t.Fatalf("%U: pre-tokenizer skipped runes %d..%d", r, end, m.RuneIndex)
			}
			end = m.RuneIndex + m.RuneLength
			m, _ = b.split.FindNextMatch(m)
		}
		if end != 3 {
			t.Fatalf("%U: pre-tokenizer stopped at rune %d of 3", r, end)
		}
	}
}

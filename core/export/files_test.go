package export

import (
	"encoding/json"
	"testing"

	"github.com/mypt/mypt/core/tokenizer"
)

func TestTokenizerFilesGPT2(t *testing.T) {
	tok, err := tokenizer.NewGPT2(tokenizer.DefaultVocabSize)
	if err != nil {
		t.Fatal(err)
	}
	state, err := tokenizer.MarshalState(tok.State())
	if err != nil {
		t.Fatal(err)
	}
	files, eos, err := tokenizerFiles(state, tokenizer.DefaultVocabSize)
	if err != nil || eos != EndOfText {
		t.Fatalf("eos %d err %v", eos, err)
	}
	added := files["added_tokens.json"].(map[string]int)
	if added["<|endoftext|>"] != 50256 || added["<myPT_system>"] != 50257 || len(added) != 20 {
		t.Fatalf("added_tokens %v", added)
	}
	if string(files["mypt_tokenizer.json"].(json.RawMessage)) != string(state) {
		t.Fatal("MyPT state not kept verbatim")
	}
	if _, ok := files["tokenizer.json"]; ok {
		t.Fatal("tokenizer.json must be left to Hugging Face's format")
	}
}

package demodata

import (
	"bytes"
	"os"
	"testing"
)

// TestMatchesPythonGenerator compares with the file the committed Python
// generator (configs/data/gen_chat_demo.py, CPython's random module) wrote.
func TestMatchesPythonGenerator(t *testing.T) {
	want, err := os.ReadFile("../../configs/data/chat_demo.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	var got bytes.Buffer
	if err := Write(&got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Bytes(), want) {
		g, w := bytes.Split(got.Bytes(), []byte("\n")), bytes.Split(want, []byte("\n"))
		for i := range min(len(g), len(w)) {
			if !bytes.Equal(g[i], w[i]) {
				t.Fatalf("line %d differs:\n got %s\nwant %s", i+1, g[i], w[i])
			}
		}
		t.Fatalf("%d lines, want %d", len(g), len(w))
	}
}

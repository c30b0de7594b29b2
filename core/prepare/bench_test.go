package prepare

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// synthJSONL writes about size bytes of chat JSONL: 2-6 turns of sentences
// over a mixed vocabulary (common English, ~20k made-up words, numbers and
// some non-ASCII and code), so the BPE cache sees a realistic spread of
// repeated and new pieces.
func synthJSONL(path string, size int) error {
	r := rand.New(rand.NewPCG(7, 11))
	syll := strings.Fields("ka lo mi ne ra to su vi en ar el or un is th qu ch st pr gr")
	common := strings.Fields("the of and to in is you that it he was for on are as with his they I at be this have from or one had by word but not what all were we when your can said there use an each which she do how if will up other about out many then them so some her would make like him into time has look two more write go see number no way could people my than first water been call who its now find long down day did get come made may part")
	extra := []string{"Grüße", "Straße", "über", "😀", "日本語", "naïve", "café", "3.14", "1,000", "def f(x):\n    return x", `{"a": 1}`, "  ", "\n\n"}
	made := make([]string, 20000)
	for i := range made {
		var sb strings.Builder
		for range 1 + r.IntN(4) {
			sb.WriteString(syll[r.IntN(len(syll))])
		}
		made[i] = sb.String()
	}
	sentence := func() string {
		n := 4 + r.IntN(22)
		words := make([]string, n)
		for i := range words {
			switch x := r.Float64(); {
			case x < 0.55:
				words[i] = common[r.IntN(len(common))]
			case x < 0.93:
				words[i] = made[r.IntN(len(made))]
			case x < 0.97:
				words[i] = fmt.Sprint(r.IntN(100000))
			default:
				words[i] = extra[r.IntN(len(extra))]
			}
		}
		return strings.Join(words, " ") + []string{".", "?", "!"}[r.IntN(3)]
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	type msg struct {
		Role    string `json:"role"`
		Content string `json:"content"`
	}
	written := 0
	for written < size {
		turns := []int{2, 2, 2, 4, 6}[r.IntN(5)]
		msgs := make([]msg, turns)
		for t := range msgs {
			var parts []string
			for range 1 + r.IntN(4) {
				parts = append(parts, sentence())
			}
			msgs[t] = msg{Role: []string{"user", "assistant"}[t%2], Content: strings.Join(parts, " ")}
		}
		line, _ := json.Marshal(map[string]any{"system": "You are MyPT.", "messages": msgs})
		line = append(line, '\n')
		if _, err := f.Write(line); err != nil {
			return err
		}
		written += len(line)
	}
	return nil
}

// BenchmarkPrepare measures `mypt prepare` end to end (parse, serialize,
// tokenize, split, write) on 16 MB of synthetic chat JSONL; MB/s is input
// bytes per second.
func BenchmarkPrepare(b *testing.B) {
	dir := b.TempDir()
	in := filepath.Join(dir, "bench.jsonl")
	const size = 16 << 20
	if err := synthJSONL(in, size); err != nil {
		b.Fatal(err)
	}
	st, _ := os.Stat(in)
	b.SetBytes(st.Size())
	o := quiet()
	o.Input = in
	for i := 0; b.Loop(); i++ {
		o.Output = filepath.Join(dir, fmt.Sprint("out", i))
		if _, err := Run(context.Background(), o); err != nil {
			b.Fatal(err)
		}
		os.RemoveAll(o.Output)
	}
}

package prepare

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/mypt/mypt/core/dataset"
)

type refCase struct {
	Name  string
	Flags struct {
		Input          string   `json:"input"`
		ValSplit       *float64 `json:"val_split"`
		ValFile        string   `json:"val_file"`
		ValOnly        bool     `json:"val_only"`
		Seed           *int64   `json:"seed"`
		NoSystemPrompt bool     `json:"no_system_prompt"`
		SystemPrompt   string   `json:"system_prompt"`
		EnableRAGTags  bool     `json:"enable_rag_tags"`
		WeightedMask   bool     `json:"weighted_mask"`
		EnablePacking  bool     `json:"enable_packing"`
		PackBlockSize  int      `json:"pack_block_size"`
		PackByField    string   `json:"pack_by_field"`
		PackShuffle    *bool    `json:"pack_shuffle"`
		TokensPerShard int      `json:"tokens_per_shard"`
		SkipInvalid    bool     `json:"skip_invalid"`
	}
}

// quiet is DefaultOptions with logging discarded.
func quiet() Options {
	o := DefaultOptions()
	o.Log = slog.New(slog.DiscardHandler)
	return o
}

func (c refCase) options(out string) Options {
	o := quiet()
	f := c.Flags
	o.Input = filepath.Join("testdata", f.Input)
	o.Output = out
	if f.ValSplit != nil {
		o.ValSplit = *f.ValSplit
	}
	if f.ValFile != "" {
		o.ValFile = filepath.Join("testdata", f.ValFile)
	}
	o.ValOnly = f.ValOnly
	if f.Seed != nil {
		o.Seed = *f.Seed
	}
	o.NoSystemPrompt, o.SystemPrompt, o.EnableRAGTags = f.NoSystemPrompt, f.SystemPrompt, f.EnableRAGTags
	o.WeightedMask, o.EnablePacking, o.PackByField = f.WeightedMask, f.EnablePacking, f.PackByField
	if f.PackBlockSize > 0 {
		o.PackBlockSize = f.PackBlockSize
	}
	if f.PackShuffle != nil {
		o.PackShuffle = *f.PackShuffle
	}
	if f.TokensPerShard > 0 {
		o.TokensPerShard = f.TokensPerShard
	}
	o.SkipInvalid = f.SkipInvalid
	return o
}

func loadCases(t *testing.T) []refCase {
	t.Helper()
	b, err := os.ReadFile("testdata/cases.json")
	if err != nil {
		t.Fatal(err)
	}
	var cases []refCase
	if err := json.Unmarshal(b, &cases); err != nil {
		t.Fatal(err)
	}
	return cases
}

// shardFiles lists a split's files in shard order, MyPT's layout or ours:
// the split root first, then shard_NNNNN directories.
func shardFiles(t *testing.T, splitDir string) [][]string {
	t.Helper()
	var dirs []string
	if _, err := os.Stat(filepath.Join(splitDir, dataset.TokensFile)); err == nil {
		dirs = append(dirs, splitDir)
	}
	more, _ := filepath.Glob(filepath.Join(splitDir, "shard_*"))
	slices.Sort(more)
	dirs = append(dirs, more...)
	var out [][]string
	for _, d := range dirs {
		var files []string
		for _, name := range []string{dataset.TokensFile, dataset.MaskFile, dataset.WeightsFile, dataset.SegmentsFile, dataset.IndexFile} {
			if _, err := os.Stat(filepath.Join(d, name)); err == nil {
				files = append(files, filepath.Join(d, name))
			}
		}
		out = append(out, files)
	}
	return out
}

// TestByteCompatible runs every case of cases.json and compares the binary
// files with the ones gen_reference.py wrote (numpy, CPython random and
// npm tiktoken implementing MyPT's documented behaviour).
func TestByteCompatible(t *testing.T) {
	for _, c := range loadCases(t) {
		t.Run(c.Name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "ds")
			res, err := Run(context.Background(), c.options(out))
			if err != nil {
				t.Fatal(err)
			}
			ref := filepath.Join("testdata", "ref", c.Name)
			for _, split := range []string{"train", "val"} {
				want := shardFiles(t, filepath.Join(ref, split))
				got := shardFiles(t, filepath.Join(out, split))
				if len(got) != len(want) {
					t.Fatalf("%s: %d shards, reference has %d", split, len(got), len(want))
				}
				for i := range want {
					if len(got[i]) != len(want[i]) {
						t.Fatalf("%s shard %d: files %v, reference %v", split, i, got[i], want[i])
					}
					for j := range want[i] {
						if filepath.Base(got[i][j]) != filepath.Base(want[i][j]) {
							t.Fatalf("file %s vs %s", got[i][j], want[i][j])
						}
						a, _ := os.ReadFile(got[i][j])
						b, _ := os.ReadFile(want[i][j])
						if !bytes.Equal(a, b) {
							t.Errorf("%s differs from %s (%d vs %d bytes)", got[i][j], want[i][j], len(a), len(b))
						}
					}
				}
				// Our multi-shard layout puts shard 0 in shard_00000, not the root.
				if len(got) > 1 {
					if _, err := os.Stat(filepath.Join(out, split, dataset.TokensFile)); err == nil {
						t.Errorf("%s: multi-shard output has data at the split root", split)
					}
				}
			}
			var expect map[string]int64
			b, _ := os.ReadFile(filepath.Join(ref, "expect.json"))
			json.Unmarshal(b, &expect)
			gotCounts := map[string]int64{
				"num_train_conversations": int64(res.TrainConversations), "num_val_conversations": int64(res.ValConversations),
				"num_train_episodes": res.TrainEpisodes, "num_val_episodes": res.ValEpisodes,
				"num_train_tokens": res.TrainTokens, "num_val_tokens": res.ValTokens,
				"num_train_shards": int64(res.TrainShards), "num_val_shards": int64(res.ValShards),
			}
			for k, v := range expect {
				if gotCounts[k] != v {
					t.Errorf("%s = %d, reference %d", k, gotCounts[k], v)
				}
			}
			var meta map[string]any
			mb, err := os.ReadFile(filepath.Join(out, dataset.MetadataFile))
			if err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(mb, &meta); err != nil {
				t.Fatal(err)
			}
			for k, v := range expect {
				if meta[k] != float64(v) {
					t.Errorf("metadata %s = %v, want %d", k, meta[k], v)
				}
			}
			if c.Flags.SkipInvalid && len(res.Skipped) != 2 {
				t.Errorf("skipped %d rows, want 2", len(res.Skipped))
			}
			// The reader sees the same episodes in MyPT's layout (first shard at
			// the root, which MyPT's own loader skips) and in ours.
			compareDatasets(t, ref, out)
		})
	}
}

func compareDatasets(t *testing.T, refDir, ourDir string) {
	t.Helper()
	a, err := dataset.Open(refDir)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := dataset.Open(ourDir)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	for _, sp := range [][2]*dataset.Split{{a.Train, b.Train}, {a.Val, b.Val}} {
		if sp[0].NumEpisodes() != sp[1].NumEpisodes() || sp[0].NumTokens() != sp[1].NumTokens() {
			t.Fatalf("reader: reference %d episodes/%d tokens, ours %d/%d",
				sp[0].NumEpisodes(), sp[0].NumTokens(), sp[1].NumEpisodes(), sp[1].NumTokens())
		}
		for i := range sp[0].NumEpisodes() {
			x, y := sp[0].Episode(i), sp[1].Episode(i)
			if !slices.Equal(x.Tokens, y.Tokens) || !slices.Equal(x.Mask, y.Mask) {
				t.Fatalf("reader: episode %d differs", i)
			}
		}
	}
}

func writeFile(t *testing.T, dir, name, body string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

const goodRow = `{"system": "S", "messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]}`

func TestMalformedInputNamesLine(t *testing.T) {
	dir := t.TempDir()
	cases := map[string]string{
		"bad json":        goodRow + "\n\n" + `{"messages": [` + "\n",
		"not an object":   goodRow + "\n\n" + `[1, 2]` + "\n",
		"messages type":   goodRow + "\n\n" + `{"messages": "hello"}` + "\n",
		"message type":    goodRow + "\n\n" + `{"messages": ["hello"]}` + "\n",
		"content type":    goodRow + "\n\n" + `{"messages": [{"role": "user", "content": {"a": 1}}]}` + "\n",
		"invalid utf8":    goodRow + "\n\n" + "{\"messages\": [{\"content\": \"\xff\"}]}" + "\n",
		"byte order mark": goodRow + "\n\n" + "\xef\xbb\xbf" + goodRow + "\n",
	}
	for name, body := range cases {
		in := writeFile(t, dir, "in.jsonl", body)
		o := quiet()
		o.Input, o.Output = in, filepath.Join(dir, "out")
		_, err := Run(context.Background(), o)
		if err == nil || !strings.Contains(err.Error(), in+":3:") {
			t.Errorf("%s: error %v does not name %s:3", name, err, in)
		}
		if _, serr := os.Stat(o.Output); serr == nil {
			t.Errorf("%s: output directory left behind after failure", name)
		}
		o.SkipInvalid = true
		res, err := Run(context.Background(), o)
		if err != nil || len(res.Skipped) != 1 || res.Skipped[0].Line != 3 {
			t.Errorf("%s with skip: %v, %+v", name, err, res)
		}
		os.RemoveAll(o.Output)
	}
	leftovers, _ := filepath.Glob(filepath.Join(dir, ".out.tmp-*"))
	if len(leftovers) != 0 {
		t.Errorf("staging directories left behind: %v", leftovers)
	}
}

func TestSchemaErrorMode(t *testing.T) {
	dir := t.TempDir()
	in := writeFile(t, dir, "in.jsonl", goodRow+"\n"+`{"messages": [{"role": "user", "content": "no answer"}]}`+"\n")
	o := quiet()
	o.Input, o.Output, o.SchemaValidationMode = in, filepath.Join(dir, "out"), "error"
	if _, err := Run(context.Background(), o); err == nil || !strings.Contains(err.Error(), "no_assistant_message") {
		t.Fatalf("schema error mode: %v", err)
	}
	o.SchemaValidationMode = "warn"
	res, err := Run(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if res.InputSchema.Invalid != 1 || res.UnsupervisedCount != 1 {
		t.Errorf("invalid %d unsupervised %d", res.InputSchema.Invalid, res.UnsupervisedCount)
	}
	if !strings.HasSuffix(res.Unsupervised[0], "in.jsonl:2") {
		t.Errorf("unsupervised episode reported as %q", res.Unsupervised[0])
	}
}

func TestOverlapCheck(t *testing.T) {
	dir := t.TempDir()
	in := writeFile(t, dir, "train.jsonl", goodRow+"\n")
	val := writeFile(t, dir, "val.jsonl", goodRow+"\n")
	o := quiet()
	o.Input, o.ValFile, o.Output = in, val, filepath.Join(dir, "out")
	if _, err := Run(context.Background(), o); err == nil || !strings.Contains(err.Error(), "overlap") {
		t.Fatalf("overlap not refused: %v", err)
	}
	o.AllowOverlap = true
	if _, err := Run(context.Background(), o); err != nil {
		t.Fatal(err)
	}
}

func TestOutputReplacement(t *testing.T) {
	dir := t.TempDir()
	in := writeFile(t, dir, "in.jsonl", goodRow+"\n")
	o := quiet()
	o.Input = in
	// A non-empty directory that is not a dataset is never replaced.
	o.Output = filepath.Join(dir, "precious")
	os.MkdirAll(o.Output, 0o755)
	writeFile(t, o.Output, "notes.txt", "keep me")
	if _, err := Run(context.Background(), o); err == nil {
		t.Fatal("replaced a non-dataset directory")
	}
	// An existing dataset is replaced whole.
	o.Output = filepath.Join(dir, "ds")
	if _, err := Run(context.Background(), o); err != nil {
		t.Fatal(err)
	}
	writeFile(t, o.Output, "stale.bin", "x")
	if _, err := Run(context.Background(), o); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(o.Output, "stale.bin")); err == nil {
		t.Error("old dataset content survived the replacement")
	}
	ds, err := dataset.Open(o.Output)
	if err != nil {
		t.Fatal(err)
	}
	ds.Close()
}

func TestPyStr(t *testing.T) {
	for in, want := range map[string]string{
		`"x"`: "x", `null`: "None", `true`: "True", `false`: "False", `42`: "42", `-0`: "0",
		`1.5`: "1.5", `1.0`: "1.0", `1e2`: "100.0", `1e16`: "1e+16", `1e15`: "1000000000000000.0",
		`0.0001`: "0.0001", `0.00001`: "1e-05", `-2.5e-7`: "-2.5e-07", `123456789.123`: "123456789.123",
		`1.7976931348623157e308`: "1.7976931348623157e+308", `0.1`: "0.1", `-0.0`: "-0.0",
	} {
		got, err := pyStr(json.RawMessage(in))
		if err != nil || got != want {
			t.Errorf("pyStr(%s) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := pyStr(json.RawMessage(`[1]`)); err == nil {
		t.Error("array accepted as a string")
	}
}

func TestGreedyPack(t *testing.T) {
	ep := func(n int, tok uint32) *episode {
		e := &episode{}
		for range n {
			e.tokens = append(e.tokens, tok)
			e.weights = append(e.weights, 1)
		}
		return e
	}
	packs := greedyPack([]*episode{ep(3, 1), ep(4, 2), ep(2, 3), ep(12, 4)}, 8, 99)
	want := [][]uint32{{1, 1, 1, 2, 2, 2, 2, 99}, {3, 3, 99, 99, 99, 99, 99, 99}, {4, 4, 4, 4, 4, 4, 4, 4}}
	if len(packs) != len(want) {
		t.Fatalf("%d packs", len(packs))
	}
	for i, p := range packs {
		if !slices.Equal(p.tokens, want[i]) {
			t.Errorf("pack %d = %v, want %v", i, p.tokens, want[i])
		}
	}
	if !slices.Equal(packs[0].segments, []uint8{1, 1, 1, 2, 2, 2, 2, 0}) || packs[0].weights[7] != 0 {
		t.Errorf("segments %v weights %v", packs[0].segments, packs[0].weights)
	}
	// 255 episodes at most per pack (segment ids are uint8).
	var many []*episode
	for range 300 {
		many = append(many, ep(1, 7))
	}
	packs = greedyPack(many, 1000, 99)
	if len(packs) != 2 || packs[0].episodes != 255 || packs[1].episodes != 45 {
		t.Errorf("255-episode cap: %d packs", len(packs))
	}
}

func ExampleRun() {
	dir, _ := os.MkdirTemp("", "example")
	defer os.RemoveAll(dir)
	in := filepath.Join(dir, "gold.jsonl")
	os.WriteFile(in, []byte(goodRow+"\n"), 0o644)
	o := quiet()
	o.Log = slog.New(slog.DiscardHandler)
	o.Input, o.Output = in, filepath.Join(dir, "prepared")
	res, err := Run(context.Background(), o)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(res.TrainEpisodes, res.TrainTokens, res.ValEpisodes)
	// Output: 1 14 0
}

func TestPrepareText(t *testing.T) {
	dir := t.TempDir()
	in := writeFile(t, dir, "corpus.txt", "hello world\nhello there\n")
	for _, kind := range []string{"char", "gpt2"} {
		out := filepath.Join(dir, kind)
		res, err := PrepareText(context.Background(), TextOptions{Input: in, Output: out, Tokenization: kind, ValSplit: 0.25,
			Log: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		ds, err := dataset.Open(out)
		if err != nil {
			t.Fatal(err)
		}
		tok, err := ds.Tokenizer()
		if err != nil {
			t.Fatal(err)
		}
		all := append(slices.Clone(ds.Train.Shards[0].Tokens), ds.Val.Shards[0].Tokens...)
		text, err := tok.Decode(all)
		if err != nil || text != "hello world\nhello there\n" {
			t.Errorf("%s: decoded %q, %v", kind, text, err)
		}
		if ds.Kind != dataset.KindStream || res.TrainTokens != int(0.75*float64(len(all))) {
			t.Errorf("%s: kind %s, %d train of %d tokens", kind, ds.Kind, res.TrainTokens, len(all))
		}
		if kind == "char" && res.VocabSize != 10 { // " \nehldortw"
			t.Errorf("char vocab %d", res.VocabSize)
		}
		ds.Close()
	}
}

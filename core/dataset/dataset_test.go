package dataset

import (
	"encoding/binary"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/mypt/mypt/core/tokenizer"
)

// writeSplit writes raw MyPT files (uint32 tokens, uint8 mask, uint64 index)
// without going through ShardWriter.
func writeSplit(t *testing.T, dir string, episodes [][]uint32, masks [][]uint8) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	var tok, idx, mask []byte
	start := 0
	for i, ep := range episodes {
		for _, x := range ep {
			tok = binary.LittleEndian.AppendUint32(tok, x)
		}
		if masks != nil {
			mask = append(mask, masks[i]...)
		}
		idx = binary.LittleEndian.AppendUint64(idx, uint64(start))
		idx = binary.LittleEndian.AppendUint64(idx, uint64(len(ep)))
		start += len(ep)
	}
	os.WriteFile(filepath.Join(dir, TokensFile), tok, 0o644)
	os.WriteFile(filepath.Join(dir, IndexFile), idx, 0o644)
	if masks != nil {
		os.WriteFile(filepath.Join(dir, MaskFile), mask, 0o644)
	}
}

// myptFixture is MyPT's create_test_episode_dataset with uint32 tokens:
// train episode i is episodeLen copies of (i*100) % 50304, mask 0 on the
// first half and 1 on the second; val has 3 episodes based at (i+100)*100.
func myptFixture(t *testing.T, numEpisodes, episodeLen int) string {
	t.Helper()
	dir := t.TempDir()
	build := func(n int, base func(i int) uint32) ([][]uint32, [][]uint8) {
		var eps [][]uint32
		var masks [][]uint8
		for i := range n {
			ep := make([]uint32, episodeLen)
			m := make([]uint8, episodeLen)
			for j := range ep {
				ep[j] = base(i)
				if j >= episodeLen/2 {
					m[j] = 1
				}
			}
			eps, masks = append(eps, ep), append(masks, m)
		}
		return eps, masks
	}
	eps, masks := build(numEpisodes, func(i int) uint32 { return uint32(i * 100 % 50304) })
	writeSplit(t, filepath.Join(dir, "train"), eps, masks)
	eps, masks = build(3, func(i int) uint32 { return uint32((i + 100) * 100 % 50304) })
	writeSplit(t, filepath.Join(dir, "val"), eps, masks)
	os.WriteFile(filepath.Join(dir, "metadata.json"), []byte(`{"schema": "episode_indexed_sft_v1"}`), 0o644)
	return dir
}

func open(t *testing.T, dir string) *Dataset {
	t.Helper()
	ds, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ds.Close() })
	return ds
}

func sampler(t *testing.T, sp *Split, mutate func(*Options)) *Sampler {
	t.Helper()
	o := DefaultOptions()
	if mutate != nil {
		mutate(&o)
	}
	s, err := sp.NewSampler(o)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func next(t *testing.T, s *Sampler, b, blk int) *Batch {
	t.Helper()
	batch, err := s.Next(b, blk)
	if err != nil {
		t.Fatal(err)
	}
	return batch
}

// MyPT tests/test_episode_data_loader.py, behaviour 1: detection.
func TestDetection(t *testing.T) {
	if !IsEpisodeIndexed(myptFixture(t, 10, 20)) {
		t.Fatal("fixture not detected as episode-indexed")
	}
	if IsEpisodeIndexed(t.TempDir()) {
		t.Fatal("empty directory detected as episode-indexed")
	}
}

// Behaviour 2: loader initialization (bs 4, block 32, loss mask, epoch,
// shuffle, seed 1337).
func TestLoaderInit(t *testing.T) {
	ds := open(t, myptFixture(t, 10, 20))
	if ds.Kind != KindEpisodes || ds.Train.NumEpisodes() != 10 || ds.Val.NumEpisodes() != 3 {
		t.Fatalf("kind %s, %d train, %d val episodes", ds.Kind, ds.Train.NumEpisodes(), ds.Val.NumEpisodes())
	}
	s := sampler(t, ds.Train, nil)
	if s.pad != 50275 || s.NumEpisodes() != 10 {
		t.Fatalf("pad %d, %d episodes", s.pad, s.NumEpisodes())
	}
}

// Behaviour 3: shapes with truncation (block 16 < episode 20).
func TestBatchShapes(t *testing.T) {
	ds := open(t, myptFixture(t, 10, 20))
	b := next(t, sampler(t, ds.Train, nil), 4, 16)
	if b.B != 4 || b.T != 16 || len(b.Tokens) != 64 || len(b.Targets) != 64 || len(b.Weights) != 64 {
		t.Fatalf("shapes B %d T %d: %d %d %d", b.B, b.T, len(b.Tokens), len(b.Targets), len(b.Weights))
	}
	for _, w := range b.Weights {
		if w != 0 && w != 1 {
			t.Fatalf("mask value %v", w)
		}
	}
	if b.Segments != nil {
		t.Error("unpacked data returned segment ids")
	}
}

// Behaviour 4: mask consistency (bs 2, block 20, 5 episodes): a row is the
// 20-token episode plus one pad, mask_y = 9 zeros, 10 ones, 1 pad zero.
func TestMaskConsistency(t *testing.T) {
	ds := open(t, myptFixture(t, 5, 20))
	b := next(t, sampler(t, ds.Train, nil), 2, 20)
	zeros, ones := 0, 0
	for _, w := range b.Weights[:20] {
		if w == 0 {
			zeros++
		} else {
			ones++
		}
	}
	if zeros != 10 || ones != 10 {
		t.Errorf("first row: %d zeros, %d ones; want 10 and 10", zeros, ones)
	}
	if want := []float32{0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0}; !slices.Equal(b.Weights[:20], want) {
		t.Errorf("first row weights %v", b.Weights[:20])
	}
	sum := float32(0)
	for _, w := range b.Weights {
		sum += w
	}
	if frac := sum / float32(len(b.Weights)); math.Abs(float64(frac)-0.5) > 0.1 {
		t.Errorf("ones fraction %v", frac)
	}
}

// Behaviour 5: epoch determinism.
func TestEpochDeterminism(t *testing.T) {
	ds := open(t, myptFixture(t, 10, 20))
	seeded := func(seed int64) *Batch {
		return next(t, sampler(t, ds.Train, func(o *Options) { o.Seed = seed }), 4, 16)
	}
	a, b, c := seeded(42), seeded(42), seeded(99)
	if !slices.Equal(a.Tokens, b.Tokens) || !slices.Equal(a.Targets, b.Targets) || !slices.Equal(a.Weights, b.Weights) {
		t.Error("same seed, different batches")
	}
	if slices.Equal(a.Tokens, c.Tokens) {
		t.Error("seeds 42 and 99 gave the same batch")
	}
}

// Behaviour 6: short episodes are padded with <myPT_eot>.
func TestPadding(t *testing.T) {
	ds := open(t, myptFixture(t, 10, 20))
	b := next(t, sampler(t, ds.Train, nil), 4, 32)
	pads := 0
	for _, x := range b.Tokens[:32] {
		if x == 50275 {
			pads++
		}
	}
	if pads != 12 { // 20 real tokens, inputs are the first 32 of the 33-token window
		t.Errorf("%d pad tokens in row 0, want 12", pads)
	}
	for j := 19; j < 32; j++ {
		if b.Weights[j] != 0 {
			t.Fatalf("weight %v on padding at %d", b.Weights[j], j)
		}
	}
}

// Behaviour 7: without loss masking every weight is 1.
func TestNoMaskMode(t *testing.T) {
	ds := open(t, myptFixture(t, 10, 20))
	b := next(t, sampler(t, ds.Train, func(o *Options) { o.UseLossMask = false }), 4, 32)
	for _, w := range b.Weights {
		if w != 1 {
			t.Fatalf("weight %v without loss masking", w)
		}
	}
}

// The first epoch for seed 1337 over 10 episodes is numpy's
// RandomState(1337).permutation(10); the next epoch uses seed 1338, and a
// batch straddles the boundary.
func TestEpochOrder(t *testing.T) {
	ds := open(t, myptFixture(t, 10, 20))
	s := sampler(t, ds.Train, nil)
	var got []int
	for range 3 {
		got = append(got, next(t, s, 4, 8).Episodes...)
	}
	want := []int{6, 3, 0, 4, 5, 2, 1, 9, 8, 7, 6, 3} // then RandomState(1338): [6, 3, 8, ...]
	if !slices.Equal(got, want) {
		t.Fatalf("episodes %v, want %v", got, want)
	}
	b := next(t, s, 1, 8)
	if b.Episodes[0] != 8 || b.Tokens[0] != 800 {
		t.Errorf("13th episode %d (token %d), want 8", b.Episodes[0], b.Tokens[0])
	}
	if e, pos := s.Epoch(); e != 1 || pos != 3 {
		t.Errorf("epoch %d pos %d", e, pos)
	}
	order, _ := s.Order(0)
	if !slices.Equal(order, []int{6, 3, 0, 4, 5, 2, 1, 9, 8, 7}) {
		t.Errorf("Order(0) = %v", order)
	}
	// Without shuffling: arange.
	s = sampler(t, ds.Train, func(o *Options) { o.Shuffle = false })
	if b := next(t, s, 4, 8); !slices.Equal(b.Episodes, []int{0, 1, 2, 3}) {
		t.Errorf("unshuffled %v", b.Episodes)
	}
}

// Random mode is RandomState(seed).randint(0, n, size=batch) per batch.
func TestRandomMode(t *testing.T) {
	ds := open(t, myptFixture(t, 10, 20))
	s := sampler(t, ds.Train, func(o *Options) { o.Mode = ModeRandom })
	if b := next(t, s, 4, 8); !slices.Equal(b.Episodes, []int{7, 8, 7, 9}) {
		t.Errorf("first batch %v, want numpy's [7 8 7 9]", b.Episodes)
	}
	if b := next(t, s, 4, 8); !slices.Equal(b.Episodes, []int{7, 2, 2, 4}) {
		t.Errorf("second batch %v, want [7 2 2 4]", b.Episodes)
	}
}

func TestPositionRestore(t *testing.T) {
	ds := open(t, myptFixture(t, 10, 20))
	for _, mode := range []Mode{ModeEpoch, ModeRandom, ModeSequential} {
		a := sampler(t, ds.Train, func(o *Options) { o.Mode = mode })
		for range 5 {
			next(t, a, 3, 8)
		}
		raw, err := json.Marshal(a.Position())
		if err != nil {
			t.Fatal(err)
		}
		var want [][]int
		for range 4 {
			want = append(want, next(t, a, 3, 8).Episodes)
		}
		var pos Position
		json.Unmarshal(raw, &pos)
		b := sampler(t, ds.Train, func(o *Options) { o.Mode = mode })
		if err := b.SetPosition(pos); err != nil {
			t.Fatal(err)
		}
		for i := range 4 {
			if got := next(t, b, 3, 8).Episodes; !slices.Equal(got, want[i]) {
				t.Errorf("%s: batch %d after restore %v, want %v", mode, i, got, want[i])
			}
		}
		other := sampler(t, ds.Train, func(o *Options) { o.Mode = mode; o.Seed = 7 })
		if err := other.SetPosition(pos); err == nil {
			t.Errorf("%s: position accepted by a sampler with another seed", mode)
		}
	}
}

func TestTruncation(t *testing.T) {
	dir := t.TempDir()
	ep := make([]uint32, 100)
	m := make([]uint8, 100)
	for i := range ep {
		ep[i] = uint32(i)
		m[i] = uint8(i % 2)
	}
	writeSplit(t, filepath.Join(dir, "train"), [][]uint32{ep}, [][]uint8{m})
	ds := open(t, dir)
	tail := next(t, sampler(t, ds.Train, nil), 1, 10)
	if tail.Tokens[0] != 89 || tail.Targets[9] != 99 || tail.Weights[0] != 0 || tail.Weights[1] != 1 {
		t.Errorf("tail: tokens %v targets %v weights %v", tail.Tokens, tail.Targets, tail.Weights)
	}
	head := next(t, sampler(t, ds.Train, func(o *Options) { o.Truncate = TruncateHead }), 1, 10)
	if head.Tokens[0] != 0 || head.Targets[9] != 10 || head.Weights[0] != 1 {
		t.Errorf("head: tokens %v targets %v weights %v", head.Tokens, head.Targets, head.Weights)
	}
}

func TestMinTokens(t *testing.T) {
	dir := t.TempDir()
	writeSplit(t, filepath.Join(dir, "train"), [][]uint32{{1}, {1, 2, 3}, {1, 2}, {1, 2, 3, 4}}, nil)
	ds := open(t, dir)
	s := sampler(t, ds.Train, func(o *Options) { o.MinTokens = 3; o.Shuffle = false })
	if s.NumEpisodes() != 2 {
		t.Fatalf("%d episodes of >= 3 tokens", s.NumEpisodes())
	}
	if b := next(t, s, 2, 4); !slices.Equal(b.Episodes, []int{1, 3}) {
		t.Errorf("episodes %v", b.Episodes)
	}
	if _, err := ds.Train.NewSampler(Options{MinTokens: 10}); err == nil {
		t.Error("sampler over no eligible episode")
	}
}

// ShardWriter output: packed episodes with weights and segments come back
// aligned, mask_weighted.bin wins over mask.bin, and several shards go to
// shard_NNNNN directories.
func TestWriterAndPackedBatches(t *testing.T) {
	dir := t.TempDir()
	w, err := NewShardWriter(filepath.Join(dir, "train"), 10, true)
	if err != nil {
		t.Fatal(err)
	}
	// Two packs of 8: segments 1,1,1,2,2,2,0,0 and 1,1,1,1,1,1,1,1.
	toks := [][]uint32{{10, 11, 12, 20, 21, 22, 50275, 50275}, {30, 31, 32, 33, 34, 35, 36, 37}}
	ws := [][]float32{{0, 1, 2, 0, 1.5, 2, 0, 0}, {0, 0, 1, 1, 1, 1, 1, 2}}
	segs := [][]uint8{{1, 1, 1, 2, 2, 2, 0, 0}, {1, 1, 1, 1, 1, 1, 1, 1}}
	for i := range toks {
		if err := w.Add(toks[i], ws[i], segs[i]); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := w.Close(); err != nil || n != 2 {
		t.Fatalf("Close: %d shards, %v", n, err)
	}
	for _, d := range []string{"shard_00000", "shard_00001"} {
		for _, f := range []string{TokensFile, MaskFile, WeightsFile, SegmentsFile, IndexFile} {
			if _, err := os.Stat(filepath.Join(dir, "train", d, f)); err != nil {
				t.Errorf("missing %s/%s", d, f)
			}
		}
	}
	mask, _ := os.ReadFile(filepath.Join(dir, "train", "shard_00000", MaskFile))
	if !slices.Equal(mask, []byte{0, 1, 1, 0, 1, 1, 0, 0}) {
		t.Errorf("mask.bin %v", mask)
	}
	ds := open(t, dir)
	if !ds.Train.HasWeights() || !ds.Train.HasSegments() || ds.Train.NumEpisodes() != 2 {
		t.Fatal("packed split not recognised")
	}
	b := next(t, sampler(t, ds.Train, func(o *Options) { o.Shuffle = false }), 2, 8)
	if !slices.Equal(b.Tokens[:8], []int32{10, 11, 12, 20, 21, 22, 50275, 50275}) ||
		!slices.Equal(b.Targets[:8], []int32{11, 12, 20, 21, 22, 50275, 50275, 50275}) {
		t.Errorf("row 0 tokens %v targets %v", b.Tokens[:8], b.Targets[:8])
	}
	if !slices.Equal(b.Weights[:8], []float32{1, 2, 0, 1.5, 2, 0, 0, 0}) {
		t.Errorf("row 0 weights %v (want mask_weighted of the targets)", b.Weights[:8])
	}
	if !slices.Equal(b.Segments[:8], []int32{1, 1, 1, 2, 2, 2, 0, 0}) || !slices.Equal(b.Segments[8:], []int32{1, 1, 1, 1, 1, 1, 1, 1}) {
		t.Errorf("segments %v", b.Segments)
	}
	if rep := ds.Train.Validate(ValidateOptions{}); rep.Counts["SEGMENT_ORDER"] != 0 || rep.Counts["PAD_MASKED"] != 0 {
		t.Errorf("validator: %+v", rep.Counts)
	}
}

// MyPT's multi-shard layout puts its first shard at the split root and the
// rest in shard_00001...; the reader keeps all of them, root first.
func TestReadMyPTMultiShardLayout(t *testing.T) {
	dir := t.TempDir()
	writeSplit(t, filepath.Join(dir, "train"), [][]uint32{{1, 1}, {2, 2}}, nil)
	writeSplit(t, filepath.Join(dir, "train", "shard_00001"), [][]uint32{{3, 3}}, nil)
	writeSplit(t, filepath.Join(dir, "train", "shard_00002"), [][]uint32{{4, 4}}, nil)
	ds := open(t, dir)
	if ds.Train.NumEpisodes() != 4 || len(ds.Train.Shards) != 3 {
		t.Fatalf("%d episodes in %d shards", ds.Train.NumEpisodes(), len(ds.Train.Shards))
	}
	for i := range 4 {
		if ep := ds.Train.Episode(i); ep.Tokens[0] != uint32(i+1) {
			t.Errorf("episode %d starts with %d", i, ep.Tokens[0])
		}
	}
	if ds.Val.NumEpisodes() != 0 || !ds.Val.Empty() {
		t.Error("missing val split not empty")
	}
	if _, err := ds.Val.NewSampler(DefaultOptions()); err == nil {
		t.Error("sampler over an empty split")
	}
}

func TestCorruptFilesNamed(t *testing.T) {
	dir := t.TempDir()
	split := filepath.Join(dir, "train")
	writeSplit(t, split, [][]uint32{{1, 2, 3}}, [][]uint8{{0, 1, 1}})
	os.WriteFile(filepath.Join(split, MaskFile), []byte{0, 1}, 0o644)
	if _, err := Open(dir); err == nil || !strings.Contains(err.Error(), MaskFile) {
		t.Errorf("short mask: %v", err)
	}
	os.Remove(filepath.Join(split, MaskFile))
	writeSplit(t, split, [][]uint32{{1, 2, 3}}, nil)
	idx := binary.LittleEndian.AppendUint64(nil, 2)
	idx = binary.LittleEndian.AppendUint64(idx, 5)
	os.WriteFile(filepath.Join(split, IndexFile), idx, 0o644)
	if _, err := Open(dir); err == nil || !strings.Contains(err.Error(), IndexFile) {
		t.Errorf("index past the end: %v", err)
	}
	os.WriteFile(filepath.Join(split, TokensFile), []byte{1, 2, 3}, 0o644)
	if _, err := Open(dir); err == nil || !strings.Contains(err.Error(), TokensFile) {
		t.Errorf("odd-sized tokens: %v", err)
	}
}

func TestValidateMyPTRules(t *testing.T) {
	dir := t.TempDir()
	A, C, E := tokenizer.AssistantOpen, tokenizer.AssistantClose, tokenizer.EOT
	U := tokenizer.UserOpen
	eps := [][]uint32{
		{U, 5, A, 7, 8, C, E}, // good
		{U, 5, A, 7, 8, C, E}, // open masked
		{U, 5, A, 7, 8, C, E}, // close and eot unmasked
		{U, 5, A, 7, 8, C, E}, // mask before assistant
		{U, 5, E},             // no assistant: warning only
	}
	masks := [][]uint8{
		{0, 0, 0, 1, 1, 1, 1},
		{0, 0, 1, 1, 1, 1, 1},
		{0, 0, 0, 1, 1, 0, 0},
		{0, 1, 0, 1, 1, 1, 1},
		{0, 0, 1},
	}
	writeSplit(t, filepath.Join(dir, "train"), eps, masks)
	rep := open(t, dir).Train.Validate(ValidateOptions{})
	if rep.Valid != 2 || rep.Invalid != 3 || rep.OK() {
		t.Errorf("valid %d invalid %d", rep.Valid, rep.Invalid)
	}
	for kind, n := range map[string]int{
		"ASSISTANT_OPEN_MASKED": 1, "ASSISTANT_OPEN_IS_FIRST_MASKED": 1, "EARLY_MASK": 2,
		"ASSISTANT_CLOSE_NOT_MASKED": 1, "EOT_NOT_MASKED": 1, "MASK_BEFORE_ASSISTANT": 1, "NO_SUPERVISED_TOKENS": 1,
	} {
		if rep.Counts[kind] != n {
			t.Errorf("%s: %d, want %d (all: %v)", kind, rep.Counts[kind], n, rep.Counts)
		}
	}
}

func TestStreamDataset(t *testing.T) {
	dir := t.TempDir()
	var tok []byte
	for i := range 100 {
		tok = binary.LittleEndian.AppendUint32(tok, uint32(i))
	}
	os.MkdirAll(filepath.Join(dir, "train"), 0o755)
	os.WriteFile(filepath.Join(dir, "train", TokensFile), tok, 0o644)
	ds := open(t, dir)
	if ds.Kind != KindStream || IsEpisodeIndexed(dir) {
		t.Fatalf("kind %s", ds.Kind)
	}
	if _, err := ds.Train.NewSampler(DefaultOptions()); err == nil {
		t.Error("epoch mode accepted on a token stream")
	}
	s := sampler(t, ds.Train, func(o *Options) { o.Mode = ModeRandom })
	b := next(t, s, 4, 10)
	// numpy: RandomState(1337).randint(0, 90, size=4)
	for r, start := range b.Episodes {
		if start < 0 || start >= 90 || b.Tokens[r*10] != int32(start) || b.Targets[r*10+9] != int32(start+10) {
			t.Errorf("row %d: start %d tokens %v", r, start, b.Tokens[r*10:r*10+10])
		}
	}
	seq := sampler(t, ds.Train, func(o *Options) { o.Mode = ModeSequential })
	if b := next(t, seq, 2, 10); b.Tokens[0] != 0 || b.Tokens[10] != 10 {
		t.Errorf("sequential windows start at %d, %d", b.Tokens[0], b.Tokens[10])
	}
}

func TestStats(t *testing.T) {
	ds := open(t, myptFixture(t, 10, 20))
	st := ds.Train.Stats()
	if st.Episodes != 10 || st.Tokens != 200 || st.Masked != 100 || st.MaskRatio != 0.5 || st.MinLen != 20 || st.MaxLen != 20 {
		t.Errorf("stats %+v", st)
	}
	if len(st.Histogram) != 1 || st.Histogram[0] != (Bucket{16, 31, 10}) {
		t.Errorf("histogram %+v", st.Histogram)
	}
}

func TestRenderEpisode(t *testing.T) {
	tok, err := tokenizer.NewGPT2(tokenizer.DefaultVocabSize)
	if err != nil {
		t.Fatal(err)
	}
	ids, _ := tok.Encode("<myPT_user>Hi</myPT_user><myPT_assistant>Grüße 😀</myPT_assistant><myPT_eot>")
	v := EpisodeView{Tokens: ids, Mask: make([]uint8, len(ids))}
	for j := 4; j < len(ids); j++ {
		v.Mask[j] = 1
	}
	var sb strings.Builder
	RenderEpisode(&sb, tok, v, ViewOptions{})
	want := "<myPT_user>Hi</myPT_user><myPT_assistant>⟦Grüße 😀</myPT_assistant><myPT_eot>⟧\n"
	if sb.String() != want {
		t.Errorf("rendered %q, want %q", sb.String(), want)
	}
	sb.Reset()
	RenderEpisode(&sb, tok, v, ViewOptions{Table: true})
	if lines := strings.Count(sb.String(), "\n"); lines != len(ids)+1 {
		t.Errorf("table has %d lines for %d tokens", lines, len(ids))
	}
}

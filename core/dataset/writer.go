package dataset

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
)

// ShardWriter streams episodes of one split into MyPT's episode-indexed
// files, starting a new shard when the next episode would push the current
// one past TokensPerShard tokens (MyPT's rule). A single shard is written at
// the split root; several go to shard_00000, shard_00001, ... — all of them,
// unlike MyPT, whose first shard lands at the root where its loader then
// ignores it. Files are byte-identical to MyPT's for the same episodes.
type ShardWriter struct {
	dir            string
	tokensPerShard int
	weighted       bool

	cur       *shardFiles
	shards    int // shards started so far
	tokens    int64
	episodes  int64
	segmented bool // some episode came with segment ids
}

type shardFiles struct {
	dir                         string
	files                       []*os.File
	tokens, mask, weights, segs *bufio.Writer
	index                       []Episode
	n                           int
	buf                         []byte
}

// NewShardWriter writes split files under splitDir (created if needed).
// With weighted, mask_weighted.bin (float32 weights) is written next to
// mask.bin.
func NewShardWriter(splitDir string, tokensPerShard int, weighted bool) (*ShardWriter, error) {
	if tokensPerShard <= 0 {
		return nil, fmt.Errorf("tokens per shard must be positive, got %d", tokensPerShard)
	}
	if err := os.MkdirAll(splitDir, 0o755); err != nil {
		return nil, fmt.Errorf("create split dir: %w", err)
	}
	return &ShardWriter{dir: splitDir, tokensPerShard: tokensPerShard, weighted: weighted}, nil
}

// Add appends one episode: its tokens, loss weights (mask.bin gets 1 where
// the weight is > 0) and, for packed sequences, segment ids. segs must be
// given for every episode of a split or for none.
func (w *ShardWriter) Add(tokens []uint32, weights []float32, segs []uint8) error {
	if len(weights) != len(tokens) || (segs != nil && len(segs) != len(tokens)) {
		return fmt.Errorf("episode %d: %d tokens, %d weights, %d segment ids", w.episodes, len(tokens), len(weights), len(segs))
	}
	if w.episodes > 0 && (segs != nil) != w.segmented {
		return fmt.Errorf("episode %d: segment ids given for some episodes of the split only", w.episodes)
	}
	w.segmented = segs != nil
	if w.cur != nil && w.cur.n > 0 && w.cur.n+len(tokens) > w.tokensPerShard {
		if err := w.closeShard(); err != nil {
			return err
		}
	}
	if w.cur == nil {
		if err := w.openShard(); err != nil {
			return err
		}
	}
	c := w.cur
	c.index = append(c.index, Episode{Start: uint64(c.n), Length: uint64(len(tokens))})
	c.n += len(tokens)
	w.tokens += int64(len(tokens))
	w.episodes++

	c.buf = c.buf[:0]
	for _, t := range tokens {
		c.buf = binary.LittleEndian.AppendUint32(c.buf, t)
	}
	if _, err := c.tokens.Write(c.buf); err != nil {
		return fmt.Errorf("write %s: %w", TokensFile, err)
	}
	c.buf = c.buf[:0]
	for _, x := range weights {
		var m byte
		if x > 0 {
			m = 1
		}
		c.buf = append(c.buf, m)
	}
	if _, err := c.mask.Write(c.buf); err != nil {
		return fmt.Errorf("write %s: %w", MaskFile, err)
	}
	if w.weighted {
		c.buf = c.buf[:0]
		for _, x := range weights {
			c.buf = binary.LittleEndian.AppendUint32(c.buf, math.Float32bits(x))
		}
		if _, err := c.weights.Write(c.buf); err != nil {
			return fmt.Errorf("write %s: %w", WeightsFile, err)
		}
	}
	if segs != nil {
		if c.segs == nil {
			f, err := os.Create(filepath.Join(c.dir, SegmentsFile))
			if err != nil {
				return err
			}
			c.files = append(c.files, f)
			c.segs = bufio.NewWriterSize(f, 1<<16)
		}
		if _, err := c.segs.Write(segs); err != nil {
			return fmt.Errorf("write %s: %w", SegmentsFile, err)
		}
	}
	return nil
}

func (w *ShardWriter) openShard() error {
	dir := filepath.Join(w.dir, fmt.Sprintf(ShardDirFormat, w.shards))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create shard dir: %w", err)
	}
	c := &shardFiles{dir: dir}
	open := func(name string) (*bufio.Writer, error) {
		f, err := os.Create(filepath.Join(dir, name))
		if err != nil {
			return nil, err
		}
		c.files = append(c.files, f)
		return bufio.NewWriterSize(f, 1<<18), nil
	}
	var err error
	if c.tokens, err = open(TokensFile); err != nil {
		return err
	}
	if c.mask, err = open(MaskFile); err != nil {
		return err
	}
	if w.weighted {
		if c.weights, err = open(WeightsFile); err != nil {
			return err
		}
	}
	w.cur = c
	w.shards++
	return nil
}

func (w *ShardWriter) closeShard() error {
	c := w.cur
	w.cur = nil
	var errs []error
	for _, bw := range []*bufio.Writer{c.tokens, c.mask, c.weights, c.segs} {
		if bw != nil {
			errs = append(errs, bw.Flush())
		}
	}
	for _, f := range c.files {
		errs = append(errs, f.Close())
	}
	idx := make([]byte, 0, 16*len(c.index))
	for _, e := range c.index {
		idx = binary.LittleEndian.AppendUint64(idx, e.Start)
		idx = binary.LittleEndian.AppendUint64(idx, e.Length)
	}
	errs = append(errs, os.WriteFile(filepath.Join(c.dir, IndexFile), idx, 0o644))
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("write shard %s: %w", c.dir, err)
	}
	return nil
}

// Close finishes the last shard and returns the number of shards written.
// One shard is moved up to the split root; an empty split writes no files.
func (w *ShardWriter) Close() (shards int, err error) {
	if w.cur != nil {
		if err := w.closeShard(); err != nil {
			return 0, err
		}
	}
	if w.shards == 1 {
		only := filepath.Join(w.dir, fmt.Sprintf(ShardDirFormat, 0))
		entries, err := os.ReadDir(only)
		if err != nil {
			return 0, err
		}
		for _, e := range entries {
			if err := os.Rename(filepath.Join(only, e.Name()), filepath.Join(w.dir, e.Name())); err != nil {
				return 0, fmt.Errorf("move single shard to split root: %w", err)
			}
		}
		if err := os.Remove(only); err != nil {
			return 0, err
		}
	}
	return w.shards, nil
}

// Tokens counts the tokens added so far.
func (w *ShardWriter) Tokens() int64 { return w.tokens }

// Episodes counts the episodes added so far.
func (w *ShardWriter) Episodes() int64 { return w.episodes }

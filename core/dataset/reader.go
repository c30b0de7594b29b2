package dataset

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/edsrzf/mmap-go"

	"github.com/mypt/mypt/core/tokenizer"
)

// Kind tells the two dataset layouts apart.
type Kind string

const (
	// KindEpisodes is MyPT's episode-indexed layout (episodes.idx present).
	KindEpisodes Kind = "episodes"
	// KindStream is a plain token stream: tokens.bin only, sampled in
	// random windows (pre-training style corpora).
	KindStream Kind = "stream"
)

// Dataset is an opened dataset directory with its train and val splits.
// Token data is memory-mapped read-only; Close releases it.
type Dataset struct {
	Dir      string
	Kind     Kind
	Train    *Split
	Val      *Split
	Metadata map[string]any // dataset_metadata.json, nil when absent

	maps []mmap.MMap
}

// Split is one split (train or val): its shards in order and the global
// episode list, which concatenates the shards' episodes.
type Split struct {
	Name   string
	Shards []*Shard

	refs   []episodeRef
	tokens int64
}

// Shard is one directory of aligned arrays. Mask, Weights, Segments and
// Episodes are nil when their file is absent.
type Shard struct {
	Dir      string
	Tokens   []uint32
	Mask     []uint8
	Weights  []float32
	Segments []uint8
	Episodes []Episode
}

type episodeRef struct {
	shard int32
	index int32
}

// Open opens a dataset directory written by MyPT's prepare_chat_sft.py or by
// mypt prepare. In each split, a shard directory (shard_NNNNN) is read in
// name order; data at the split root is read first. That root is MyPT's
// first shard in a multi-shard dataset, which MyPT's own loader ignores.
func Open(dir string) (*Dataset, error) {
	ds := &Dataset{Dir: dir}
	if err := ds.open(); err != nil {
		ds.Close()
		return nil, err
	}
	return ds, nil
}

func (ds *Dataset) open() error {
	dir := ds.Dir
	var err error
	if st, err := os.Stat(dir); err != nil {
		return fmt.Errorf("open dataset: %w", err)
	} else if !st.IsDir() {
		return fmt.Errorf("open dataset: %s is not a directory", dir)
	}
	if ds.Train, err = ds.openSplit("train"); err != nil {
		return err
	}
	if ds.Val, err = ds.openSplit("val"); err != nil {
		return err
	}
	if len(ds.Train.Shards) == 0 && len(ds.Val.Shards) == 0 {
		return fmt.Errorf("open dataset %s: no train/ or val/ data (%s)", dir, TokensFile)
	}
	kinds := map[Kind]bool{}
	for _, sp := range []*Split{ds.Train, ds.Val} {
		for _, sh := range sp.Shards {
			if sh.Episodes != nil {
				kinds[KindEpisodes] = true
			} else {
				kinds[KindStream] = true
			}
		}
	}
	if len(kinds) > 1 {
		return fmt.Errorf("open dataset %s: some shards have %s and some do not", dir, IndexFile)
	}
	for k := range kinds {
		ds.Kind = k
	}
	if b, err := os.ReadFile(filepath.Join(dir, MetadataFile)); err == nil {
		if err := json.Unmarshal(b, &ds.Metadata); err != nil {
			return fmt.Errorf("open dataset: %s: %w", MetadataFile, err)
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("open dataset: %w", err)
	}
	return nil
}

// IsEpisodeIndexed reports whether dir looks like an episode-indexed dataset
// (MyPT's is_episode_indexed_dataset, plus shards next to a split root).
func IsEpisodeIndexed(dir string) bool {
	for _, split := range []string{"train", "val"} {
		sd := filepath.Join(dir, split)
		if fileExists(filepath.Join(sd, IndexFile)) {
			return true
		}
		if shards, _ := shardDirs(sd); len(shards) > 0 && fileExists(filepath.Join(shards[0], IndexFile)) {
			return true
		}
	}
	return false
}

// Close unmaps the dataset's files. Slices obtained from it must not be
// used afterwards.
func (ds *Dataset) Close() error {
	var errs []error
	for _, m := range ds.maps {
		errs = append(errs, m.Unmap())
	}
	ds.maps = nil
	return errors.Join(errs...)
}

// Tokenizer loads the dataset's tokenizer_state.json.
func (ds *Dataset) Tokenizer() (*tokenizer.Tokenizer, error) {
	return tokenizer.Load(filepath.Join(ds.Dir, TokenizerFile), tokenizer.DefaultVocabSize)
}

func (ds *Dataset) openSplit(name string) (*Split, error) {
	sp := &Split{Name: name}
	splitDir := filepath.Join(ds.Dir, name)
	if _, err := os.Stat(splitDir); errors.Is(err, fs.ErrNotExist) {
		return sp, nil
	}
	dirs, err := shardDirs(splitDir)
	if err != nil {
		return nil, fmt.Errorf("open dataset: %w", err)
	}
	if fileExists(filepath.Join(splitDir, TokensFile)) {
		dirs = append([]string{splitDir}, dirs...)
	}
	for _, d := range dirs {
		sh, err := ds.openShard(d)
		if err != nil {
			return nil, err
		}
		if sh == nil {
			continue
		}
		si := int32(len(sp.Shards))
		sp.Shards = append(sp.Shards, sh)
		sp.tokens += int64(len(sh.Tokens))
		for i := range sh.Episodes {
			sp.refs = append(sp.refs, episodeRef{si, int32(i)})
		}
	}
	return sp, nil
}

// shardDirs lists dir's shard_* subdirectories in name order.
func shardDirs(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
		return nil, err
	}
	var out []string
	for _, e := range entries {
		if e.IsDir() && strings.HasPrefix(e.Name(), "shard_") {
			out = append(out, filepath.Join(dir, e.Name()))
		}
	}
	slices.Sort(out)
	return out, nil
}

// openShard maps one shard and checks that its arrays agree in length and
// that every episode lies inside the tokens. A directory without tokens.bin
// is skipped (nil, nil), as MyPT does.
func (ds *Dataset) openShard(dir string) (*Shard, error) {
	tokPath := filepath.Join(dir, TokensFile)
	if !fileExists(tokPath) {
		return nil, nil
	}
	sh := &Shard{Dir: dir}
	raw, err := ds.mapFile(tokPath, 4)
	if err != nil {
		return nil, err
	}
	sh.Tokens = asUint32(raw)
	n := len(sh.Tokens)

	if p := filepath.Join(dir, MaskFile); fileExists(p) {
		if sh.Mask, err = ds.mapFile(p, 1); err != nil {
			return nil, err
		}
		if sh.Mask == nil {
			sh.Mask = []uint8{}
		}
		if len(sh.Mask) != n {
			return nil, fmt.Errorf("%s: %d mask values for %d tokens", p, len(sh.Mask), n)
		}
	}
	if p := filepath.Join(dir, WeightsFile); fileExists(p) {
		b, err := ds.mapFile(p, 4)
		if err != nil {
			return nil, err
		}
		if sh.Weights = asFloat32(b); sh.Weights == nil {
			sh.Weights = []float32{}
		}
		if len(sh.Weights) != n {
			return nil, fmt.Errorf("%s: %d weights for %d tokens", p, len(sh.Weights), n)
		}
	}
	if p := filepath.Join(dir, SegmentsFile); fileExists(p) {
		if sh.Segments, err = ds.mapFile(p, 1); err != nil {
			return nil, err
		}
		if sh.Segments == nil {
			sh.Segments = []uint8{}
		}
		if len(sh.Segments) != n {
			return nil, fmt.Errorf("%s: %d segment ids for %d tokens", p, len(sh.Segments), n)
		}
	}
	if p := filepath.Join(dir, IndexFile); fileExists(p) {
		b, err := ds.mapFile(p, 16)
		if err != nil {
			return nil, err
		}
		if sh.Episodes = asEpisodes(b); sh.Episodes == nil {
			sh.Episodes = []Episode{}
		}
		for i, e := range sh.Episodes {
			if e.Start > uint64(n) || e.Length > uint64(n)-e.Start {
				return nil, fmt.Errorf("%s: episode %d (start %d, length %d) runs past the %d tokens of %s",
					p, i, e.Start, e.Length, n, TokensFile)
			}
		}
	}
	return sh, nil
}

// mapFile maps path read-only after checking its size is a multiple of
// elem bytes. An empty file maps to nil.
func (ds *Dataset) mapFile(path string, elem int) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open dataset: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("open dataset: %w", err)
	}
	if st.Size()%int64(elem) != 0 {
		return nil, fmt.Errorf("%s: size %d is not a multiple of %d bytes", path, st.Size(), elem)
	}
	if st.Size() == 0 {
		return nil, nil
	}
	m, err := mmap.Map(f, mmap.RDONLY, 0)
	if err != nil {
		return nil, fmt.Errorf("map %s: %w", path, err)
	}
	ds.maps = append(ds.maps, m)
	return m, nil
}

func fileExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir()
}

// NumEpisodes is the number of episodes (packed sequences count as one).
func (sp *Split) NumEpisodes() int { return len(sp.refs) }

// NumTokens is the number of tokens over all shards.
func (sp *Split) NumTokens() int64 { return sp.tokens }

// Empty reports whether the split holds no tokens.
func (sp *Split) Empty() bool { return sp.tokens == 0 }

// HasMask reports whether every shard carries a loss mask (mask.bin or
// mask_weighted.bin).
func (sp *Split) HasMask() bool {
	for _, sh := range sp.Shards {
		if sh.Mask == nil && sh.Weights == nil {
			return false
		}
	}
	return len(sp.Shards) > 0
}

// HasWeights reports whether every shard carries mask_weighted.bin.
func (sp *Split) HasWeights() bool {
	for _, sh := range sp.Shards {
		if sh.Weights == nil {
			return false
		}
	}
	return len(sp.Shards) > 0
}

// HasSegments reports whether the split is packed (segment_ids.bin present).
func (sp *Split) HasSegments() bool {
	for _, sh := range sp.Shards {
		if sh.Segments != nil {
			return true
		}
	}
	return false
}

// EpisodeView is one episode's aligned arrays (sub-slices of the mapping).
type EpisodeView struct {
	Tokens   []uint32
	Mask     []uint8   // nil without mask.bin
	Weights  []float32 // nil without mask_weighted.bin
	Segments []uint8   // nil unless packed
}

// Episode returns episode i of the split's global episode list.
func (sp *Split) Episode(i int) EpisodeView {
	r := sp.refs[i]
	sh := sp.Shards[r.shard]
	e := sh.Episodes[r.index]
	lo, hi := e.Start, e.Start+e.Length
	v := EpisodeView{Tokens: sh.Tokens[lo:hi]}
	if sh.Mask != nil {
		v.Mask = sh.Mask[lo:hi]
	}
	if sh.Weights != nil {
		v.Weights = sh.Weights[lo:hi]
	}
	if sh.Segments != nil {
		v.Segments = sh.Segments[lo:hi]
	}
	return v
}

// Weight is the loss weight of token j: mask_weighted.bin when present
// (MyPT prefers it), else mask.bin as 0/1, else 1.
func (v EpisodeView) Weight(j int) float32 {
	switch {
	case v.Weights != nil:
		return v.Weights[j]
	case v.Mask != nil:
		return float32(v.Mask[j])
	default:
		return 1
	}
}

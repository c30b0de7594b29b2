package dataset

import (
	"fmt"
	"log/slog"
	"slices"

	"github.com/mypt/mypt/core/mtrand"
	"github.com/mypt/mypt/core/tokenizer"
)

// Mode is how a sampler picks episodes.
type Mode string

const (
	// ModeEpoch walks a permutation of the episodes; the order of epoch e is
	// numpy RandomState(seed+e).permutation(n) (arange(n) without shuffle).
	// A batch that reaches the end of an epoch continues into the next one,
	// as MyPT's loader does.
	ModeEpoch Mode = "epoch"
	// ModeRandom draws each batch with replacement:
	// RandomState(seed).randint(0, n, size=batch) from one generator.
	// For token streams it draws window starts in [0, tokens-block).
	ModeRandom Mode = "random"
	// ModeSequential walks episodes (or, for a token stream, consecutive
	// windows) in order and wraps around; a fresh sampler in this mode gives
	// the same batches every time, which is what evaluation wants.
	ModeSequential Mode = "sequential"
)

// Truncation says which part of an episode longer than block_size+1 tokens
// is kept.
type Truncation string

const (
	// TruncateTail keeps the last block_size+1 tokens (MyPT's loader).
	TruncateTail Truncation = "tail"
	// TruncateHead keeps the first block_size+1 tokens.
	TruncateHead Truncation = "head"
)

// Options configure a Sampler. DefaultOptions gives MyPT's defaults.
type Options struct {
	Mode    Mode
	Shuffle bool  // epoch mode: permute each epoch (MyPT epoch_shuffle)
	Seed    int64 // MyPT epoch_seed; numpy seeds must stay within [0, 2^32)
	// MinTokens skips episodes shorter than this (MyPT episode_min_tokens).
	MinTokens int
	// UseLossMask makes Batch.Weights the dataset's loss mask; without it
	// every weight is 1 (a plain mean over all positions, pads included).
	UseLossMask bool
	// PadID fills episodes shorter than block_size+1; nil means the
	// tokenizer's pad (<myPT_eot> = 50275 for gpt2).
	PadID    *uint32
	Truncate Truncation
}

// DefaultOptions are MyPT's loader defaults (GPTConfig): epoch mode,
// shuffled, epoch_seed 1337, episode_min_tokens 2, tail truncation, loss
// mask on (MyPT's default is off, but every SFT config turns it on).
func DefaultOptions() Options {
	return Options{Mode: ModeEpoch, Shuffle: true, Seed: 1337, MinTokens: 2, UseLossMask: true, Truncate: TruncateTail}
}

// Batch is one batch, B rows of T positions, row-major.
type Batch struct {
	B, T     int
	Tokens   []int32   // inputs x
	Targets  []int32   // next tokens y
	Weights  []float32 // loss weight of each target (mask of y); all 1 without loss masking
	Segments []int32   // segment id of each input token for packed data (0 = pad); nil otherwise
	// Episodes[r] is the split-wide episode index (or, for token streams,
	// the window start) row r came from.
	Episodes []int
}

// Position is a sampler's place in its stream, small and JSON-able:
// restoring it with SetPosition continues with exactly the batches that
// would have followed.
type Position struct {
	Mode  Mode   `json:"mode"`
	Seed  int64  `json:"seed"`
	Count int    `json:"count"` // episodes (or stream windows) the sampler chooses from
	Epoch int    `json:"epoch"` // epoch and sequential modes
	Pos   int    `json:"pos"`   // next index within the epoch order
	Drawn uint64 `json:"drawn"` // random mode: 32-bit words drawn from the generator
}

// Sampler produces batches from one split. It is not safe for concurrent use.
type Sampler struct {
	split *Split
	opt   Options
	pad   uint32

	ids    []int // episode indices with length >= MinTokens (episode mode)
	stream []uint32

	order []int // epoch mode: order of the current epoch
	epoch int
	pos   int
	rng   *mtrand.RandomState // random mode
}

// NewSampler returns a sampler over the split. It fails on an empty split,
// on a split with no episode of at least MinTokens tokens, and on a seed
// numpy would reject.
func (sp *Split) NewSampler(opt Options) (*Sampler, error) {
	if opt.Mode == "" {
		opt.Mode = ModeEpoch
	}
	if opt.Truncate == "" {
		opt.Truncate = TruncateTail
	}
	s := &Sampler{split: sp, opt: opt}
	switch opt.Mode {
	case ModeEpoch, ModeRandom, ModeSequential:
	default:
		return nil, fmt.Errorf("sampler: unknown mode %q (want epoch, random or sequential)", opt.Mode)
	}
	switch opt.Truncate {
	case TruncateTail, TruncateHead:
	default:
		return nil, fmt.Errorf("sampler: unknown truncation %q (want tail or head)", opt.Truncate)
	}
	if _, err := mtrand.SeedFromInt(opt.Seed); err != nil {
		return nil, fmt.Errorf("sampler: epoch_seed: %w", err)
	}
	if sp.Empty() {
		return nil, fmt.Errorf("sampler: split %s has no data", sp.Name)
	}
	if opt.PadID != nil {
		s.pad = *opt.PadID
	} else {
		s.pad = tokenizer.EOT
	}
	if opt.UseLossMask && !sp.HasMask() {
		slog.Warn("dataset split has no loss mask in some shard; training on all tokens", "split", sp.Name)
		s.opt.UseLossMask = false
	}

	if len(sp.refs) == 0 { // token stream
		if opt.Mode == ModeEpoch {
			return nil, fmt.Errorf("sampler: split %s is a token stream; use mode random (or sequential)", sp.Name)
		}
		for _, sh := range sp.Shards {
			s.stream = append(s.stream, sh.Tokens...)
		}
		if opt.Mode == ModeRandom {
			s.rng = mtrand.NewRandomState(uint32(opt.Seed))
		}
		return s, nil
	}

	for i := range sp.refs {
		r := sp.refs[i]
		if sp.Shards[r.shard].Episodes[r.index].Length >= uint64(max(opt.MinTokens, 0)) {
			s.ids = append(s.ids, i)
		}
	}
	if len(s.ids) == 0 {
		return nil, fmt.Errorf("sampler: split %s has no episode of at least %d tokens", sp.Name, opt.MinTokens)
	}
	if skipped := len(sp.refs) - len(s.ids); skipped > 0 {
		slog.Info("skipping short episodes", "split", sp.Name, "skipped", skipped, "min_tokens", opt.MinTokens)
	}
	switch opt.Mode {
	case ModeEpoch:
		if err := s.startEpoch(0); err != nil {
			return nil, err
		}
	case ModeRandom:
		s.rng = mtrand.NewRandomState(uint32(opt.Seed))
	}
	return s, nil
}

// NumEpisodes is the number of episodes the sampler chooses from (after
// MinTokens), 0 for a token stream.
func (s *Sampler) NumEpisodes() int { return len(s.ids) }

// Epoch returns the current epoch and position within it (epoch and
// sequential modes).
func (s *Sampler) Epoch() (epoch, pos int) { return s.epoch, s.pos }

func (s *Sampler) startEpoch(e int) error {
	s.epoch, s.pos = e, 0
	if s.opt.Mode != ModeEpoch {
		return nil
	}
	n := len(s.ids)
	if !s.opt.Shuffle {
		s.order = make([]int, n)
		for i := range s.order {
			s.order[i] = i
		}
		return nil
	}
	seed, err := mtrand.SeedFromInt(s.opt.Seed + int64(e))
	if err != nil {
		return fmt.Errorf("sampler: epoch %d: %w", e, err)
	}
	s.order = mtrand.NewRandomState(seed).Permutation(n)
	return nil
}

// Position returns the sampler's current position.
func (s *Sampler) Position() Position {
	p := Position{Mode: s.opt.Mode, Seed: s.opt.Seed, Count: s.count(), Epoch: s.epoch, Pos: s.pos}
	if s.rng != nil {
		p.Drawn = s.rng.Drawn()
	}
	return p
}

func (s *Sampler) count() int {
	if s.stream != nil {
		return len(s.stream)
	}
	return len(s.ids)
}

// SetPosition restores a position returned by Position of a sampler over
// the same data with the same options.
func (s *Sampler) SetPosition(p Position) error {
	if p.Mode != s.opt.Mode || p.Seed != s.opt.Seed || p.Count != s.count() {
		return fmt.Errorf("sampler: position is for mode %s seed %d over %d items, this sampler is mode %s seed %d over %d",
			p.Mode, p.Seed, p.Count, s.opt.Mode, s.opt.Seed, s.count())
	}
	switch s.opt.Mode {
	case ModeRandom:
		s.rng = mtrand.NewRandomState(uint32(s.opt.Seed))
		s.rng.Skip(p.Drawn)
	default:
		if p.Epoch < 0 || p.Pos < 0 || (s.stream == nil && p.Pos > len(s.ids)) {
			return fmt.Errorf("sampler: position epoch %d pos %d out of range", p.Epoch, p.Pos)
		}
		if err := s.startEpoch(p.Epoch); err != nil {
			return err
		}
		s.pos = p.Pos
	}
	return nil
}

// nextIndex returns the next episode (index into the split) in epoch or
// sequential order, rolling into the next epoch at the end.
func (s *Sampler) nextIndex() (int, error) {
	if s.pos >= len(s.ids) {
		if err := s.startEpoch(s.epoch + 1); err != nil {
			return 0, err
		}
	}
	i := s.pos
	if s.opt.Mode == ModeEpoch {
		i = s.order[s.pos]
	}
	s.pos++
	return s.ids[i], nil
}

// Next returns the next batch of batchSize rows of blockSize positions.
func (s *Sampler) Next(batchSize, blockSize int) (*Batch, error) {
	if batchSize <= 0 || blockSize <= 0 {
		return nil, fmt.Errorf("sampler: batch size %d and block size %d must be positive", batchSize, blockSize)
	}
	b := &Batch{
		B: batchSize, T: blockSize,
		Tokens:   make([]int32, batchSize*blockSize),
		Targets:  make([]int32, batchSize*blockSize),
		Weights:  make([]float32, batchSize*blockSize),
		Episodes: make([]int, batchSize),
	}
	if s.stream != nil {
		return b, s.fillStream(b)
	}
	if s.split.HasSegments() {
		b.Segments = make([]int32, batchSize*blockSize)
	}
	picks := make([]int, batchSize)
	switch s.opt.Mode {
	case ModeRandom:
		for r := range picks {
			picks[r] = s.ids[s.rng.Intn(len(s.ids))]
		}
	default:
		for r := range picks {
			var err error
			if picks[r], err = s.nextIndex(); err != nil {
				return nil, err
			}
		}
	}
	for r, ep := range picks {
		b.Episodes[r] = ep
		s.fillRow(b, r, s.split.Episode(ep))
	}
	return b, nil
}

// fillRow writes one episode into row r: L = T+1 tokens (the last L or the
// first L if longer, padded with the pad id if shorter), inputs L[:-1],
// targets L[1:], weights = mask of the targets (0 on padding), segment ids
// of the inputs (0 on padding).
func (s *Sampler) fillRow(b *Batch, r int, v EpisodeView) {
	T := b.T
	L := T + 1
	lo, n := 0, len(v.Tokens)
	if n > L {
		if s.opt.Truncate == TruncateTail {
			lo = n - L
		}
		n = L
	}
	tok := b.Tokens[r*T : (r+1)*T]
	tgt := b.Targets[r*T : (r+1)*T]
	w := b.Weights[r*T : (r+1)*T]
	at := func(j int) int32 { // token j of the L-window
		if j < n {
			return int32(v.Tokens[lo+j])
		}
		return int32(s.pad)
	}
	for j := range T {
		tok[j] = at(j)
		tgt[j] = at(j + 1)
		switch {
		case !s.opt.UseLossMask:
			w[j] = 1
		case j+1 < n:
			w[j] = v.Weight(lo + j + 1)
		default:
			w[j] = 0
		}
	}
	if b.Segments != nil {
		seg := b.Segments[r*T : (r+1)*T]
		for j := range T {
			if j < n && v.Segments != nil {
				seg[j] = int32(v.Segments[lo+j])
			} else {
				seg[j] = 0
			}
		}
	}
}

// fillStream fills a batch with windows of a token stream: x = data[i:i+T],
// y = data[i+1:i+T+1], where i is drawn uniformly from [0, len-T) in random
// mode (MyPT's GPTDataLoader) or advances by T in sequential mode.
func (s *Sampler) fillStream(b *Batch) error {
	T := b.T
	starts := len(s.stream) - T
	if starts <= 0 {
		return fmt.Errorf("sampler: split %s has %d tokens, too few for block size %d", s.split.Name, len(s.stream), T)
	}
	for r := range b.B {
		var i int
		if s.opt.Mode == ModeRandom {
			i = s.rng.Intn(starts)
		} else {
			if s.pos+T >= len(s.stream) {
				s.epoch, s.pos = s.epoch+1, 0
			}
			i = s.pos
			s.pos += T
		}
		b.Episodes[r] = i
		for j := range T {
			b.Tokens[r*T+j] = int32(s.stream[i+j])
			b.Targets[r*T+j] = int32(s.stream[i+j+1])
			b.Weights[r*T+j] = 1
		}
	}
	return nil
}

// Order returns the episode order of epoch e (indices into the sampler's
// episode list, i.e. after MinTokens), as numpy computes it.
func (s *Sampler) Order(e int) ([]int, error) {
	if s.opt.Mode != ModeEpoch {
		return nil, fmt.Errorf("sampler: Order needs epoch mode")
	}
	saved := slices.Clone(s.order)
	ep, pos := s.epoch, s.pos
	defer func() { s.order, s.epoch, s.pos = saved, ep, pos }()
	if err := s.startEpoch(e); err != nil {
		return nil, err
	}
	return slices.Clone(s.order), nil
}

// Package prepare turns gold conversation JSONL into an episode-indexed
// dataset, byte for byte as MyPT's scripts/sft/prepare_chat_sft.py does:
// the same serialization (no separators between tags, one <myPT_eot> per
// episode), tokenization, loss-mask rule, train/val split (numpy
// RandomState permutation), pack shuffle (Python random.shuffle) and greedy
// packing, and the same binary files. It differs from MyPT deliberately
// where MyPT is broken: a malformed row is an error naming file and line
// (or is skipped and counted with SkipInvalid) instead of a warning or a
// crash; a multi-shard split puts every shard in shard_NNNNN (MyPT's first
// shard lands at the split root, where its loader ignores it); the output
// directory appears atomically; episodes without supervised tokens are
// reported. The MyPT behaviours are stated in docs/MYPT.md §1-§9.
package prepare

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/mypt/mypt/core/dataset"
	"github.com/mypt/mypt/core/mtrand"
	"github.com/mypt/mypt/core/tokenizer"
)

// Options mirror prepare_chat_sft.py's flags. DefaultOptions has MyPT's
// defaults.
type Options struct {
	Input          string  // JSONL, one conversation per line
	Output         string  // dataset directory to create (replaced if it holds a dataset)
	Tokenization   string  // "gpt2"
	ValSplit       float64 // fraction of rows for val (ignored with ValFile or ValOnly)
	ValFile        string  // separate val JSONL
	ValOnly        bool    // every input row goes to val/
	TokensPerShard int
	VocabSize      int
	Seed           int64 // val split permutation and pack shuffle

	EnablePacking bool
	PackBlockSize int
	PackByField   string // dotted path, e.g. "_meta.operator"
	PackShuffle   bool

	NoSystemPrompt bool
	SystemPrompt   string // "" = DefaultSystemPrompt
	EnableRAGTags  bool
	WeightedMask   bool

	SchemaValidationMode string // "off", "warn" or "error"

	// SkipInvalid skips malformed rows (invalid JSON, wrong types) and counts
	// them instead of failing on the first.
	SkipInvalid bool
	// AllowOverlap turns the train/val payload and template overlap check of
	// ValFile mode from an error (MyPT) into a warning.
	AllowOverlap bool

	Workers int          // tokenization goroutines; 0 = GOMAXPROCS
	Log     *slog.Logger // nil = slog.Default()
}

// DefaultOptions returns MyPT's defaults.
func DefaultOptions() Options {
	return Options{
		Tokenization:         "gpt2",
		ValSplit:             0.1,
		TokensPerShard:       50_000_000,
		VocabSize:            tokenizer.DefaultVocabSize,
		Seed:                 42,
		PackBlockSize:        4096,
		PackShuffle:          true,
		SchemaValidationMode: "warn",
	}
}

// InvalidRow is a malformed input row.
type InvalidRow struct {
	File string
	Line int
	Err  error
}

func (r InvalidRow) Error() string { return fmt.Sprintf("%s:%d: %v", r.File, r.Line, r.Err) }

// Result summarizes a run.
type Result struct {
	Conversations, TrainConversations, ValConversations int
	TrainEpisodes, ValEpisodes                          int64
	TrainTokens, ValTokens                              int64
	TrainShards, ValShards                              int
	TrainMaskRatio, ValMaskRatio                        float64
	Skipped                                             []InvalidRow
	// Unsupervised lists episodes with no supervised token besides
	// <myPT_eot> (no assistant turn, or truncated away), as file:line.
	Unsupervised                               []string
	UnsupervisedCount                          int
	InputSchema                                *SchemaReport
	ValSchema                                  *SchemaReport
	Packing                                    bool
	OriginalTrainEpisodes, OriginalValEpisodes int
	TrainingEfficiencyGain                     float64
}

type preparer struct {
	opt Options
	log *slog.Logger
	tok *tokenizer.Tokenizer
	res *Result
}

// Run prepares the dataset. On error nothing is left at opt.Output (an
// existing dataset there is kept).
func Run(ctx context.Context, opt Options) (*Result, error) {
	if opt.Log == nil {
		opt.Log = slog.Default()
	}
	if opt.Workers <= 0 {
		opt.Workers = runtime.GOMAXPROCS(0)
	}
	if err := checkOptions(&opt); err != nil {
		return nil, err
	}
	if err := checkReplaceable(opt.Output); err != nil {
		return nil, err
	}
	tok, err := tokenizer.NewGPT2(opt.VocabSize)
	if err != nil {
		return nil, err
	}
	p := &preparer{opt: opt, log: opt.Log, tok: tok, res: &Result{Packing: opt.EnablePacking}}
	return p.res, p.run(ctx)
}

func checkOptions(o *Options) error {
	switch {
	case o.Input == "":
		return errors.New("prepare: --input is required")
	case o.Output == "":
		return errors.New("prepare: --output_dir is required")
	case o.Tokenization == "char":
		return errors.New("prepare: char tokenization has no special tokens, so no assistant span can be masked " +
			"(MyPT fails here too); use --tokenization gpt2, or prepare a plain-text token stream with --text")
	case o.Tokenization != "gpt2":
		return fmt.Errorf("prepare: unknown --tokenization %q (want gpt2)", o.Tokenization)
	case o.ValSplit < 0 || o.ValSplit > 1:
		return fmt.Errorf("prepare: --val_split %v must be between 0 and 1", o.ValSplit)
	case o.TokensPerShard <= 0:
		return fmt.Errorf("prepare: --tokens_per_shard %d must be positive", o.TokensPerShard)
	case o.EnablePacking && o.PackBlockSize <= 0:
		return fmt.Errorf("prepare: --pack_block_size %d must be positive", o.PackBlockSize)
	}
	switch o.SchemaValidationMode {
	case "", "warn":
		o.SchemaValidationMode = "warn"
	case "off", "error":
	default:
		return fmt.Errorf("prepare: --schema_validation_mode %q (want off, warn or error)", o.SchemaValidationMode)
	}
	if _, err := mtrand.SeedFromInt(o.Seed); err != nil {
		return fmt.Errorf("prepare: --seed: %w", err)
	}
	if o.ValOnly && o.ValFile != "" {
		o.ValFile = "" // MyPT: --val_only ignores --val_file
	}
	return nil
}

func (p *preparer) run(ctx context.Context) error {
	o := p.opt
	popt := parseOptions{packByField: o.PackByField, overlap: o.ValFile != ""}
	convs, err := p.readJSONL(ctx, o.Input, popt)
	if err != nil {
		return err
	}
	if len(convs) == 0 {
		return fmt.Errorf("prepare: no valid conversations found in %s", o.Input)
	}
	p.res.InputSchema = checkSchema(convs)
	var valConvs []*conversation
	if o.ValFile != "" {
		if valConvs, err = p.readJSONL(ctx, o.ValFile, popt); err != nil {
			return err
		}
		p.res.ValSchema = checkSchema(valConvs)
	}
	if err := p.schemaDecision(); err != nil {
		return err
	}

	var train, val []*conversation
	var payloadOverlap, templateOverlap int
	switch {
	case o.ValOnly:
		val = convs
	case o.ValFile != "":
		train, val = convs, valConvs
		var pEx, tEx []string
		payloadOverlap, templateOverlap, pEx, tEx = overlap(train, val)
		if payloadOverlap > 0 || templateOverlap > 0 {
			msg := fmt.Sprintf("train/val overlap: %d shared payloads (e.g. %q), %d shared user-message templates (e.g. %q)",
				payloadOverlap, pEx, templateOverlap, tEx)
			if !o.AllowOverlap {
				return fmt.Errorf("prepare: %s; MyPT refuses such a split (pass --allow_overlap to accept it)", msg)
			}
			p.log.Warn(msg)
		}
	default:
		seed, _ := mtrand.SeedFromInt(o.Seed)
		perm := mtrand.NewRandomState(seed).Permutation(len(convs))
		isVal := make([]bool, len(convs))
		for _, i := range perm[:int(float64(len(convs))*o.ValSplit)] {
			isVal[i] = true
		}
		for i, c := range convs {
			if isVal[i] {
				val = append(val, c)
			} else {
				train = append(train, c)
			}
		}
	}
	p.res.Conversations = len(train) + len(val)
	p.res.TrainConversations, p.res.ValConversations = len(train), len(val)
	p.log.Info("split", "train", len(train), "val", len(val))

	out, commit, cleanup, err := stageDir(o.Output)
	if err != nil {
		return err
	}
	defer cleanup()
	meta := &orderedMap{}
	if err := p.write(ctx, out, train, val, meta); err != nil {
		return err
	}
	if err := p.writeSidecars(out, meta, convs, valConvs, payloadOverlap, templateOverlap); err != nil {
		return err
	}
	if p.res.UnsupervisedCount > 0 {
		p.log.Warn("episodes with no supervised tokens besides <myPT_eot>",
			"count", p.res.UnsupervisedCount, "first", p.res.Unsupervised)
	}
	return commit()
}

func (p *preparer) schemaDecision() error {
	mode := p.opt.SchemaValidationMode
	if mode == "off" {
		return nil
	}
	invalid := p.res.InputSchema.Invalid
	if p.res.ValSchema != nil {
		invalid += p.res.ValSchema.Invalid
	}
	if invalid == 0 {
		return nil
	}
	top := p.res.InputSchema.TopIssues(8)
	if mode == "error" {
		return fmt.Errorf("prepare: schema validation found %d invalid conversations (%s); fix the data or use --schema_validation_mode warn/off",
			invalid, strings.Join(top, ", "))
	}
	p.log.Warn("schema validation found invalid conversations", "invalid", invalid, "top_issues", top)
	return nil
}

// readJSONL parses a JSONL file: one JSON object per line, blank lines
// skipped. Lines end at \n, \r\n or \r, as Python's text mode reads them.
func (p *preparer) readJSONL(ctx context.Context, path string, popt parseOptions) ([]*conversation, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("prepare: %w", err)
	}
	type row struct {
		line int
		text []byte
	}
	var rows []row
	lineNo := 0
	for len(data) > 0 {
		lineNo++
		i := bytes.IndexAny(data, "\r\n")
		var line []byte
		if i < 0 {
			line, data = data, nil
		} else {
			line = data[:i]
			if data[i] == '\r' && i+1 < len(data) && data[i+1] == '\n' {
				i++
			}
			data = data[i+1:]
		}
		line = bytes.TrimFunc(line, pyIsSpace)
		if len(line) > 0 {
			rows = append(rows, row{lineNo, line})
		}
	}
	convs := make([]*conversation, len(rows))
	errs := make([]error, len(rows))
	parallel(ctx, len(rows), p.opt.Workers, func(i int) {
		r := rows[i]
		if !utf8.Valid(r.text) {
			errs[i] = errors.New("not valid UTF-8")
			return
		}
		convs[i], errs[i] = parseConversation(r.text, r.line, popt)
	})
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	out := convs[:0]
	for i, c := range convs {
		if errs[i] == nil {
			out = append(out, c)
			continue
		}
		bad := InvalidRow{File: path, Line: rows[i].line, Err: errs[i]}
		if !p.opt.SkipInvalid {
			return nil, fmt.Errorf("prepare: %w (use --skip-invalid to skip malformed rows)", bad)
		}
		p.res.Skipped = append(p.res.Skipped, bad)
	}
	if n := len(rows) - len(out); n > 0 {
		p.log.Warn("skipped malformed rows", "file", path, "count", n, "first", p.res.Skipped[len(p.res.Skipped)-n].Error())
	}
	return out, nil
}

// parallel runs f(0..n-1) on up to workers goroutines.
func parallel(ctx context.Context, n, workers int, f func(i int)) {
	var wg sync.WaitGroup
	next := make(chan int, 64)
	for range min(workers, max(n, 1)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				f(i)
			}
		}()
	}
	for i := range n {
		if ctx.Err() != nil {
			break
		}
		next <- i
	}
	close(next)
	wg.Wait()
}

// tokenize serializes and encodes conversations in parallel, keeping order.
// replayAsText encodes _replay rows as their raw "text" with every token
// supervised, which MyPT does in the packing path only.
func (p *preparer) tokenize(ctx context.Context, convs []*conversation, weighted, replayAsText bool) ([]*episode, error) {
	eps := make([]*episode, len(convs))
	errs := make([]error, len(convs))
	var builders sync.Pool
	parallel(ctx, len(convs), p.opt.Workers, func(i int) {
		c := convs[i]
		e := &episode{packKey: c.packKey}
		var err error
		if replayAsText && c.replay {
			if e.tokens, err = p.tok.Encode(c.replayText); err == nil {
				e.weights = make([]float32, len(e.tokens))
				for j := range e.weights {
					e.weights[j] = 1
				}
			}
			e.packKey = "" // MyPT's replay metadata carries no category
		} else {
			sb, _ := builders.Get().(*strings.Builder)
			if sb == nil {
				sb = &strings.Builder{}
			}
			serialize(sb, c, p.opt)
			e.tokens, err = p.tok.Encode(sb.String())
			builders.Put(sb)
			e.weights = lossWeights(make([]float32, 0, len(e.tokens)), e.tokens, weighted)
		}
		if err != nil {
			errs[i] = fmt.Errorf("line %d: %w", c.line, err)
		}
		eps[i] = e
	})
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return eps, errors.Join(errs...)
}

// noteUnsupervised records episodes whose only supervised token is
// <myPT_eot> (or that have none).
func (p *preparer) noteUnsupervised(file string, c *conversation, e *episode) {
	for j, w := range e.weights {
		if w > 0 && e.tokens[j] != tokenizer.EOT {
			return
		}
	}
	p.res.UnsupervisedCount++
	if len(p.res.Unsupervised) < 10 {
		p.res.Unsupervised = append(p.res.Unsupervised, fmt.Sprintf("%s:%d", file, c.line))
	}
}

// write tokenizes and writes both splits into dir and fills the metadata's
// dataset part.
func (p *preparer) write(ctx context.Context, dir string, train, val []*conversation, meta *orderedMap) error {
	o := p.opt
	tw, err := dataset.NewShardWriter(filepath.Join(dir, "train"), o.TokensPerShard, o.WeightedMask)
	if err != nil {
		return err
	}
	vw, err := dataset.NewShardWriter(filepath.Join(dir, "val"), o.TokensPerShard, o.WeightedMask)
	if err != nil {
		return err
	}
	valFile := o.Input
	if o.ValFile != "" {
		valFile = o.ValFile
	}
	var trainMask, valMask float64
	var trainCount, valCount int64
	var trainStats, valStats packingStats

	if o.EnablePacking {
		trainEps, err := p.tokenize(ctx, train, o.WeightedMask, true)
		if err != nil {
			return err
		}
		valEps, err := p.tokenize(ctx, val, o.WeightedMask, true)
		if err != nil {
			return err
		}
		for i, e := range trainEps {
			p.noteUnsupervised(o.Input, train[i], e)
		}
		for i, e := range valEps {
			p.noteUnsupervised(valFile, val[i], e)
		}
		trainPacks := p.packSplit(trainEps, o.PackShuffle)
		valPacks := p.packSplit(valEps, false) // MyPT never shuffles val
		trainStats = computePackingStats(trainEps, trainPacks, o.PackBlockSize)
		valStats = computePackingStats(valEps, valPacks, o.PackBlockSize)
		for _, pk := range trainPacks {
			if err := tw.Add(pk.tokens, pk.weights, pk.segments); err != nil {
				return err
			}
			trainMask += sumWeights(pk.weights)
			trainCount += int64(len(pk.weights))
		}
		for _, pk := range valPacks {
			if err := vw.Add(pk.tokens, pk.weights, pk.segments); err != nil {
				return err
			}
			valMask += sumWeights(pk.weights)
			valCount += int64(len(pk.weights))
		}
		p.res.OriginalTrainEpisodes, p.res.OriginalValEpisodes = len(trainEps), len(valEps)
		p.res.TrainingEfficiencyGain = trainStats.trainingEfficiency
	} else {
		// MyPT's non-packing path never weights the mask: with
		// --weighted_mask, mask_weighted.bin holds plain 0/1 weights.
		stream := func(convs []*conversation, file string, w *dataset.ShardWriter, mask *float64, count *int64) error {
			const chunk = 4096
			for lo := 0; lo < len(convs); lo += chunk {
				part := convs[lo:min(lo+chunk, len(convs))]
				eps, err := p.tokenize(ctx, part, false, false)
				if err != nil {
					return err
				}
				for i, e := range eps {
					p.noteUnsupervised(file, part[i], e)
					if err := w.Add(e.tokens, e.weights, nil); err != nil {
						return err
					}
					*mask += sumWeights(e.weights)
					*count += int64(len(e.weights))
				}
			}
			return nil
		}
		if err := stream(train, o.Input, tw, &trainMask, &trainCount); err != nil {
			return err
		}
		if err := stream(val, valFile, vw, &valMask, &valCount); err != nil {
			return err
		}
	}
	if p.res.TrainShards, err = tw.Close(); err != nil {
		return err
	}
	if p.res.ValShards, err = vw.Close(); err != nil {
		return err
	}
	r := p.res
	r.TrainEpisodes, r.ValEpisodes = tw.Episodes(), vw.Episodes()
	r.TrainTokens, r.ValTokens = tw.Tokens(), vw.Tokens()
	if trainCount > 0 {
		r.TrainMaskRatio = trainMask / float64(trainCount)
	}
	if valCount > 0 {
		r.ValMaskRatio = valMask / float64(valCount)
	}
	p.fillMetadata(meta, trainMask, valMask, trainStats, valStats)
	return nil
}

// packSplit shuffles (train only) and packs a split, per group with
// PackByField: groups in order of first appearance, each shuffled with a
// generator freshly seeded with Seed, as MyPT does.
func (p *preparer) packSplit(eps []*episode, shuffle bool) []*pack {
	o := p.opt
	groups := [][]*episode{eps}
	if o.PackByField != "" {
		index := map[string]int{}
		groups = nil
		for _, e := range eps {
			key := e.packKey
			if key == "" {
				key = "_ungrouped"
			}
			g, ok := index[key]
			if !ok {
				g = len(groups)
				index[key] = g
				groups = append(groups, nil)
			}
			groups[g] = append(groups[g], e)
		}
	}
	var out []*pack
	for _, g := range groups {
		if shuffle {
			g = append([]*episode(nil), g...)
			mtrand.NewPyRandom(o.Seed).Shuffle(len(g), func(i, j int) { g[i], g[j] = g[j], g[i] })
		}
		out = append(out, greedyPack(g, o.PackBlockSize, tokenizer.EOT)...)
	}
	return out
}

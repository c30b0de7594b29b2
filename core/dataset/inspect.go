package dataset

import (
	"fmt"
	"io"
	"math/bits"
	"slices"
	"strings"

	"github.com/mypt/mypt/core/tokenizer"
)

// SplitStats summarizes a split for `mypt dataset inspect`.
type SplitStats struct {
	Split      string   `json:"split"`
	Shards     int      `json:"shards"`
	Episodes   int      `json:"episodes"` // packed sequences count once
	Tokens     int64    `json:"tokens"`
	Masked     int64    `json:"masked_tokens"` // weight > 0
	WeightSum  float64  `json:"weight_sum"`
	MaskRatio  float64  `json:"mask_ratio"` // WeightSum / Tokens, as MyPT's metadata computes it
	HasMask    bool     `json:"has_mask"`
	HasWeights bool     `json:"has_weights"`
	Packed     bool     `json:"packed"`
	Segments   int      `json:"segments,omitempty"`   // episodes inside packs
	PadTokens  int64    `json:"pad_tokens,omitempty"` // segment 0
	MinLen     int      `json:"min_len"`
	MaxLen     int      `json:"max_len"`
	MeanLen    float64  `json:"mean_len"`
	MedianLen  int      `json:"median_len"`
	Histogram  []Bucket `json:"length_histogram"`
}

// Bucket counts episodes with Lo <= length <= Hi.
type Bucket struct {
	Lo    int `json:"lo"`
	Hi    int `json:"hi"`
	Count int `json:"count"`
}

// Stats computes a split's counts, mask ratio and length histogram
// (power-of-two buckets; for packed data, of the packed episodes' segments).
func (sp *Split) Stats() SplitStats {
	st := SplitStats{Split: sp.Name, Shards: len(sp.Shards), Episodes: sp.NumEpisodes(), Tokens: sp.tokens,
		HasMask: sp.HasMask(), HasWeights: sp.HasWeights(), Packed: sp.HasSegments()}
	for _, sh := range sp.Shards {
		for j := range sh.Tokens {
			var w float64 = 1
			switch {
			case sh.Weights != nil:
				w = float64(sh.Weights[j])
			case sh.Mask != nil:
				w = float64(sh.Mask[j])
			}
			st.WeightSum += w
			if w > 0 {
				st.Masked++
			}
			if sh.Segments != nil && sh.Segments[j] == 0 {
				st.PadTokens++
			}
		}
	}
	if st.Tokens > 0 {
		st.MaskRatio = st.WeightSum / float64(st.Tokens)
	}
	var lens []int
	for i := range sp.NumEpisodes() {
		v := sp.Episode(i)
		if v.Segments == nil {
			lens = append(lens, len(v.Tokens))
			continue
		}
		start := 0
		for j := 1; j <= len(v.Segments); j++ {
			if j == len(v.Segments) || v.Segments[j] != v.Segments[j-1] {
				if v.Segments[j-1] != 0 {
					lens = append(lens, j-start)
				}
				start = j
			}
		}
	}
	if st.Packed {
		st.Segments = len(lens)
	}
	if len(lens) > 0 {
		slices.Sort(lens)
		st.MinLen, st.MaxLen, st.MedianLen = lens[0], lens[len(lens)-1], lens[len(lens)/2]
		total := 0
		for _, l := range lens {
			total += l
		}
		st.MeanLen = float64(total) / float64(len(lens))
		counts := map[int]int{}
		for _, l := range lens {
			counts[bits.Len(uint(l))]++
		}
		for b := bits.Len(uint(lens[0])); b <= bits.Len(uint(lens[len(lens)-1])); b++ {
			lo, hi := 0, 0
			if b > 0 {
				lo, hi = 1<<(b-1), 1<<b-1
			}
			st.Histogram = append(st.Histogram, Bucket{Lo: lo, Hi: hi, Count: counts[b]})
		}
	}
	return st
}

// WriteStats prints a SplitStats for people.
func WriteStats(w io.Writer, st SplitStats) {
	fmt.Fprintf(w, "[%s] %d shard(s), %d episodes, %d tokens\n", st.Split, st.Shards, st.Episodes, st.Tokens)
	if st.Tokens == 0 {
		return
	}
	switch {
	case st.HasWeights:
		fmt.Fprintf(w, "  loss weights: %d supervised tokens, weight sum %.1f, mask ratio %.4f (mask_weighted.bin)\n", st.Masked, st.WeightSum, st.MaskRatio)
	case st.HasMask:
		fmt.Fprintf(w, "  loss mask: %d supervised tokens, mask ratio %.4f\n", st.Masked, st.MaskRatio)
	default:
		fmt.Fprintln(w, "  no loss mask")
	}
	if st.Episodes == 0 {
		return // a token stream has no episodes
	}
	unit := "episode"
	if st.Packed {
		unit = "segment"
		fmt.Fprintf(w, "  packed: %d segments in %d sequences, %d pad tokens (%.1f%%)\n",
			st.Segments, st.Episodes, st.PadTokens, 100*float64(st.PadTokens)/float64(st.Tokens))
	}
	fmt.Fprintf(w, "  %s length: min %d, median %d, mean %.1f, max %d\n", unit, st.MinLen, st.MedianLen, st.MeanLen, st.MaxLen)
	peak := 0
	for _, b := range st.Histogram {
		peak = max(peak, b.Count)
	}
	for _, b := range st.Histogram {
		bar := 0
		if peak > 0 {
			bar = (b.Count*40 + peak - 1) / peak
		}
		fmt.Fprintf(w, "  %6d-%-6d %7d %s\n", b.Lo, b.Hi, b.Count, strings.Repeat("#", bar))
	}
}

// ViewOptions control RenderEpisode.
type ViewOptions struct {
	Table bool // one line per token: position, id, text, weight, segment
	Color bool // mark supervised text with ANSI color instead of brackets
}

// RenderEpisode writes one episode for people, with supervised tokens
// (loss weight > 0) visibly marked: wrapped in ⟦ ⟧ (or colored), or as a
// table of tokens.
func RenderEpisode(w io.Writer, tok *tokenizer.Tokenizer, v EpisodeView, opt ViewOptions) {
	if opt.Table {
		fmt.Fprintf(w, "%6s %6s %7s %4s  %s\n", "pos", "id", "weight", "seg", "text")
		for j, t := range v.Tokens {
			seg := ""
			if v.Segments != nil {
				seg = fmt.Sprint(v.Segments[j])
			}
			fmt.Fprintf(w, "%6d %6d %7.2f %4s  %q\n", j, t, v.Weight(j), seg, tok.TokenText(t))
		}
		return
	}
	open, closeMark := "⟦", "⟧"
	if opt.Color {
		open, closeMark = "\x1b[1;32m", "\x1b[0m"
	}
	// Decode runs of tokens with the same supervision (and segment) together,
	// so characters split across tokens come out whole.
	start := 0
	for j := 1; j <= len(v.Tokens); j++ {
		if j < len(v.Tokens) && (v.Weight(j) > 0) == (v.Weight(start) > 0) &&
			(v.Segments == nil || v.Segments[j] == v.Segments[start]) {
			continue
		}
		if v.Segments != nil && (start == 0 || v.Segments[start] != v.Segments[start-1]) {
			if start > 0 {
				fmt.Fprintln(w)
			}
			fmt.Fprintf(w, "── segment %d ──\n", v.Segments[start])
		}
		text, err := tok.Decode(v.Tokens[start:j])
		if err != nil {
			text = fmt.Sprintf("<undecodable: %v>", err)
		}
		if v.Weight(start) > 0 {
			fmt.Fprint(w, open, text, closeMark)
		} else {
			fmt.Fprint(w, text)
		}
		start = j
	}
	fmt.Fprintln(w)
}

package dataset

import (
	"fmt"

	"github.com/mypt/mypt/core/tokenizer"
)

// Severity of a validation issue: errors make a dataset invalid, warnings
// are reported only.
type Severity string

// Severities of validation issues.
const (
	SevError   Severity = "error"
	SevWarning Severity = "warning"
)

// Issue is one finding of Validate.
type Issue struct {
	Episode  int      `json:"episode"`           // index in the split
	Segment  int      `json:"segment,omitempty"` // packed data: segment id within the pack
	Kind     string   `json:"kind"`
	Position int      `json:"position"` // token offset within the episode
	Severity Severity `json:"severity"`
	Message  string   `json:"message"`
}

// ValidationReport is Validate's result for one split.
type ValidationReport struct {
	Split    string         `json:"split"`
	Episodes int            `json:"episodes"`
	Checked  int            `json:"checked"`
	Valid    int            `json:"valid"`
	Invalid  int            `json:"invalid"`
	Counts   map[string]int `json:"counts"` // issues per kind
	Issues   []Issue        `json:"issues"` // the first MaxIssues
}

// ValidateOptions bound a validation run.
type ValidateOptions struct {
	MaxEpisodes int // 0 = all
	MaxIssues   int // issues kept in the report; 0 = 1000
	VocabSize   int // token ids must be below it; 0 = tokenizer.DefaultVocabSize
}

// Validate checks every episode's loss mask with the rules of MyPT's
// scripts/sft/validate_sft_dataset.py — <myPT_assistant> unmasked,
// </myPT_assistant> and <myPT_eot> masked, nothing masked before the first
// <myPT_assistant> (EARLY_MASK, MASK_BEFORE_ASSISTANT,
// ASSISTANT_OPEN_IS_FIRST_MASKED) — applied per segment for packed data,
// where padding (segment 0, which is <myPT_eot> with mask 0) is not an
// episode. It adds structural checks: ids inside the vocabulary, packed
// segments in order with padding only at the end and never masked. An
// episode with no supervised token besides <myPT_eot> is a warning.
func (sp *Split) Validate(opt ValidateOptions) *ValidationReport {
	if opt.MaxIssues <= 0 {
		opt.MaxIssues = 1000
	}
	if opt.VocabSize <= 0 {
		opt.VocabSize = tokenizer.DefaultVocabSize
	}
	r := &ValidationReport{Split: sp.Name, Episodes: sp.NumEpisodes(), Counts: map[string]int{}, Issues: []Issue{}}
	n := sp.NumEpisodes()
	if opt.MaxEpisodes > 0 {
		n = min(n, opt.MaxEpisodes)
	}
	hasMask := sp.HasMask()
	if !hasMask && n > 0 {
		r.add(Issue{Episode: -1, Kind: "NO_MASK", Severity: SevError,
			Message: fmt.Sprintf("split %s has no %s in some shard", sp.Name, MaskFile)}, opt)
	}
	for i := range n {
		v := sp.Episode(i)
		var issues []Issue
		add := func(is Issue) {
			is.Episode = i
			issues = append(issues, is)
		}
		if len(v.Tokens) == 0 {
			add(Issue{Kind: "EMPTY_EPISODE", Severity: SevError, Message: "episode has no tokens"})
		}
		for j, t := range v.Tokens {
			if int(t) >= opt.VocabSize {
				add(Issue{Kind: "TOKEN_OUT_OF_VOCAB", Position: j, Severity: SevError,
					Message: fmt.Sprintf("token %d at %d is outside the vocabulary of %d", t, j, opt.VocabSize)})
				break
			}
		}
		if hasMask {
			for _, seg := range segmentsOf(v, add) {
				checkMask(v, seg, add)
			}
		}
		r.Checked++
		invalid := false
		for _, is := range issues {
			r.add(is, opt)
			invalid = invalid || is.Severity == SevError
		}
		if invalid {
			r.Invalid++
		} else {
			r.Valid++
		}
	}
	return r
}

func (r *ValidationReport) add(is Issue, opt ValidateOptions) {
	r.Counts[is.Kind]++
	if len(r.Issues) < opt.MaxIssues {
		r.Issues = append(r.Issues, is)
	}
}

// OK reports whether no episode has an error.
func (r *ValidationReport) OK() bool { return r.Invalid == 0 && r.Counts["NO_MASK"] == 0 }

// span is one unit the mask rules apply to: a whole episode, or one segment
// of a packed sequence.
type span struct {
	lo, hi  int
	segment int
}

// segmentsOf splits a packed episode into its segments, checking that ids
// run 1, 2, 3, ... with padding (0) only at the end, and that padding is
// never supervised. Unpacked episodes are one span.
func segmentsOf(v EpisodeView, add func(Issue)) []span {
	if v.Segments == nil {
		return []span{{0, len(v.Tokens), 0}}
	}
	var out []span
	prev := 0
	for j, s := range v.Segments {
		id := int(s)
		switch {
		case id == 0:
			if v.Weight(j) > 0 {
				add(Issue{Kind: "PAD_MASKED", Position: j, Severity: SevError,
					Message: fmt.Sprintf("padding at %d (segment 0) has loss weight %g", j, v.Weight(j))})
				return out
			}
		case prev == 0 && j > 0 && id != 0:
			add(Issue{Kind: "SEGMENT_ORDER", Position: j, Severity: SevError,
				Message: fmt.Sprintf("segment %d starts at %d after padding", id, j)})
			return out
		case id == prev:
			out[len(out)-1].hi = j + 1
		case id == prev+1:
			out = append(out, span{j, j + 1, id})
		default:
			add(Issue{Kind: "SEGMENT_ORDER", Position: j, Severity: SevError,
				Message: fmt.Sprintf("segment id %d follows %d at %d", id, prev, j)})
			return out
		}
		prev = id
	}
	return out
}

// checkMask applies MyPT's validator rules to one span.
func checkMask(v EpisodeView, sp span, add func(Issue)) {
	firstOpen, firstMasked := -1, -1
	supervised := false
	for j := sp.lo; j < sp.hi; j++ {
		t, masked := v.Tokens[j], v.Weight(j) > 0
		pos := j - sp.lo
		if masked && firstMasked < 0 {
			firstMasked = pos
		}
		if masked && t != tokenizer.EOT {
			supervised = true
		}
		switch t {
		case tokenizer.AssistantOpen:
			if firstOpen < 0 {
				firstOpen = pos
			}
			if masked {
				add(Issue{Segment: sp.segment, Kind: "ASSISTANT_OPEN_MASKED", Position: pos, Severity: SevError,
					Message: fmt.Sprintf("<myPT_assistant> at %d has mask 1 (should be 0)", pos)})
			}
		case tokenizer.AssistantClose:
			if !masked {
				add(Issue{Segment: sp.segment, Kind: "ASSISTANT_CLOSE_NOT_MASKED", Position: pos, Severity: SevError,
					Message: fmt.Sprintf("</myPT_assistant> at %d has mask 0 (should be 1)", pos)})
			}
		case tokenizer.EOT:
			if !masked {
				add(Issue{Segment: sp.segment, Kind: "EOT_NOT_MASKED", Position: pos, Severity: SevError,
					Message: fmt.Sprintf("<myPT_eot> at %d has mask 0 (should be 1)", pos)})
			}
		}
	}
	if firstOpen >= 0 && firstMasked >= 0 {
		if firstMasked <= firstOpen {
			add(Issue{Segment: sp.segment, Kind: "EARLY_MASK", Position: firstMasked, Severity: SevError,
				Message: fmt.Sprintf("first masked token at %d is before/at <myPT_assistant> at %d", firstMasked, firstOpen)})
		}
		if firstMasked < firstOpen+1 && v.Tokens[sp.lo+firstMasked] == tokenizer.AssistantOpen {
			add(Issue{Segment: sp.segment, Kind: "ASSISTANT_OPEN_IS_FIRST_MASKED", Position: firstMasked, Severity: SevError,
				Message: "first masked token is <myPT_assistant> (should be the content after it)"})
		}
		for j := sp.lo; j < sp.lo+firstOpen; j++ {
			if v.Weight(j) > 0 {
				add(Issue{Segment: sp.segment, Kind: "MASK_BEFORE_ASSISTANT", Position: j - sp.lo, Severity: SevError,
					Message: fmt.Sprintf("mask 1 at %d before the first <myPT_assistant> at %d", j-sp.lo, firstOpen)})
				break
			}
		}
	}
	if !supervised {
		add(Issue{Segment: sp.segment, Kind: "NO_SUPERVISED_TOKENS", Severity: SevWarning,
			Message: "no supervised token besides <myPT_eot> (no assistant turn?)"})
	}
}

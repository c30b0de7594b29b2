package prepare

import (
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/mypt/mypt/core/chatfmt"
)

// SchemaReport is MyPT's validate_conversation_schema result.
type SchemaReport struct {
	Total       int             `json:"total"`
	Valid       int             `json:"valid"`
	Invalid     int             `json:"invalid"`
	IssueCounts *orderedMap     `json:"issue_counts"`
	Examples    []SchemaExample `json:"examples"`
	counts      map[string]int
	order       []string // issue kinds in order of first appearance
}

// SchemaExample is one invalid conversation in a SchemaReport.
type SchemaExample struct {
	ConvIndex int      `json:"conv_index"`
	Issues    []string `json:"issues"`
	Source    string   `json:"source"`
}

// checkSchema applies MyPT's structural rules: a non-blank top-level
// "system" (even though serialization ignores it), a non-empty message list,
// roles among user/assistant/assistant_context, non-blank content, at least
// one user and one assistant message.
func checkSchema(convs []*conversation) *SchemaReport {
	r := &SchemaReport{Total: len(convs), IssueCounts: &orderedMap{}, Examples: []SchemaExample{}, counts: map[string]int{}}
	for i, c := range convs {
		var issues []string
		if !c.systemOK {
			issues = append(issues, "missing_or_empty_system")
		}
		if !c.hasMessages {
			issues = append(issues, "missing_or_empty_messages")
		}
		hasUser, hasAssistant := false, false
		for j, m := range c.messages {
			valid := m.rolePresent && m.Role != chatfmt.RoleOther
			if !valid {
				issues = append(issues, fmt.Sprintf("message_%d_invalid_role:%s", j, m.roleText))
			}
			if m.rolePresent && m.Role == chatfmt.RoleUser {
				hasUser = true
			}
			if m.rolePresent && m.Role == chatfmt.RoleAssistant {
				hasAssistant = true
			}
			if valid && pyStrip(m.Content) == "" {
				issues = append(issues, fmt.Sprintf("message_%d_empty_content", j))
			}
		}
		if !hasUser {
			issues = append(issues, "no_user_message")
		}
		if !hasAssistant {
			issues = append(issues, "no_assistant_message")
		}
		if len(issues) == 0 {
			r.Valid++
			continue
		}
		if len(r.Examples) < 10 {
			r.Examples = append(r.Examples, SchemaExample{ConvIndex: i, Issues: issues, Source: c.source})
		}
		for _, is := range issues {
			if _, ok := r.counts[is]; !ok {
				r.order = append(r.order, is)
			}
			r.counts[is]++
		}
	}
	r.Invalid = r.Total - r.Valid
	for _, k := range r.order {
		r.IssueCounts.set(k, r.counts[k])
	}
	return r
}

// TopIssues returns up to n issue kinds, most frequent first.
func (r *SchemaReport) TopIssues(n int) []string {
	keys := slices.Clone(r.order)
	slices.SortStableFunc(keys, func(a, b string) int { return r.counts[b] - r.counts[a] })
	out := make([]string, 0, n)
	for _, k := range keys[:min(n, len(keys))] {
		out = append(out, fmt.Sprintf("%s: %d", k, r.counts[k]))
	}
	return out
}

// ragStats is MyPT's collect_rag_field_stats: how many turns carry the
// optional RAG fields, overall and per source.
func ragStats(convs []*conversation) *orderedMap {
	type counters struct {
		conversations, messages, user, assistant, assistantContext int
		userWithContext, assistantWithThink, assistantWithCite     int
		contextTurns, contextTurnsWithCite                         int
		convsWithContext, convsWithThink, convsWithCite            int
	}
	var total counters
	bySource := map[string]*counters{}
	var sourceOrder []string
	for _, c := range convs {
		src, ok := bySource[c.source]
		if !ok {
			src = &counters{}
			bySource[c.source] = src
			sourceOrder = append(sourceOrder, c.source)
		}
		src.conversations++
		hasCtx, hasThink, hasCite := false, false, false
		for i, m := range c.messages {
			total.messages++
			src.messages++
			switch m.Role {
			case chatfmt.RoleUser:
				total.user++
				src.user++
				if m.hasContext {
					total.userWithContext++
					src.userWithContext++
					hasCtx = true
					// Does the next assistant turn cite?
					for _, next := range c.messages[i+1:] {
						if next.Role != chatfmt.RoleAssistant {
							continue
						}
						total.contextTurns++
						src.contextTurns++
						if next.hasCite {
							total.contextTurnsWithCite++
							src.contextTurnsWithCite++
						}
						break
					}
				}
			case chatfmt.RoleAssistant:
				total.assistant++
				src.assistant++
				if m.hasThink {
					total.assistantWithThink++
					src.assistantWithThink++
					hasThink = true
				}
				if m.hasCite {
					total.assistantWithCite++
					src.assistantWithCite++
					hasCite = true
				}
			case chatfmt.RoleAssistantContext:
				total.assistantContext++
				src.assistantContext++
			}
		}
		if hasCtx {
			total.convsWithContext++
		}
		if hasThink {
			total.convsWithThink++
		}
		if hasCite {
			total.convsWithCite++
		}
	}
	common := func(m *orderedMap, c *counters) {
		m.set("messages_total", c.messages)
		m.set("user_messages", c.user)
		m.set("assistant_messages", c.assistant)
		m.set("assistant_context_messages", c.assistantContext)
		m.set("user_with_context", c.userWithContext)
		m.set("assistant_with_think", c.assistantWithThink)
		m.set("assistant_with_cite", c.assistantWithCite)
		m.set("context_turns_total", c.contextTurns)
		m.set("context_turns_with_cite", c.contextTurnsWithCite)
	}
	out := &orderedMap{}
	out.set("conversations", len(convs))
	common(out, &total)
	out.set("conversations_with_user_context", total.convsWithContext)
	out.set("conversations_with_think", total.convsWithThink)
	out.set("conversations_with_cite", total.convsWithCite)
	sources := &orderedMap{}
	for _, name := range sourceOrder {
		c := bySource[name]
		m := &orderedMap{}
		m.set("conversations", c.conversations)
		common(m, c)
		sources.set(name, m)
	}
	out.set("sources", sources)
	return out
}

var (
	quotedRe = regexp.MustCompile(`"([^"]+)"`)
	// Python's `:\s*(.+)$`: \s is Unicode whitespace, and $ also matches
	// before a final newline.
	afterColonRe = regexp.MustCompile(`:[\t\n\v\f\r\x1c-\x1f\x{85}\p{Z}]*(.+)\n?\z`)
)

// extractPayload computes what MyPT's train/val separation check reads:
// _meta.payload if the key is there (used only when truthy), else a
// heuristic payload from the first user message: its first quoted string,
// else the stripped text after the first colon.
func (c *conversation) extractPayload(obj map[string]json.RawMessage) error {
	if raw, ok := obj["_meta"]; ok {
		var meta map[string]json.RawMessage
		if json.Unmarshal(raw, &meta) == nil && meta != nil {
			if p, ok := meta["payload"]; ok {
				if pyTruthy(p) {
					s, err := pyStr(p)
					if err != nil {
						return fmt.Errorf(`"_meta.payload": %w`, err)
					}
					c.payload = &s
				}
				return nil
			}
		}
	}
	if !c.hasUserMsg {
		return nil
	}
	if m := quotedRe.FindStringSubmatch(c.userMsg); m != nil {
		c.payload = &m[1]
		return nil
	}
	if m := afterColonRe.FindStringSubmatch(c.userMsg); m != nil {
		if p := pyStrip(m[1]); p != "" {
			c.payload = &p
		}
	}
	return nil
}

// templateSignature is the first user message with the payload replaced by
// {PAYLOAD} and whitespace collapsed.
func (c *conversation) templateSignature() string {
	msg := c.userMsg
	if c.payload != nil && strings.Contains(msg, *c.payload) {
		p := *c.payload
		msg = strings.ReplaceAll(msg, `"`+p+`"`, `"{PAYLOAD}"`)
		msg = strings.ReplaceAll(msg, p, "{PAYLOAD}")
	}
	return pySplitJoin(msg)
}

// overlap counts payloads and template signatures shared by train and val
// (MyPT's check_train_val_separation), with up to five examples of each.
func overlap(train, val []*conversation) (payloads, templates int, payloadEx, templateEx []string) {
	set := func(cs []*conversation, f func(*conversation) (string, bool)) map[string]bool {
		m := map[string]bool{}
		for _, c := range cs {
			if k, ok := f(c); ok {
				m[k] = true
			}
		}
		return m
	}
	payload := func(c *conversation) (string, bool) {
		if c.payload == nil {
			return "", false
		}
		return *c.payload, true
	}
	template := func(c *conversation) (string, bool) { return c.templateSignature(), true }
	inter := func(a, b map[string]bool) (int, []string) {
		var both []string
		for k := range a {
			if b[k] {
				both = append(both, k)
			}
		}
		slices.Sort(both)
		return len(both), both[:min(5, len(both))]
	}
	payloads, payloadEx = inter(set(train, payload), set(val, payload))
	templates, templateEx = inter(set(train, template), set(val, template))
	return
}

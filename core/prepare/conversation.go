package prepare

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/mypt/mypt/core/chatfmt"
	"github.com/mypt/mypt/core/tokenizer"
)

// DefaultSystemPrompt is MyPT's CONVERSATION_SYSTEM_PROMPT, serialized into
// every episode unless overridden or disabled. A conversation's own
// "system" field is not used (MyPT only checks that it is there).
const DefaultSystemPrompt = chatfmt.DefaultSystemPrompt

// message is one entry of "messages", reduced to what serialization, the
// schema check and the field statistics read.
type message struct {
	chatfmt.Turn        // Content: str(content), "" when absent; Context/Think/Cite: str() when truthy
	roleText     string // Python str() of the role value, "None" when absent
	rolePresent  bool
	// The stats count str(field).strip() != "" for these.
	hasContext, hasThink, hasCite bool
}

// conversation is one JSONL row.
type conversation struct {
	line        int
	systemOK    bool // "system" is a string with non-space characters
	hasMessages bool // "messages" is a non-empty list
	messages    []message
	replay      bool   // "_replay" is truthy
	replayText  string // "text", for replay rows
	source      string // mix_source or source or "unknown"
	packKey     string // value of --pack_by_field ("" when missing or falsy)
	payload     *string
	userMsg     string // first user message's content, for the overlap check
	hasUserMsg  bool
}

// parseOptions says which optional fields a run needs from each row.
type parseOptions struct {
	packByField string
	overlap     bool
}

// parseConversation decodes one JSONL row. Keys are matched exactly (Python
// dicts are case-sensitive; encoding/json structs are not).
func parseConversation(line []byte, lineNo int, opt parseOptions) (*conversation, error) {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(line, &obj); err != nil {
		if bytes.HasPrefix(line, []byte("\xef\xbb\xbf")) {
			return nil, fmt.Errorf("line starts with a UTF-8 byte order mark")
		}
		if len(line) > 0 && line[0] != '{' {
			var v any
			if json.Unmarshal(line, &v) == nil {
				return nil, fmt.Errorf("expected a JSON object, got %T", v)
			}
		}
		return nil, fmt.Errorf("invalid JSON: %w", err)
	}
	if obj == nil {
		return nil, fmt.Errorf("expected a JSON object, got null")
	}
	c := &conversation{line: lineNo, source: "unknown"}
	if raw, ok := obj["system"]; ok {
		var s string
		if json.Unmarshal(raw, &s) == nil && pyStrip(s) != "" {
			c.systemOK = true
		}
	}
	for _, key := range []string{"mix_source", "source"} {
		if raw, ok := obj[key]; ok && pyTruthy(raw) {
			s, err := pyStr(raw)
			if err != nil {
				return nil, fmt.Errorf("%q: %w", key, err)
			}
			c.source = s
			break
		}
	}
	if raw, ok := obj["messages"]; ok {
		var msgs []json.RawMessage
		if err := json.Unmarshal(raw, &msgs); err != nil || msgs == nil && !bytes.Equal(bytes.TrimSpace(raw), []byte("[]")) {
			return nil, fmt.Errorf(`"messages" must be a list of message objects`)
		}
		c.hasMessages = len(msgs) > 0
		c.messages = make([]message, len(msgs))
		for j, m := range msgs {
			if err := parseMessage(m, &c.messages[j]); err != nil {
				return nil, fmt.Errorf("messages[%d]: %w", j, err)
			}
			// The overlap check looks for msg.get("role") == "user": an
			// explicit role, unlike the serializer's default.
			if c.messages[j].Role == chatfmt.RoleUser && c.messages[j].rolePresent && !c.hasUserMsg {
				c.userMsg, c.hasUserMsg = c.messages[j].Content, true
			}
		}
	}
	if raw, ok := obj["_replay"]; ok && pyTruthy(raw) {
		c.replay = true
		if t, ok := obj["text"]; ok {
			if err := json.Unmarshal(t, &c.replayText); err != nil {
				return nil, fmt.Errorf(`"text" of a _replay row must be a string`)
			}
		}
	}
	if opt.packByField != "" {
		key, err := nestedField(obj, opt.packByField)
		if err != nil {
			return nil, fmt.Errorf("--pack_by_field %s: %w", opt.packByField, err)
		}
		c.packKey = key
	}
	if opt.overlap {
		if err := c.extractPayload(obj); err != nil {
			return nil, err
		}
	}
	return c, nil
}

func parseMessage(raw json.RawMessage, m *message) error {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil || obj == nil {
		return fmt.Errorf("expected a JSON object")
	}
	m.roleText = "None"
	m.Role = chatfmt.RoleUser // MyPT's serializer: msg.get("role", "user")
	if r, ok := obj["role"]; ok {
		m.rolePresent = true
		var s string
		if json.Unmarshal(r, &s) == nil {
			m.roleText = s
			switch s {
			case "user":
				m.Role = chatfmt.RoleUser
			case "assistant":
				m.Role = chatfmt.RoleAssistant
			case "assistant_context":
				m.Role = chatfmt.RoleAssistantContext
			default:
				m.Role = chatfmt.RoleOther
			}
		} else {
			text, err := pyStr(r)
			if err != nil {
				return fmt.Errorf(`"role": %w`, err)
			}
			m.roleText, m.Role = text, chatfmt.RoleOther
		}
	}
	var err error
	if c, ok := obj["content"]; ok {
		if m.Content, err = pyStr(c); err != nil {
			return fmt.Errorf(`"content": %w`, err)
		}
	}
	field := func(name string, dst *string, nonBlank *bool) error {
		raw, ok := obj[name]
		if !ok {
			return nil
		}
		s, err := pyStr(raw)
		if err != nil {
			return fmt.Errorf("%q: %w", name, err)
		}
		*nonBlank = pyStrip(s) != ""
		if pyTruthy(raw) {
			*dst = s
		}
		return nil
	}
	if err := field("context", &m.Context, &m.hasContext); err != nil {
		return err
	}
	if err := field("think", &m.Think, &m.hasThink); err != nil {
		return err
	}
	return field("cite", &m.Cite, &m.hasCite)
}

// nestedField follows a dotted path ("_meta.operator") through nested
// objects and returns str() of the value, or "" when a step is missing or
// the value is null. MyPT groups by that string when it is non-empty; an
// empty one lands in the _ungrouped group like a missing one.
func nestedField(obj map[string]json.RawMessage, path string) (string, error) {
	parts := strings.Split(path, ".")
	cur := obj
	for i, p := range parts {
		raw, ok := cur[p]
		if !ok {
			return "", nil
		}
		if i == len(parts)-1 {
			if bytes.Equal(bytes.TrimSpace(raw), []byte("null")) {
				return "", nil
			}
			return pyStr(raw)
		}
		var next map[string]json.RawMessage
		if json.Unmarshal(raw, &next) != nil || next == nil {
			return "", nil
		}
		cur = next
	}
	return "", nil
}

// serialize renders a conversation as MyPT's chat text: no separators
// between tags, one <myPT_eot> at the end.
func serialize(sb *strings.Builder, c *conversation, opt Options) {
	sb.Reset()
	turns := make([]chatfmt.Turn, len(c.messages))
	for i := range c.messages {
		turns[i] = c.messages[i].Turn
	}
	chatfmt.Write(sb, turns, chatfmt.Options{
		SystemPrompt: opt.SystemPrompt, NoSystemPrompt: opt.NoSystemPrompt, RAGTags: opt.EnableRAGTags,
	})
	sb.WriteString(chatfmt.EOT)
}

// Loss weights of MyPT's mask rule, walked over token ids.
const (
	weightOff    = 0
	weightNormal = 1
	weightSteer  = 1.5 // think / cite tags, weighted masks only
	weightStop   = 2   // </myPT_assistant>, <myPT_eot>, toolcall tags, weighted masks only
)

// lossWeights applies MyPT's mask rule (docs/MYPT.md §6 loss mask):
// <myPT_assistant> 0 and opens the assistant span; </myPT_assistant> 1 and
// closes it; <myPT_eot> 1 wherever it is; any other token 1 inside the span
// and 0 outside. With weighted, stop tokens (close, eot) and toolcall tags get
// 2.0 and think/cite tags 1.5.
func lossWeights(dst []float32, ids []uint32, weighted bool) []float32 {
	inAssistant := false
	for _, id := range ids {
		var w float32
		switch id {
		case tokenizer.AssistantOpen:
			w, inAssistant = weightOff, true
		case tokenizer.AssistantClose:
			w, inAssistant = weightNormal, false
			if weighted {
				w = weightStop
			}
		case tokenizer.EOT:
			w = weightNormal
			if weighted {
				w = weightStop
			}
		default:
			switch {
			case !inAssistant:
				w = weightOff
			case weighted && (id == tokenizer.ThinkOpen || id == tokenizer.ThinkClose || id == tokenizer.CiteOpen || id == tokenizer.CiteClose):
				w = weightSteer
			case weighted && (id == tokenizer.ToolcallOpen || id == tokenizer.ToolcallClose):
				w = weightStop
			default:
				w = weightNormal
			}
		}
		dst = append(dst, w)
	}
	return dst
}

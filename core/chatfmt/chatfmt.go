// Package chatfmt is MyPT's chat serialization, shared by dataset
// preparation and generation so that prompts at inference time are exactly
// what the model saw in training: tags with no separators or newlines
// between them, <myPT_system> first, one <myPT_eot> closing an episode
// (docs/MYPT.md §2 chat serialization).
package chatfmt

import "strings"

// DefaultSystemPrompt is MyPT's CONVERSATION_SYSTEM_PROMPT.
const DefaultSystemPrompt = "You are MyPT."

// Tag strings the serialization writes.
const (
	AssistantOpen = "<myPT_assistant>"
	EOT           = "<myPT_eot>"
)

// Role is a message role. Other roles (system, toolresult, ...) are dropped
// from the text, as MyPT does.
type Role uint8

const (
	RoleOther Role = iota
	RoleUser
	RoleAssistant
	RoleAssistantContext
)

// Turn is one message.
type Turn struct {
	Role    Role
	Content string
	Context string // user: <myPT_user_context>, with RAG tags only
	Think   string // assistant: <myPT_think> before the content, with RAG tags only
	Cite    string // assistant: <myPT_cite> after the content, with RAG tags only
}

// Options select the system prompt and the optional tags.
type Options struct {
	SystemPrompt   string // "" means DefaultSystemPrompt
	NoSystemPrompt bool
	RAGTags        bool // serialize context, think, cite and assistant_context
}

// Write appends the system block and the turns, without the closing eot.
func Write(sb *strings.Builder, turns []Turn, opt Options) {
	if !opt.NoSystemPrompt {
		prompt := opt.SystemPrompt
		if prompt == "" {
			prompt = DefaultSystemPrompt
		}
		wrap(sb, "myPT_system", prompt)
	}
	for i := range turns {
		t := &turns[i]
		switch t.Role {
		case RoleUser:
			sb.WriteString("<myPT_user>")
			if opt.RAGTags && t.Context != "" {
				wrap(sb, "myPT_user_context", t.Context)
			}
			sb.WriteString(t.Content)
			sb.WriteString("</myPT_user>")
		case RoleAssistantContext:
			if opt.RAGTags {
				wrap(sb, "myPT_assistant_context", t.Content)
			}
		case RoleAssistant:
			sb.WriteString(AssistantOpen)
			if opt.RAGTags && t.Think != "" {
				wrap(sb, "myPT_think", t.Think)
			}
			sb.WriteString(t.Content)
			if opt.RAGTags && t.Cite != "" {
				wrap(sb, "myPT_cite", t.Cite)
			}
			sb.WriteString("</myPT_assistant>")
		}
	}
}

// Episode is a whole training episode: Write plus <myPT_eot>.
func Episode(turns []Turn, opt Options) string {
	var sb strings.Builder
	Write(&sb, turns, opt)
	sb.WriteString(EOT)
	return sb.String()
}

// ReplyPrompt is the prompt that asks the model for the next assistant turn:
// Write plus an open <myPT_assistant>.
func ReplyPrompt(turns []Turn, opt Options) string {
	var sb strings.Builder
	Write(&sb, turns, opt)
	sb.WriteString(AssistantOpen)
	return sb.String()
}

func wrap(sb *strings.Builder, tag, text string) {
	sb.WriteString("<" + tag + ">")
	sb.WriteString(text)
	sb.WriteString("</" + tag + ">")
}

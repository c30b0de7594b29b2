package generate

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/mypt/mypt/core/chatfmt"
	"github.com/mypt/mypt/core/tokenizer"
	"github.com/mypt/mypt/sdk"
)

// StopIDs are the ids that end an assistant reply: </myPT_assistant> and
// <myPT_eot>.
func StopIDs() map[int32]bool {
	return map[int32]bool{int32(tokenizer.AssistantClose): true, int32(tokenizer.EOT): true}
}

// ErrPromptTooLong reports a conversation whose newest user turn alone does
// not leave room for the reply in the model's context.
var ErrPromptTooLong = errors.New("prompt too long for the model's context")

// ChatPrompt encodes the prompt asking for the next assistant turn after
// turns (whose last element is normally the new user message), serialized
// exactly as in training (chatfmt.ReplyPrompt). While the prompt plus
// maxNew exceeds blockSize it drops the oldest turns, a user turn together
// with the assistant turns that answered it, so the conversation never
// starts with an orphaned assistant reply. It returns the ids and how many
// leading turns were dropped.
func ChatPrompt(tok *tokenizer.Tokenizer, turns []chatfmt.Turn, opt chatfmt.Options, maxNew, blockSize int) ([]int32, int, error) {
	if maxNew < 1 {
		return nil, 0, fmt.Errorf("max_new_tokens must be at least 1, got %d", maxNew)
	}
	if maxNew >= blockSize {
		return nil, 0, fmt.Errorf("%w: max_new_tokens %d leaves no room for a prompt in a context of %d tokens", ErrPromptTooLong, maxNew, blockSize)
	}
	start := 0
	for {
		ids, err := tok.Encode(chatfmt.ReplyPrompt(turns[start:], opt))
		if err != nil {
			return nil, 0, fmt.Errorf("encode prompt: %w", err)
		}
		if len(ids)+maxNew <= blockSize {
			return Int32IDs(ids), start, nil
		}
		next := nextExchange(turns, start)
		if next >= len(turns) {
			return nil, 0, fmt.Errorf("%w: the last message needs %d tokens with the system prompt, plus max_new_tokens %d is more than the context of %d; shorten it or lower max_new_tokens",
				ErrPromptTooLong, len(ids), maxNew, blockSize)
		}
		start = next
	}
}

// nextExchange returns the index of the first user turn after turns[start]
// (len(turns) when there is none).
func nextExchange(turns []chatfmt.Turn, start int) int {
	for i := start + 1; i < len(turns); i++ {
		if turns[i].Role == chatfmt.RoleUser {
			return i
		}
	}
	return len(turns)
}

// Chat is a multi-turn conversation. It is not safe for concurrent use.
type Chat struct {
	Options chatfmt.Options
	Turns   []chatfmt.Turn // user and assistant turns so far
}

// ChatRequest is one user message and how to answer it.
type ChatRequest struct {
	User         string
	MaxNewTokens int
	Sampler      *Sampler
	// Emit, when set, receives the reply's text as it is generated (the
	// stop tag is not included).
	Emit func(text string) error
}

// ChatResult is an answered message.
type ChatResult struct {
	Reply   string
	Dropped int  // oldest turns dropped from the history to fit the context
	Stopped bool // the model closed its turn (else max_new_tokens ran out)
	Tokens  int  // generated ids, the stop id included
}

// Reply answers req.User with the model m loaded in b. On success the user
// turn and the reply join the history and the dropped turns leave it; on
// error the history is unchanged.
func (c *Chat) Reply(ctx context.Context, b sdk.Backend, m *Model, req ChatRequest) (*ChatResult, error) {
	if strings.TrimSpace(req.User) == "" {
		return nil, errors.New("empty message")
	}
	turns := append(c.Turns[:len(c.Turns):len(c.Turns)], chatfmt.Turn{Role: chatfmt.RoleUser, Content: req.User})
	prompt, dropped, err := ChatPrompt(m.Tokenizer, turns, c.Options, req.MaxNewTokens, m.Config.BlockSize)
	if err != nil {
		return nil, err
	}
	stop := StopIDs()
	stream := NewTextStream(m.Tokenizer, req.Emit)
	out, err := Generate(ctx, b, Request{
		Prompt:       prompt,
		MaxNewTokens: req.MaxNewTokens,
		BlockSize:    m.Config.BlockSize,
		VocabSize:    m.Config.VocabSize,
		Stop:         stop,
		Sampler:      req.Sampler,
		Emit: func(id int32) error {
			if stop[id] {
				return nil
			}
			return stream.Add(id)
		},
	})
	if err != nil {
		return nil, err
	}
	if err := stream.Flush(); err != nil {
		return nil, err
	}
	res := &ChatResult{Dropped: dropped, Tokens: len(out)}
	if n := len(out); n > 0 && stop[out[n-1]] {
		res.Stopped = true
	}
	res.Reply = stream.Text()
	c.Turns = append(turns[dropped:], chatfmt.Turn{Role: chatfmt.RoleAssistant, Content: res.Reply})
	return res, nil
}

// Clear forgets the history.
func (c *Chat) Clear() { c.Turns = nil }

// TextStream turns generated ids into text increments, holding back an
// incomplete UTF-8 sequence until the id that completes it.
type TextStream struct {
	tok     *tokenizer.Tokenizer
	emit    func(string) error
	ids     []uint32
	text    string
	printed int
}

// NewTextStream returns a stream that passes text to emit (nil: only
// collect it).
func NewTextStream(tok *tokenizer.Tokenizer, emit func(string) error) *TextStream {
	return &TextStream{tok: tok, emit: emit}
}

// Add appends one id and emits the text it completes.
func (s *TextStream) Add(id int32) error {
	s.ids = append(s.ids, uint32(id))
	text, err := s.tok.Decode(s.ids)
	if err != nil {
		return fmt.Errorf("decode: %w", err)
	}
	s.text = text
	if strings.HasSuffix(text, string(utf8.RuneError)) {
		return nil
	}
	return s.send()
}

// Flush emits whatever is held back.
func (s *TextStream) Flush() error { return s.send() }

// Text is everything decoded so far.
func (s *TextStream) Text() string { return s.text }

func (s *TextStream) send() error {
	if len(s.text) <= s.printed {
		return nil
	}
	chunk := s.text[s.printed:]
	s.printed = len(s.text)
	if s.emit == nil {
		return nil
	}
	return s.emit(chunk)
}

// Int32IDs converts token ids to the protocol's int32.
func Int32IDs(ids []uint32) []int32 {
	out := make([]int32, len(ids))
	for i, id := range ids {
		out[i] = int32(id)
	}
	return out
}

package generate

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/mypt/mypt/core/chatfmt"
	"github.com/mypt/mypt/core/dataset"
	"github.com/mypt/mypt/core/prepare"
	"github.com/mypt/mypt/core/tokenizer"
)

func gpt2(t *testing.T) *tokenizer.Tokenizer {
	t.Helper()
	tok, err := tokenizer.NewGPT2(tokenizer.DefaultVocabSize)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// TestChatPromptMatchesPrepare checks that the prompt chat builds for the
// next assistant turn is, token for token, the prefix of the episode that
// `mypt prepare` writes for the same conversation.
func TestChatPromptMatchesPrepare(t *testing.T) {
	conv := []struct{ role, content string }{
		{"user", "Hello there! Wie geht's? ü"},
		{"assistant", "Hi! I'm fine,\nthanks."},
		{"user", "What is 2 + 2?\n  Answer briefly."},
		{"assistant", "2 + 2 = 4."},
	}
	for _, system := range []string{"", "You are a terse assistant."} {
		t.Run("system="+system, func(t *testing.T) {
			dir := t.TempDir()
			type msg struct {
				Role    string `json:"role"`
				Content string `json:"content"`
			}
			var msgs []msg
			var turns []chatfmt.Turn
			for _, m := range conv {
				msgs = append(msgs, msg{m.role, m.content})
				role := chatfmt.RoleUser
				if m.role == "assistant" {
					role = chatfmt.RoleAssistant
				}
				turns = append(turns, chatfmt.Turn{Role: role, Content: m.content})
			}
			line, _ := json.Marshal(map[string]any{"messages": msgs})
			in := filepath.Join(dir, "in.jsonl")
			if err := os.WriteFile(in, append(line, '\n'), 0o644); err != nil {
				t.Fatal(err)
			}
			opt := prepare.DefaultOptions()
			opt.Input, opt.Output, opt.ValSplit, opt.SystemPrompt = in, filepath.Join(dir, "ds"), 0, system
			opt.Log = slog.New(slog.DiscardHandler)
			if _, err := prepare.Run(context.Background(), opt); err != nil {
				t.Fatal(err)
			}
			ds, err := dataset.Open(opt.Output)
			if err != nil {
				t.Fatal(err)
			}
			defer ds.Close()
			if n := ds.Train.NumEpisodes(); n != 1 {
				t.Fatalf("prepared %d train episodes, want 1", n)
			}
			episode := Int32IDs(ds.Train.Episode(0).Tokens)

			tok := gpt2(t)
			for _, upto := range []int{1, 3} { // ask for the first and the second reply
				ids, dropped, err := ChatPrompt(tok, turns[:upto], chatfmt.Options{SystemPrompt: system}, 8, 1024)
				if err != nil || dropped != 0 {
					t.Fatalf("ChatPrompt: dropped %d, err %v", dropped, err)
				}
				if len(ids) >= len(episode) || !slices.Equal(ids, episode[:len(ids)]) {
					t.Fatalf("prompt for reply %d is not a prefix of the prepared episode\nprompt  %v\nepisode %v", upto, ids, episode)
				}
				if ids[len(ids)-1] != int32(tokenizer.AssistantOpen) {
					t.Errorf("prompt ends with %d, want <myPT_assistant>", ids[len(ids)-1])
				}
				// The prepared episode continues with the reply's tokens and its close tag.
				reply, _ := tok.Encode(turns[upto].Content)
				rest := episode[len(ids):]
				if !slices.Equal(rest[:len(reply)], Int32IDs(reply)) || rest[len(reply)] != int32(tokenizer.AssistantClose) {
					t.Errorf("episode after the prompt = %v, want reply %v then </myPT_assistant>", rest, reply)
				}
			}
			if last := episode[len(episode)-1]; last != int32(tokenizer.EOT) {
				t.Errorf("episode ends with %d, want <myPT_eot>", last)
			}
		})
	}
}

// TestChatPromptTrims checks that the oldest whole exchanges are dropped,
// and only as many as needed.
func TestChatPromptTrims(t *testing.T) {
	tok := gpt2(t)
	var turns []chatfmt.Turn
	for i := range 6 {
		turns = append(turns,
			chatfmt.Turn{Role: chatfmt.RoleUser, Content: strings.Repeat("question ", i+1)},
			chatfmt.Turn{Role: chatfmt.RoleAssistant, Content: strings.Repeat("answer ", i+2)})
	}
	turns = append(turns, chatfmt.Turn{Role: chatfmt.RoleUser, Content: "last one"})
	opt := chatfmt.Options{}
	length := func(from int) int {
		ids, err := tok.Encode(chatfmt.ReplyPrompt(turns[from:], opt))
		if err != nil {
			t.Fatal(err)
		}
		return len(ids)
	}
	const maxNew = 10
	full := length(0)
	lastOnly := length(len(turns) - 1)
	for block := lastOnly + maxNew; block <= full+maxNew+1; block++ {
		ids, dropped, err := ChatPrompt(tok, turns, opt, maxNew, block)
		if err != nil {
			t.Fatalf("block %d: %v", block, err)
		}
		if dropped%2 != 0 || turns[dropped].Role != chatfmt.RoleUser {
			t.Fatalf("block %d: dropped %d turns, not whole exchanges", block, dropped)
		}
		if len(ids)+maxNew > block {
			t.Fatalf("block %d: prompt %d + %d does not fit", block, len(ids), maxNew)
		}
		if len(ids) != length(dropped) {
			t.Fatalf("block %d: prompt is not the serialization of the kept turns", block)
		}
		if dropped > 0 && length(dropped-2)+maxNew <= block {
			t.Fatalf("block %d: dropped %d turns, but %d would have fit", block, dropped, dropped-2)
		}
	}
	if _, _, err := ChatPrompt(tok, turns, opt, maxNew, lastOnly+maxNew-1); !errors.Is(err, ErrPromptTooLong) {
		t.Errorf("last message alone does not fit: err = %v, want ErrPromptTooLong", err)
	}
	if _, _, err := ChatPrompt(tok, turns, opt, 64, 64); !errors.Is(err, ErrPromptTooLong) {
		t.Errorf("max_new_tokens = block_size: err = %v, want ErrPromptTooLong", err)
	}
	if _, _, err := ChatPrompt(tok, turns, opt, 0, 64); err == nil {
		t.Error("max_new_tokens 0 accepted")
	}
}

// TestTextStreamUTF8 checks that a character split over several byte-level
// tokens is emitted whole, once.
func TestTextStreamUTF8(t *testing.T) {
	tok := gpt2(t)
	text := "naïve 日本語 🙂 ok"
	ids, err := tok.Encode(text)
	if err != nil {
		t.Fatal(err)
	}
	var chunks []string
	s := NewTextStream(tok, func(c string) error { chunks = append(chunks, c); return nil })
	for _, id := range ids {
		if err := s.Add(int32(id)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(chunks, ""); got != text {
		t.Fatalf("streamed %q, want %q", got, text)
	}
	for _, c := range chunks {
		if strings.ContainsRune(c, '\uFFFD') {
			t.Errorf("chunk %q holds a broken character", c)
		}
	}
}

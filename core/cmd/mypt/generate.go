package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"unicode/utf8"

	"github.com/spf13/cobra"

	"github.com/mypt/mypt/core/chatfmt"
	"github.com/mypt/mypt/core/discovery"
	"github.com/mypt/mypt/core/generate"
	"github.com/mypt/mypt/core/tokenizer"
	"github.com/mypt/mypt/sdk"
)

func newGenerateCmd() *cobra.Command {
	var (
		modelDir, prompt, preset, backend, system, user string
		maxNew                                          int
		seed                                            uint64
		chat                                            bool
		p                                               generate.Params
	)
	cmd := &cobra.Command{
		Use:   "generate --model DIR (--prompt TEXT | --chat --user TEXT)",
		Short: "Generate text from a trained model, streaming tokens as they come",
		Long: `Generate from a checkpoint (a checkpoint directory, or a run directory: best/
is preferred over latest/). --prompt is used as written, tags included;
--chat builds the prompt from --system and --user with exactly the training
serialization. Generation stops at </myPT_assistant> or <myPT_eot>.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if modelDir == "" {
				return errors.New("--model is required")
			}
			if chat {
				if user == "" {
					return errors.New("--chat needs --user")
				}
				prompt = chatfmt.ReplyPrompt([]chatfmt.Turn{{Role: chatfmt.RoleUser, Content: user}},
					chatfmt.Options{SystemPrompt: system})
			} else if prompt == "" {
				return errors.New("give --prompt TEXT, or --chat --user TEXT")
			}
			if preset != "" {
				pp, err := generate.Preset(preset)
				if err != nil {
					return err
				}
				p = pp
			}
			if p.PenaltyWindow == 0 {
				p.PenaltyWindow = 256
			}
			path, err := discovery.FromEnvironment().Resolve(backend)
			if err != nil {
				return err
			}
			client, err := sdk.Start(cmd.Context(), path, sdk.StartOptions{Logger: slog.Default()})
			if err != nil {
				return err
			}
			defer client.Close()
			m, err := generate.Load(cmd.Context(), modelDir, client)
			if err != nil {
				return err
			}
			slog.Debug("loaded", "checkpoint", m.Dir)
			ids, err := m.Tokenizer.Encode(prompt)
			if err != nil {
				return fmt.Errorf("encode prompt: %w", err)
			}
			out := cmd.OutOrStdout()
			fmt.Fprint(out, prompt)
			stream := &textStream{tok: m.Tokenizer, w: out}
			_, err = generate.Generate(cmd.Context(), client, generate.Request{
				Prompt:       toInt32(ids),
				MaxNewTokens: maxNew,
				BlockSize:    m.Config.BlockSize,
				Stop:         map[int32]bool{int32(tokenizer.AssistantClose): true, int32(tokenizer.EOT): true},
				Sampler:      generate.NewSampler(p, seed),
				Emit:         stream.add,
			})
			stream.flush()
			fmt.Fprintln(out)
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&modelDir, "model", "", "checkpoint or run directory")
	f.StringVar(&prompt, "prompt", "", "prompt text, used as written")
	f.BoolVar(&chat, "chat", false, "build the prompt from --system and --user with the training serialization")
	f.StringVar(&system, "system", "", "system prompt for --chat (default: MyPT's \"You are MyPT.\")")
	f.StringVar(&user, "user", "", "user message for --chat")
	f.IntVar(&maxNew, "max_new_tokens", 100, "tokens to generate at most")
	f.Float64Var(&p.Temperature, "temperature", 0.8, "softmax temperature; 0 = greedy")
	f.IntVar(&p.TopK, "top_k", 50, "keep the k most likely tokens (0: off)")
	f.Float64Var(&p.TopP, "top_p", 0.95, "nucleus sampling threshold (1: off)")
	f.Float64Var(&p.RepetitionPenalty, "repetition_penalty", 1.1, "penalty for recent tokens (1: off)")
	f.IntVar(&p.PenaltyWindow, "penalty_window", 256, "recent tokens the repetition penalty looks at")
	f.StringVar(&preset, "preset", "", "chat, creative, factual, code or deterministic (overrides the four sampling flags)")
	f.Uint64Var(&seed, "seed", 1337, "sampling seed")
	f.StringVar(&backend, "backend", "cpu", "backend plugin: a NAME or a path")
	return cmd
}

// textStream prints generated tokens as they arrive, holding back an
// incomplete UTF-8 sequence until the token that completes it.
type textStream struct {
	tok     *tokenizer.Tokenizer
	w       io.Writer
	ids     []uint32
	printed int
}

func (s *textStream) add(id int32) error {
	s.ids = append(s.ids, uint32(id))
	text, err := s.tok.Decode(s.ids)
	if err != nil {
		return err
	}
	if strings.HasSuffix(text, string(utf8.RuneError)) {
		return nil
	}
	_, err = io.WriteString(s.w, text[s.printed:])
	s.printed = len(text)
	return err
}

func (s *textStream) flush() {
	if text, err := s.tok.Decode(s.ids); err == nil && len(text) > s.printed {
		io.WriteString(s.w, text[s.printed:])
	}
}

func toInt32(ids []uint32) []int32 {
	out := make([]int32, len(ids))
	for i, id := range ids {
		out[i] = int32(id)
	}
	return out
}

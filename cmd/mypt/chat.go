package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/spf13/cobra"

	"github.com/mypt/mypt/core/chatfmt"
	"github.com/mypt/mypt/core/generate"
)

func newChatCmd() *cobra.Command {
	var (
		modelDir, preset, backend, system string
		maxNew                            int
		seed                              uint64
		p                                 generate.Params
	)
	cmd := &cobra.Command{
		Use:   "chat --model DIR",
		Short: "Chat with a trained model in the terminal",
		Long: `An interactive multi-turn chat. Each message is sent with the conversation so
far, serialized exactly as in training; when prompt plus max_new_tokens would
not fit the model's context, the oldest exchanges are dropped (and said so).
Type /clear to forget the conversation and /exit (or Ctrl-D) to leave.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if modelDir == "" {
				return errors.New("--model is required")
			}
			p, err := samplingParams(preset, p)
			if err != nil {
				return err
			}
			m, err := loadModel(cmd.Context(), modelDir, backend, slog.Default())
			if err != nil {
				return err
			}
			defer m.Close()
			if maxNew == 0 {
				maxNew = min(256, m.Config.BlockSize/2)
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "%s (context %d tokens, up to %d new). /clear forgets the conversation, /exit leaves.\n",
				m.Dir, m.Config.BlockSize, maxNew)
			chat := &generate.Chat{Options: chatfmt.Options{SystemPrompt: system}}
			sampler := generate.NewSampler(p, seed)
			in := bufio.NewScanner(cmd.InOrStdin())
			in.Buffer(make([]byte, 64<<10), 1<<20)
			for {
				fmt.Fprint(out, "\nyou> ")
				if !in.Scan() {
					fmt.Fprintln(out)
					return in.Err()
				}
				line := strings.TrimSpace(in.Text())
				switch line {
				case "":
					continue
				case "/exit", "/quit":
					return nil
				case "/clear":
					chat.Clear()
					fmt.Fprintln(out, "(conversation cleared)")
					continue
				}
				fmt.Fprint(out, "model> ")
				res, err := chat.Reply(cmd.Context(), m.Backend, m.Model, generate.ChatRequest{
					User: line, MaxNewTokens: maxNew, Sampler: sampler,
					Emit: func(text string) error { _, err := io.WriteString(out, text); return err },
				})
				fmt.Fprintln(out)
				if err != nil {
					if cmd.Context().Err() != nil {
						return err
					}
					if errors.Is(err, generate.ErrPromptTooLong) {
						fmt.Fprintf(out, "(error: %v)\n", err)
						continue
					}
					return err
				}
				if res.Dropped > 0 {
					fmt.Fprintf(out, "(dropped the %d oldest turns to fit the context)\n", res.Dropped)
				}
				if !res.Stopped {
					fmt.Fprintf(out, "(reply cut at max_new_tokens %d)\n", maxNew)
				}
			}
		},
	}
	f := cmd.Flags()
	f.StringVar(&modelDir, "model", "", "checkpoint or run directory, a MyPT checkpoint, or a name under checkpoints/ (alias --model_name)")
	f.StringVar(&system, "system", "", "system prompt (default: MyPT's \"You are MyPT.\")")
	f.IntVar(&maxNew, "max_new_tokens", 0, "tokens per reply at most (0: min(256, block_size/2))")
	addSamplingFlags(f, &p, &preset, &seed, generate.Params{Temperature: 0.7, TopK: 50, TopP: 0.9, RepetitionPenalty: 1.1})
	f.StringVar(&backend, "backend", "cpu", "backend plugin: a NAME or a path")
	f.SetNormalizeFunc(modelNameAlias)
	return cmd
}

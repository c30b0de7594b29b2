package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"

	"github.com/spf13/cobra"

	"github.com/mypt/mypt/core/chatfmt"
	"github.com/mypt/mypt/core/generate"
)

func newGenerateCmd() *cobra.Command {
	var (
		modelDir, prompt, preset, backend, system, user string
		mode                                            string
		maxNew                                          int
		seed                                            uint64
		chat, showInfo                                  bool
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
			switch mode {
			case "", "basic":
			case "qa":
				preset = "factual" // MyPT's generate_qa is generate_factual
			case "creative", "factual", "code":
				preset = mode // MyPT's modes use their presets' values, over the flags
			default:
				return fmt.Errorf("--mode %q: want basic, qa, creative, factual or code", mode)
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
			if showInfo {
				c := m.Config
				total, _ := m.Spec.NumParams()
				fmt.Fprintf(cmd.ErrOrStderr(), "model %s: %d params, n_layer %d, n_head %d, n_embd %d, block_size %d, vocab_size %d, %s/%s/%s; sampling temperature %g, top_k %d, top_p %g, repetition_penalty %g\n",
					m.Dir, total, c.NLayer, c.NHead, c.NEmbd, c.BlockSize, c.VocabSize, c.PosEncoding, c.MLPType, c.NormType,
					p.Temperature, p.TopK, p.TopP, p.RepetitionPenalty)
			}
			ids, err := m.Tokenizer.Encode(prompt)
			if err != nil {
				return fmt.Errorf("encode prompt: %w", err)
			}
			out := cmd.OutOrStdout()
			fmt.Fprint(out, prompt)
			stream := generate.NewTextStream(m.Tokenizer, func(text string) error {
				_, err := io.WriteString(out, text)
				return err
			})
			_, err = generate.Generate(cmd.Context(), m.Backend, generate.Request{
				Prompt:       generate.Int32IDs(ids),
				MaxNewTokens: maxNew,
				BlockSize:    m.Config.BlockSize,
				VocabSize:    m.Config.VocabSize,
				Stop:         generate.StopIDs(),
				Sampler:      generate.NewSampler(p, seed),
				Emit:         stream.Add,
			})
			if ferr := stream.Flush(); err == nil {
				err = ferr
			}
			fmt.Fprintln(out)
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&modelDir, "model", "", "checkpoint or run directory, a MyPT checkpoint, or a name under checkpoints/ (alias --model_name)")
	f.StringVar(&prompt, "prompt", "", "prompt text, used as written (no escape decoding, unlike MyPT)")
	f.StringVar(&mode, "mode", "", "MyPT's generation mode: basic (the sampling flags), qa or factual, creative, code (that preset's values, over the flags and --preset)")
	f.BoolVar(&showInfo, "show_info", false, "print the model's size and architecture and the sampling settings to stderr")
	f.BoolVar(&chat, "chat", false, "build the prompt from --system and --user with the training serialization")
	f.StringVar(&system, "system", "", "system prompt for --chat (default: MyPT's \"You are MyPT.\")")
	f.StringVar(&user, "user", "", "user message for --chat")
	f.IntVar(&maxNew, "max_new_tokens", 100, "tokens to generate at most")
	addSamplingFlags(f, &p, &preset, &seed, generate.Params{Temperature: 0.8, TopK: 50, TopP: 0.95, RepetitionPenalty: 1.1})
	f.StringVar(&backend, "backend", "cpu", "backend plugin: a NAME or a path")
	f.SetNormalizeFunc(modelNameAlias)
	return cmd
}

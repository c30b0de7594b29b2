package main

import (
	"fmt"
	"log/slog"
	"os"

	"github.com/spf13/cobra"
)

func newRootCmd() *cobra.Command {
	var logLevel string
	root := &cobra.Command{
		Use:           "mypt",
		Short:         "Fine-tune GPT-style models on chat conversations, with compute in backend plugins",
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(*cobra.Command, []string) error {
			var level slog.Level
			if err := level.UnmarshalText([]byte(logLevel)); err != nil {
				return fmt.Errorf("--log-level %q: want debug, info, warn or error", logLevel)
			}
			slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})))
			return nil
		},
	}
	defaultLevel := os.Getenv("MYPT_LOG_LEVEL")
	if defaultLevel == "" {
		defaultLevel = "info"
	}
	root.SetFlagErrorFunc(flagError)
	root.PersistentFlags().StringVar(&logLevel, "log-level", defaultLevel, "log level: debug, info, warn, error (env MYPT_LOG_LEVEL)")
	root.AddCommand(
		newDemoDataCmd(),
		newPrepareCmd(),
		newDatasetCmd(),
		newBackendsCmd(),
		newTrainCmd(),
		newGenerateCmd(),
		newChatCmd(),
		newServeCmd(),
		newConformanceCmd(),
		newBenchCmd(),
		newExportCmd(),
	)
	return root
}

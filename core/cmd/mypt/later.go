package main

import (
	"fmt"

	"github.com/spf13/cobra"
)

// notYetCmd is a command whose implementation a later issue delivers; it
// fails loudly (exit status 2) instead of pretending to work.
func notYetCmd(use, short, issue string) *cobra.Command {
	return &cobra.Command{
		Use:                use,
		Short:              short + " (not yet implemented: " + issue + ")",
		DisableFlagParsing: true,
		RunE: func(*cobra.Command, []string) error {
			return fmt.Errorf("%s: %w (tracked by %s)", use, errNotYet, issue)
		},
	}
}

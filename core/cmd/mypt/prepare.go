package main

import (
	"fmt"

	"github.com/spf13/cobra"
)

// Placeholder: replaced by the dataset work (issue 3).
func newPrepareCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "prepare",
		Short: "Prepare gold conversation JSONL into an episode-indexed dataset",
		RunE: func(*cobra.Command, []string) error {
			return fmt.Errorf("prepare: %w (issue 3)", errNotYet)
		},
	}
}

// Placeholder: replaced by the dataset work (issue 3).
func newDatasetCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "dataset",
		Short: "Inspect and validate episode-indexed datasets",
		RunE: func(*cobra.Command, []string) error {
			return fmt.Errorf("dataset: %w (issue 3)", errNotYet)
		},
	}
}

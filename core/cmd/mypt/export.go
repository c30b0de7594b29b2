package main

import "github.com/spf13/cobra"

// Placeholder until issue 5 delivers it.
func newExportCmd() *cobra.Command {
	return notYetCmd("export", "Export a checkpoint to another format (Hugging Face)", "issue 5")
}

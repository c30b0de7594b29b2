package main

import "github.com/spf13/cobra"

// Placeholder until issue 6 delivers it.
func newServeCmd() *cobra.Command {
	return notYetCmd("serve", "Serve the web chat and training pages", "issue 6")
}

package main

import "github.com/spf13/cobra"

// Placeholder until issue 6 delivers it.
func newChatCmd() *cobra.Command {
	return notYetCmd("chat", "Chat with a trained model in the terminal", "issue 6")
}

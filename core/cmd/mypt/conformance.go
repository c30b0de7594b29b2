package main

import "github.com/spf13/cobra"

// Placeholder until issue 7 delivers it.
func newConformanceCmd() *cobra.Command {
	return notYetCmd("conformance", "Certify a backend plugin against the protocol and the reference numerics", "issue 7")
}

package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/mypt/mypt/core/atomicfile"
	"github.com/mypt/mypt/core/demodata"
)

func newDemoDataCmd() *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "demo-data --output FILE",
		Short: "Write the demo's gold chat set (deterministic JSONL in MyPT's schema)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if output == "" || output == "-" {
				return demodata.Write(cmd.OutOrStdout())
			}
			if err := os.MkdirAll(filepath.Dir(output), 0o755); err != nil {
				return err
			}
			var buf bytes.Buffer
			if err := demodata.Write(&buf); err != nil {
				return err
			}
			if err := atomicfile.WriteFile(output, buf.Bytes(), 0o644); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %d conversations to %s\n", len(demodata.Conversations()), output)
			return nil
		},
	}
	cmd.Flags().StringVar(&output, "output", "", "file to write (default: stdout)")
	return cmd
}

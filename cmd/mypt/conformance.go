package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"regexp"
	"strings"

	"github.com/spf13/cobra"

	"github.com/mypt/mypt/conformance"
	"github.com/mypt/mypt/sdk/discovery"
)

func newConformanceCmd() *cobra.Command {
	var (
		backend, reference, reportPath, run string
		dtypes                              []string
		verbose, quiet                      bool
	)
	cmd := &cobra.Command{
		Use:   "conformance --backend NAME [--report report.json]",
		Short: "Certify a backend plugin against the protocol and the reference numerics",
		Long: `Run the conformance suite against a backend plugin: the protocol contract
(handshake, GetInfo, call order, InvalidArgument naming the field, state
streams, Shutdown), numerics against the PyTorch golden vectors for both
architectures, loss-mask semantics, gradient accumulation, determinism and
dropout, the KV cache, checkpoint portability to and from the CPU reference
backend, and robustness when the plugin dies.

Each check passes, fails or is skipped because the backend does not declare
the capability it needs. The table goes to stdout; --report writes every
result as JSON. The exit status is 1 when any check fails. See
docs/CONFORMANCE.md for every check and its tolerance.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			finder := discovery.FromEnvironment()
			path, err := finder.Resolve(backend)
			if err != nil {
				return err
			}
			opts := conformance.Options{ReferencePlugin: reference}
			if slog.Default().Enabled(context.Background(), slog.LevelDebug) {
				opts.Logger = slog.Default()
			}
			for _, list := range dtypes {
				for _, name := range strings.Split(list, ",") {
					d, ok := conformance.ParseDType(strings.ToLower(strings.TrimSpace(name)))
					if !ok {
						return fmt.Errorf("--dtype %q: want f32, bf16 or f16", name)
					}
					opts.DTypes = append(opts.DTypes, d)
				}
			}
			if run != "" {
				re, err := regexp.Compile(run)
				if err != nil {
					return fmt.Errorf("--run: %w", err)
				}
				opts.Filter = re.MatchString
			}
			if !quiet {
				errOut := cmd.ErrOrStderr()
				opts.Progress = func(done, total int, r conformance.Result) {
					fmt.Fprintf(errOut, "[%d/%d] %-4s %s\n", done, total, strings.ToUpper(string(r.Status)), r.Name)
				}
			}
			rep, err := conformance.Certify(cmd.Context(), path, opts)
			if err != nil {
				return err
			}
			if reportPath != "" {
				if err := writeReport(reportPath, rep); err != nil {
					return err
				}
			}
			rep.WriteTable(cmd.OutOrStdout(), verbose)
			if err := cmd.Context().Err(); err != nil {
				return fmt.Errorf("conformance run interrupted: %w", err)
			}
			if rep.Failed() {
				return fmt.Errorf("backend %s is not conformant: %d of %d checks failed", backend, rep.Summary.Failed, len(rep.Results))
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&backend, "backend", "", "backend plugin to certify: a NAME (mypt-backend-NAME) or a path")
	f.StringVar(&reportPath, "report", "", "also write the results as JSON to this file")
	f.StringVar(&reference, "reference", "", "CPU reference plugin for the portability checks (default: cpu, found like --backend)")
	f.StringVar(&run, "run", "", "run only the checks whose name matches this regular expression")
	f.StringSliceVar(&dtypes, "dtype", nil, "compute dtypes to check numerics in: f32, bf16, f16 (default: those the backend declares)")
	f.BoolVarP(&verbose, "verbose", "v", false, "print every failure line and what each check measured")
	f.BoolVarP(&quiet, "quiet", "q", false, "do not report progress on stderr")
	_ = cmd.MarkFlagRequired("backend")
	return cmd
}

func writeReport(path string, rep *conformance.Report) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("--report: %w", err)
	}
	if err := rep.WriteJSON(f); err != nil {
		f.Close()
		return fmt.Errorf("--report %s: %w", path, err)
	}
	return f.Close()
}

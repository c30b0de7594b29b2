package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/mypt/mypt/conformance"
	"github.com/mypt/mypt/core/checkpoint"
	"github.com/mypt/mypt/sdk"
	"github.com/mypt/mypt/sdk/discovery"
	pb "github.com/mypt/mypt/sdk/proto/backendv1"
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
backend (through a real checkpoint on disk), and robustness when the plugin
dies.

Each check passes, fails or is skipped because the backend does not declare
the capability it needs, and belongs to a profile (core, training, kv-cache,
packed, dropout, deterministic, frozen, portability, bf16, f16). A declared
profile is certified when none of its checks failed and some passed. The
table of checks and the table of profiles go to stdout; --report writes
every result as JSON. The exit status is 1 when any check fails or the
backend certifies no profile mypt can use (core). See docs/CONFORMANCE.md
for every check and its tolerance.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			finder := discovery.FromEnvironment()
			path, err := finder.Resolve(backend)
			if err != nil {
				return err
			}
			opts := conformance.Options{ReferencePlugin: reference,
				// the portability checks prove real checkpoint round trips, as mypt train resumes
				Checkpointer: diskCheckpointer{log: slog.Default()}}
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
			if rep.Summary.Failed > 0 {
				return fmt.Errorf("backend %s is not conformant: %d of %d checks failed", backend, rep.Summary.Failed, len(rep.Results))
			}
			if rep.Failed() {
				return fmt.Errorf("backend %s is not usable by mypt: %s", backend, rep.Unusable)
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

// diskCheckpointer hands the portability checks' state over through a real
// checkpoint: written by core/checkpoint as mypt train saves, opened and read
// back as a resumed run loads it.
type diskCheckpointer struct{ log *slog.Logger }

func (diskCheckpointer) String() string { return "a checkpoint on disk (core/checkpoint)" }

func (d diskCheckpointer) Store(_ context.Context, spec *pb.ModelSpec, write func(sdk.StateWriter) error) (conformance.StoredState, error) {
	tmp, err := os.MkdirTemp("", "mypt-conformance-")
	if err != nil {
		return nil, fmt.Errorf("checkpoint directory: %w", err)
	}
	st, err := d.store(filepath.Join(tmp, "checkpoint"), spec, write)
	if err != nil {
		os.RemoveAll(tmp)
		return nil, err
	}
	st.tmp = tmp
	return st, nil
}

func (d diskCheckpointer) store(dir string, spec *pb.ModelSpec, write func(sdk.StateWriter) error) (*storedCheckpoint, error) {
	layout := checkpoint.LayoutFromModelSpec(spec, true)
	w, err := checkpoint.NewWriter(dir, layout, checkpoint.WithLogger(d.log))
	if err != nil {
		return nil, err
	}
	if err := write(w); err != nil {
		w.Abort()
		return nil, fmt.Errorf("stream the state into a checkpoint: %w", err)
	}
	config, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(spec)
	if err != nil {
		w.Abort()
		return nil, fmt.Errorf("model spec as config.json: %w", err)
	}
	if err := w.Commit(checkpoint.Meta{Config: json.RawMessage(config)}); err != nil {
		return nil, err
	}
	ck, err := checkpoint.Open(dir)
	if err != nil {
		return nil, err
	}
	r, err := ck.NewStateReader(layout)
	if err != nil {
		ck.Close()
		return nil, fmt.Errorf("read the checkpoint back: %w", err)
	}
	return &storedCheckpoint{StateReader: r, ck: ck}, nil
}

// storedCheckpoint reads a checkpoint back; Close removes it.
type storedCheckpoint struct {
	*checkpoint.StateReader
	ck  *checkpoint.Checkpoint
	tmp string
}

func (s *storedCheckpoint) Close() error {
	err := s.ck.Close()
	if rmErr := os.RemoveAll(s.tmp); err == nil {
		err = rmErr
	}
	return err
}

package train_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/mypt/mypt/backends/cpu"
	"github.com/mypt/mypt/core/config"
	"github.com/mypt/mypt/core/dataset"
	"github.com/mypt/mypt/core/train"
	"github.com/mypt/mypt/sdk"
	pb "github.com/mypt/mypt/sdk/proto/backendv1"
	"github.com/mypt/mypt/sdk/sdktesting"
)

// oneHead is a backend that refuses, at Configure, any model with more than
// one attention head, as a backend with a narrower kernel might.
type oneHead struct{ sdk.Backend }

func (o oneHead) Configure(ctx context.Context, req *pb.ConfigureRequest) (*pb.ConfigureResponse, error) {
	if n := req.GetModel().GetNHead(); n > 1 {
		return nil, sdk.InvalidArgument("model.n_head", "this backend runs one attention head, got %d", n)
	}
	return o.Backend.Configure(ctx, req)
}

// TestRefusedRunLeavesNoRunDirectory: a run stopped before training — by the
// backend refusing Configure, by a --model base that does not match the
// configured model, or by a dataset without training data — creates no run
// directory, and its error names the cause.
func TestRefusedRunLeavesNoRunDirectory(t *testing.T) {
	valOnly, err := dataset.Open(writeEvalSet(t, filepath.Join(t.TempDir(), "valonly"), 3, 5, 96, "val"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { valOnly.Close() })
	for _, c := range []struct {
		name string
		edit func(*train.Run)
		want []string
		code codes.Code // the status the error carries; OK for none
	}{
		{
			name: "configure refused",
			edit: func(r *train.Run) {
				// Crossing gRPC and the sdk client, as a plugin's refusal does.
				r.Backend = sdktesting.Connect(t, oneHead{cpu.New(cpu.Options{Threads: 1})})
			},
			want: []string{"configure backend", "model.n_head: this backend runs one attention head, got 2"},
			code: codes.InvalidArgument,
		},
		{
			name: "mismatching base model",
			edit: func(r *train.Run) { r.InitFrom = filepath.Join("testdata", "reference", "init_llama") },
			want: []string{"initialise from " + filepath.Join("testdata", "reference", "init_llama"), "does not match the configured model"},
		},
		{
			name: "no training data",
			edit: func(r *train.Run) { r.Data = valOnly },
			want: []string{"has no training data"},
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			run := tinyRun(t, sdktesting.Connect(t, cpu.New(cpu.Options{Threads: 1})), func(*config.Config) {})
			run.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
			c.edit(run)
			sum, err := run.Train(context.Background())
			if err == nil || sum != nil {
				t.Fatalf("Train = %v, %v; want an error and no summary", sum, err)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			if c.code != codes.OK && sdk.Code(err) != c.code {
				t.Errorf("error carries code %v, want %v", sdk.Code(err), c.code)
			}
			if _, err := os.Stat(run.OutDir); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("run directory %s: stat error %v, want it not to exist", run.OutDir, err)
			}
		})
	}
}

// TestRefusedConfigureKeepsAnExistingRun: a resumable run whose restart the
// backend refuses is left as it was, to be resumed with a config the backend
// accepts.
func TestRefusedConfigureKeepsAnExistingRun(t *testing.T) {
	run := tinyRun(t, sdktesting.Connect(t, cpu.New(cpu.Options{Threads: 1})), func(c *config.Config) { c.MaxIters = 4 })
	run.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	run.StopAfter = 2
	if _, err := run.Train(context.Background()); err != nil {
		t.Fatal(err)
	}
	before := snapshot(t, run.OutDir)

	refused := *run
	refused.Backend = sdktesting.Connect(t, oneHead{cpu.New(cpu.Options{Threads: 1})})
	if _, err := refused.Train(context.Background()); sdk.Code(err) != codes.InvalidArgument {
		t.Fatalf("restart on a refusing backend: %v, want InvalidArgument", err)
	}
	if after := snapshot(t, run.OutDir); after != before {
		t.Errorf("the refused restart changed the run directory:\nbefore:\n%s\nafter:\n%s", before, after)
	}

	run.StopAfter = 0
	sum, err := run.Train(context.Background())
	if err != nil || sum.StartStep != 2 || sum.EndStep != 4 {
		t.Fatalf("resume after the refusal: %+v, %v; want steps 2..4", sum, err)
	}
}

// snapshot lists a directory tree's files with their contents' SHA-256, for comparing.
func snapshot(t *testing.T, dir string) string {
	t.Helper()
	var sb strings.Builder
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		fmt.Fprintf(&sb, "%s %x\n", rel, sha256.Sum256(b))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return sb.String()
}

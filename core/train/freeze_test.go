package train_test

import (
	"context"
	"errors"
	"io"
	"math"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/mypt/mypt/backends/cpu"
	"github.com/mypt/mypt/core/config"
	"github.com/mypt/mypt/sdk"
	pb "github.com/mypt/mypt/sdk/proto/backendv1"
	"github.com/mypt/mypt/sdk/sdktesting"
)

// readParams drains a state stream into name → values.
func readParams(t *testing.T, r sdk.StateReader) map[string][]float32 {
	t.Helper()
	out := map[string][]float32{}
	for {
		tn, err := r.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		if tn.Role != pb.TensorRole_TENSOR_ROLE_PARAM {
			continue
		}
		if tn.DType != pb.DType_DTYPE_F32 {
			t.Fatalf("%s stored as %v", tn.Name, tn.DType)
		}
		v, err := sdk.F32Values(tn.Data)
		if err != nil {
			t.Fatal(err)
		}
		out[tn.Name] = v
	}
}

func sameBits(a, b []float32) bool {
	return slices.EqualFunc(a, b, func(x, y float32) bool { return math.Float32bits(x) == math.Float32bits(y) })
}

// TestFreezeLayers trains with freeze_layers 1: block 0's tensors end the run bit-identical
// to their initial values in the final checkpoint, block 1's (and the embeddings) move.
func TestFreezeLayers(t *testing.T) {
	run := tinyRun(t, sdktesting.Connect(t, cpu.New(cpu.Options{Threads: 1})), func(c *config.Config) {
		c.NLayer, c.FreezeLayers, c.MaxIters, c.EvalInterval = 2, 1, 6, 3
	})
	if _, err := run.Train(context.Background()); err != nil {
		t.Fatal(err)
	}
	init := readParams(t, run.Spec.InitState(run.Config.Seed))
	// The run ends by saving its final state to latest.
	final := readParams(t, checkpointParams(t, run, filepath.Join(run.OutDir, "latest")))
	frozen, moved := 0, 0
	for _, p := range run.Spec.Params {
		got, want := final[p.Name], init[p.Name]
		if got == nil || want == nil {
			t.Fatalf("%s missing (final %v, init %v)", p.Name, got != nil, want != nil)
		}
		same := sameBits(got, want)
		switch {
		case strings.HasPrefix(p.Name, "blocks.0."):
			frozen++
			if !same {
				t.Errorf("frozen %s changed", p.Name)
			}
		case strings.HasPrefix(p.Name, "blocks.1.") || p.Name == "token_embedding_table.weight":
			moved++
			if same {
				t.Errorf("trainable %s did not change", p.Name)
			}
		}
	}
	if frozen == 0 || moved == 0 {
		t.Fatalf("checked %d frozen and %d trainable tensors", frozen, moved)
	}
}

// noFreezing is a backend that does not declare FEATURE_FROZEN_PARAMS.
type noFreezing struct{ sdk.Backend }

func (n noFreezing) GetInfo(ctx context.Context, req *pb.GetInfoRequest) (*pb.GetInfoResponse, error) {
	info, err := n.Backend.GetInfo(ctx, req)
	if err == nil {
		info.Capabilities.Features = slices.DeleteFunc(info.Capabilities.Features, func(f pb.Feature) bool {
			return f == pb.Feature_FEATURE_FROZEN_PARAMS
		})
	}
	return info, err
}

// TestFreezingNeedsTheFeature: a run that freezes on a backend without the feature stops
// before training with an error saying so.
func TestFreezingNeedsTheFeature(t *testing.T) {
	run := tinyRun(t, noFreezing{sdktesting.Connect(t, cpu.New(cpu.Options{Threads: 1}))}, func(c *config.Config) {
		c.FreezeEmbeddings = true
	})
	_, err := run.Train(context.Background())
	if err == nil || !strings.Contains(err.Error(), "FEATURE_FROZEN_PARAMS") || !strings.Contains(err.Error(), "freeze_embeddings true") {
		t.Fatalf("err = %v, want a refusal naming FEATURE_FROZEN_PARAMS", err)
	}
}

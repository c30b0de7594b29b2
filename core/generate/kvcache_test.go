package generate

import (
	"context"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"

	"github.com/mypt/mypt/core/chatfmt"
	"github.com/mypt/mypt/core/config"
	"github.com/mypt/mypt/core/model"
	"github.com/mypt/mypt/sdk"
	pb "github.com/mypt/mypt/sdk/proto/backendv1"
)

// cpuPlugin builds the CPU backend plugin into a temporary directory
// (MYPT_TEST_CPU_PLUGIN names a prebuilt one instead).
func cpuPlugin(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("MYPT_TEST_CPU_PLUGIN"); p != "" {
		return p
	}
	if testing.Short() {
		t.Skip("builds and runs the CPU backend plugin; skipped with -short")
	}
	out := filepath.Join(t.TempDir(), "mypt-backend-cpu")
	cmd := exec.Command("go", "build", "-o", out, "github.com/mypt/mypt/cmd/mypt-backend-cpu")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build CPU plugin: %v\n%s", err, b)
	}
	return out
}

// peakedState initialises spec's parameters with a larger spread than
// training does, so that the logits of the random model are far from ties
// and greedy choices do not hinge on rounding.
func peakedState(spec model.Spec, seed int64) sdk.StateReader {
	s := spec
	s.Params = slices.Clone(spec.Params)
	for i := range s.Params {
		s.Params[i].Std *= 20
	}
	return s.InitState(seed)
}

// TestKVCacheGreedyEqualsFullForward generates greedily through Prefill and
// Decode (the KV cache) and by re-running the whole sequence through
// Evaluate at every step, for both model styles, and requires the same ids.
func TestKVCacheGreedyEqualsFullForward(t *testing.T) {
	plugin := cpuPlugin(t)
	ctx := context.Background()
	tok := gpt2(t)
	prompt, err := tok.Encode(chatfmt.ReplyPrompt([]chatfmt.Turn{{Role: chatfmt.RoleUser, Content: "Reverse the word: winter"}}, chatfmt.Options{}))
	if err != nil {
		t.Fatal(err)
	}
	styles := map[string]func(*config.Config){
		"gpt2": func(c *config.Config) {
			c.PosEncoding, c.MLPType, c.NormType, c.Bias, c.TieWeights = "learned", "gelu", "layernorm", true, true
		},
		"llama": func(c *config.Config) {
			c.PosEncoding, c.MLPType, c.NormType, c.Bias, c.TieWeights = "rope", "swiglu", "rmsnorm", false, false
		},
	}
	for name, style := range styles {
		t.Run(name, func(t *testing.T) {
			cfg := config.Default()
			cfg.BlockSize, cfg.NEmbd, cfg.NHead, cfg.NLayer, cfg.Dropout = 64, 64, 4, 2, 0
			style(&cfg)
			spec := model.NewSpec(cfg)
			b, err := sdk.Start(ctx, plugin, sdk.StartOptions{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			if _, err := b.Configure(ctx, &pb.ConfigureRequest{Model: spec.Proto(), Seed: 1,
				Optimizer: &pb.OptimizerSpec{Beta1: cfg.Beta1, Beta2: cfg.Beta2, Eps: cfg.AdamEps}}); err != nil {
				t.Fatal(err)
			}
			if _, err := b.SetState(ctx, peakedState(spec, 7)); err != nil {
				t.Fatal(err)
			}
			maxNew := cfg.BlockSize - len(prompt)
			cached, err := Generate(ctx, b, Request{
				Prompt: Int32IDs(prompt), MaxNewTokens: maxNew, BlockSize: cfg.BlockSize,
				Sampler: NewSampler(Params{Temperature: 0}, 1), // no stop ids: run the whole context
			})
			if err != nil {
				t.Fatal(err)
			}
			full, err := GreedyFullForward(ctx, b, Int32IDs(prompt), maxNew, cfg.BlockSize, cfg.VocabSize, nil)
			if err != nil {
				t.Fatal(err)
			}
			if len(cached) != maxNew {
				t.Fatalf("cached generation made %d ids, want %d", len(cached), maxNew)
			}
			if !slices.Equal(cached, full) {
				t.Fatalf("KV-cache greedy differs from full re-forward greedy\ncached %v\nfull   %v", cached, full)
			}
			if distinct := len(slices.Compact(slices.Sorted(slices.Values(cached)))); distinct < 3 {
				t.Logf("note: only %d distinct ids generated", distinct)
			}

			// With stop ids, generation ends right after the first one.
			stop := map[int32]bool{cached[5]: true}
			got, err := Generate(ctx, b, Request{Prompt: Int32IDs(prompt), MaxNewTokens: maxNew, BlockSize: cfg.BlockSize,
				Stop: stop, Sampler: NewSampler(Params{Temperature: 0}, 1)})
			if err != nil {
				t.Fatal(err)
			}
			want := cached[:slices.Index(cached, cached[5])+1]
			if !slices.Equal(got, want) {
				t.Errorf("with stop id %d: got %v, want %v", cached[5], got, want)
			}

			// A backend without a KV cache generates by full re-forward: the same ids,
			// sampled at temperature 0.7 with the same seed as through the cache.
			sampled := func(b sdk.Backend) []int32 {
				t.Helper()
				out, err := Generate(ctx, b, Request{Prompt: Int32IDs(prompt), MaxNewTokens: 20, BlockSize: cfg.BlockSize,
					VocabSize: cfg.VocabSize, Sampler: NewSampler(Params{Temperature: 0.7, TopK: 50, TopP: 0.9}, 3)})
				if err != nil {
					t.Fatal(err)
				}
				return out
			}
			if viaCache, viaEval := sampled(b), sampled(noKVCache{b}); !slices.Equal(viaCache, viaEval) {
				t.Errorf("sampling without a KV cache differs\ncache    %v\nevaluate %v", viaCache, viaEval)
			}
		})
	}
}

// noKVCache is a backend of profile core only: the KV-cache calls answer UNIMPLEMENTED.
type noKVCache struct{ sdk.Backend }

func (noKVCache) Prefill(context.Context, *pb.PrefillRequest) (*pb.PrefillResponse, error) {
	return nil, sdk.Unimplemented("Prefill")
}

package generate

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/mypt/mypt/core/checkpoint"
	"github.com/mypt/mypt/core/config"
	"github.com/mypt/mypt/core/model"
	"github.com/mypt/mypt/core/tokenizer"
	"github.com/mypt/mypt/sdk"
	pb "github.com/mypt/mypt/sdk/proto/backendv1"
)

// Model is a checkpoint loaded into a backend for inference.
type Model struct {
	Dir       string // the checkpoint directory actually loaded
	Config    config.Config
	Spec      model.Spec
	Tokenizer *tokenizer.Tokenizer
}

// ResolveCheckpoint turns a --model argument into a checkpoint directory: a
// checkpoint itself, or a run directory, whose best/ is preferred over
// latest/.
func ResolveCheckpoint(dir string) (string, error) {
	for _, d := range []string{dir, filepath.Join(dir, "best"), filepath.Join(dir, "latest")} {
		if _, err := os.Stat(filepath.Join(d, checkpoint.ManifestFile)); err == nil {
			return d, nil
		}
	}
	return "", fmt.Errorf("%s is neither a checkpoint nor a run directory with best/ or latest/", dir)
}

// Load configures b with the checkpoint's model and streams its parameters in.
func Load(ctx context.Context, dir string, b sdk.Backend) (*Model, error) {
	dir, err := ResolveCheckpoint(dir)
	if err != nil {
		return nil, err
	}
	ck, err := checkpoint.Open(dir)
	if err != nil {
		return nil, err
	}
	defer ck.Close()
	cfg, _, err := config.Load(config.Sources{File: filepath.Join(dir, checkpoint.ConfigFile), Data: ck.ConfigJSON()})
	if err != nil {
		return nil, fmt.Errorf("checkpoint %s: %w", dir, err)
	}
	tok, err := tokenizer.Parse(ck.TokenizerJSON(), cfg.VocabSize)
	if err != nil {
		return nil, fmt.Errorf("checkpoint %s: tokenizer: %w", dir, err)
	}
	// Dropout and NEFTune act only in training: inference asks no backend for them (one
	// without FEATURE_DROPOUT can still serve a model trained with dropout).
	infer := cfg
	infer.Dropout, infer.NeftuneAlpha = 0, 0
	spec := model.NewSpec(infer)
	if _, err := b.Configure(ctx, &pb.ConfigureRequest{
		Model:     spec.Proto(),
		Optimizer: &pb.OptimizerSpec{Beta1: cfg.Beta1, Beta2: cfg.Beta2, Eps: cfg.AdamEps},
		Seed:      uint64(cfg.Seed),
	}); err != nil {
		return nil, fmt.Errorf("configure backend: %w", err)
	}
	layout := checkpoint.LayoutFromModelSpec(spec.Proto(), false)
	if err := ck.Check(layout); err != nil {
		return nil, fmt.Errorf("checkpoint %s: %w", dir, err)
	}
	r, err := ck.NewStateReader(layout)
	if err != nil {
		return nil, err
	}
	if _, err := b.SetState(ctx, r); err != nil {
		return nil, fmt.Errorf("load parameters: %w", err)
	}
	return &Model{Dir: dir, Config: cfg, Spec: spec, Tokenizer: tok}, nil
}

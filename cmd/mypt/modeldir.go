package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/spf13/pflag"

	"github.com/mypt/mypt/core/generate"
	"github.com/mypt/mypt/core/myptckpt"
	"github.com/mypt/mypt/sdk"
	"github.com/mypt/mypt/sdk/discovery"
)

// checkpointDir turns a --model argument into one of our checkpoint
// directories: a checkpoint or run directory as it is, or a MyPT checkpoint
// (model.pt + config.json) converted into a temporary directory that cleanup
// removes. A bare name that exists only under checkpoints/ means that
// directory, as MyPT's --model_name and --init_from_model do.
func checkpointDir(modelDir string, log *slog.Logger) (dir string, cleanup func(), err error) {
	if alt := myptName(modelDir); alt != modelDir {
		log.Info("using MyPT's checkpoint directory", "model", modelDir, "dir", alt)
		modelDir = alt
	}
	if !myptckpt.IsMyPTCheckpoint(modelDir) {
		dir, err := generate.ResolveCheckpoint(modelDir)
		return dir, func() {}, err
	}
	tmp, err := os.MkdirTemp("", "mypt-import-")
	if err != nil {
		return "", nil, err
	}
	cleanup = func() { os.RemoveAll(tmp) }
	dir = filepath.Join(tmp, "ckpt")
	if _, err := myptckpt.Convert(modelDir, dir, myptckpt.WithLogger(log)); err != nil {
		cleanup()
		return "", nil, fmt.Errorf("import MyPT checkpoint %s: %w", modelDir, err)
	}
	log.Info("imported MyPT checkpoint", "from", modelDir)
	return dir, cleanup, nil
}

// loadedModel is a checkpoint loaded into a running backend plugin.
type loadedModel struct {
	*generate.Model
	Backend *sdk.Client
	close   func()
}

// Close stops the plugin and removes any temporary import.
func (m *loadedModel) Close() { m.close() }

// startBackend finds the plugin of the named backend (sdk/discovery) and starts it.
func startBackend(ctx context.Context, backend string, log *slog.Logger) (*sdk.Client, error) {
	path, err := discovery.FromEnvironment().Resolve(backend)
	if err != nil {
		return nil, err
	}
	return sdk.Start(ctx, path, sdk.StartOptions{Logger: log})
}

// loadModel resolves modelDir (see checkpointDir), starts the backend plugin
// and loads the checkpoint into it.
func loadModel(ctx context.Context, modelDir, backend string, log *slog.Logger) (*loadedModel, error) {
	dir, cleanup, err := checkpointDir(modelDir, log)
	if err != nil {
		return nil, err
	}
	client, err := startBackend(ctx, backend, log)
	if err != nil {
		cleanup()
		return nil, err
	}
	m, err := generate.Load(ctx, dir, client)
	if err != nil {
		client.Close()
		cleanup()
		return nil, err
	}
	log.Debug("loaded", "checkpoint", m.Dir, "backend", backend)
	return &loadedModel{Model: m, Backend: client, close: func() { client.Close(); cleanup() }}, nil
}

// samplingParams applies a named preset over p (keeping p's penalty
// window) and defaults the window to MyPT's 256.
func samplingParams(preset string, p generate.Params) (generate.Params, error) {
	if preset != "" {
		pp, err := generate.Preset(preset)
		if err != nil {
			return p, err
		}
		pp.PenaltyWindow = p.PenaltyWindow
		p = pp
	}
	if p.PenaltyWindow <= 0 {
		p.PenaltyWindow = 256
	}
	return p, nil
}

// addSamplingFlags adds MyPT generate.py's sampling flags with the given
// defaults.
func addSamplingFlags(f *pflag.FlagSet, p *generate.Params, preset *string, seed *uint64, def generate.Params) {
	f.Float64Var(&p.Temperature, "temperature", def.Temperature, "softmax temperature; 0 = greedy")
	f.IntVar(&p.TopK, "top_k", def.TopK, "keep the k most likely tokens (0: off)")
	f.Float64Var(&p.TopP, "top_p", def.TopP, "nucleus sampling threshold (1: off)")
	f.Float64Var(&p.RepetitionPenalty, "repetition_penalty", def.RepetitionPenalty, "penalty for recent tokens (1: off)")
	f.IntVar(&p.PenaltyWindow, "penalty_window", 256, "recent tokens the repetition penalty looks at")
	f.StringVar(preset, "preset", "", "chat, creative, factual, code or deterministic (overrides the four sampling flags)")
	f.Uint64Var(seed, "seed", 1337, "sampling seed")
}

package train

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/mypt/mypt/core/checkpoint"
	pb "github.com/mypt/mypt/sdk/proto/backendv1"
)

// isCheckpoint reports whether dir holds a checkpoint.
func isCheckpoint(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, checkpoint.ManifestFile))
	return err == nil
}

// saveCheckpoint streams the backend's parameters and AdamW moments into an
// atomically written checkpoint directory.
func (r *Run) saveCheckpoint(ctx context.Context, dir string, st *state) error {
	w, err := checkpoint.NewWriter(dir, checkpoint.LayoutFromModelSpec(r.Spec.Proto(), true))
	if err != nil {
		return err
	}
	if err := r.Backend.GetState(ctx, &pb.GetStateRequest{}, w); err != nil {
		w.Abort()
		return fmt.Errorf("stream state out of the backend: %w", err)
	}
	err = w.Commit(checkpoint.Meta{
		Config:        r.Config.GPTConfig(),
		Tokenizer:     json.RawMessage(r.TokenizerState),
		TrainingState: st,
	})
	if err != nil {
		w.Abort()
	}
	return err
}

// loadCheckpoint pushes a checkpoint's parameters (and, with optimizer,
// its AdamW moments) into the backend; it returns the run state recorded
// with it when optimizer is set.
func (r *Run) loadCheckpoint(ctx context.Context, dir string, optimizer bool) (*state, error) {
	ck, err := checkpoint.Open(dir)
	if err != nil {
		return nil, err
	}
	defer ck.Close()
	layout := checkpoint.LayoutFromModelSpec(r.Spec.Proto(), optimizer)
	if err := ck.Check(layout); err != nil {
		return nil, fmt.Errorf("checkpoint %s does not match the configured model: %w", dir, err)
	}
	sr, err := ck.NewStateReader(layout)
	if err != nil {
		return nil, err
	}
	if _, err := r.Backend.SetState(ctx, sr); err != nil {
		return nil, fmt.Errorf("stream state into the backend: %w", err)
	}
	if !optimizer {
		return nil, nil
	}
	var st state
	if err := ck.TrainingState(&st); err != nil {
		return nil, fmt.Errorf("checkpoint %s: training state: %w", dir, err)
	}
	st.OptimizerStep = ck.OptimizerSteps()
	return &st, nil
}

package myptckpt

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"path/filepath"
	"slices"

	"github.com/mypt/mypt/core/checkpoint"
	"github.com/mypt/mypt/core/config"
	"github.com/mypt/mypt/core/model"
	"github.com/mypt/mypt/sdk"
	pb "github.com/mypt/mypt/sdk/proto/backendv1"
)

// LMHeadName is the LM head weight, which tied MyPT models still save.
const LMHeadName = "lm_head.weight"

// Config parses the checkpoint's config.json with mypt's config loader (MyPT
// GPTConfig keys, validated).
func (c *Checkpoint) Config() (config.Config, error) {
	cfg, _, err := config.Load(config.Sources{File: filepath.Join(c.dir, ConfigFile), Data: c.config})
	if err != nil {
		return config.Config{}, fmt.Errorf("MyPT checkpoint %s: %w", c.dir, err)
	}
	return cfg, nil
}

// Step returns training_state.json's "step", or -1 if unknown.
func (c *Checkpoint) Step() int64 {
	var st struct {
		Step *int64 `json:"step"`
	}
	if c.trainState == nil || json.Unmarshal(c.trainState, &st) != nil || st.Step == nil {
		return -1
	}
	return *st.Step
}

// Check verifies that model.pt holds exactly the parameters the config's
// model has, with the same shapes, and that a tied model's saved
// lm_head.weight equals token_embedding_table.weight.
func (c *Checkpoint) Check(spec model.Spec) error {
	want := map[string][]int64{}
	for _, p := range spec.Proto().GetParams() {
		want[p.GetName()] = p.GetShape()
	}
	if spec.TieWeights {
		if _, ok := c.tensors[LMHeadName]; ok {
			want[LMHeadName] = want[checkpoint.TiedName]
		}
	}
	extra := map[string]bool{}
	for _, n := range c.names {
		if _, ok := want[n]; !ok {
			extra[n] = true
		}
	}
	if len(extra) > 0 {
		return fmt.Errorf("MyPT checkpoint %s: model.pt has tensors the config's model does not: %v", c.dir, sortedNames(extra))
	}
	order := []string{}
	for _, p := range spec.Proto().GetParams() {
		order = append(order, p.GetName())
	}
	if _, ok := want[LMHeadName]; ok && spec.TieWeights {
		order = append(order, LMHeadName)
	}
	for _, n := range order {
		shape := want[n]
		t, ok := c.tensors[n]
		if !ok {
			return fmt.Errorf("MyPT checkpoint %s: model.pt lacks %q", c.dir, n)
		}
		if !slices.Equal(t.shape, shape) {
			return fmt.Errorf("MyPT checkpoint %s: %q has shape %v, the config's model wants %v", c.dir, n, t.shape, shape)
		}
	}
	if spec.TieWeights {
		if _, ok := c.tensors[LMHeadName]; ok {
			a, _, err := c.Tensor(checkpoint.TiedName)
			if err != nil {
				return err
			}
			b, _, err := c.Tensor(LMHeadName)
			if err != nil {
				return err
			}
			for i := range a {
				if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
					return fmt.Errorf("MyPT checkpoint %s: tie_weights is set but %s and %s differ at element %d (%g vs %g)",
						c.dir, checkpoint.TiedName, LMHeadName, i, a[i], b[i])
				}
			}
		}
	}
	return nil
}

// ConvertOption configures Convert.
type ConvertOption func(*convertOptions)

type convertOptions struct{ log *slog.Logger }

// WithLogger sets the logger for Convert's progress messages.
func WithLogger(l *slog.Logger) ConvertOption { return func(o *convertOptions) { o.log = l } }

// Convert reads the MyPT checkpoint in srcDir and writes it as a mypt
// checkpoint to dstDir (atomically, via checkpoint.Writer): parameters as
// float32 (bf16/fp16 widened exactly), config.json as mypt's GPTConfig,
// tokenizer.json verbatim, and a training_state.json recording the source.
// It returns the parsed config.
func Convert(srcDir, dstDir string, opts ...ConvertOption) (config.Config, error) {
	o := convertOptions{log: slog.Default()}
	for _, f := range opts {
		f(&o)
	}
	c, err := Open(srcDir)
	if err != nil {
		return config.Config{}, err
	}
	defer c.Close()
	cfg, err := c.Config()
	if err != nil {
		return config.Config{}, err
	}
	spec := model.NewSpec(cfg)
	if err := c.Check(spec); err != nil {
		return config.Config{}, err
	}
	layout := checkpoint.LayoutFromModelSpec(spec.Proto(), false)
	w, err := checkpoint.NewWriter(dstDir, layout, checkpoint.WithLogger(o.log))
	if err != nil {
		return config.Config{}, err
	}
	for _, ts := range layout.Tensors {
		vals, shape, err := c.Tensor(ts.Name)
		if err != nil {
			w.Abort()
			return config.Config{}, err
		}
		if err := w.WriteTensor(sdk.F32Tensor(ts.Name, pb.TensorRole_TENSOR_ROLE_PARAM, shape, vals)); err != nil {
			w.Abort()
			return config.Config{}, fmt.Errorf("write %s: %w", ts.Name, err)
		}
	}
	abs, _ := filepath.Abs(srcDir)
	state := map[string]any{
		"imported_from":           "mypt",
		"source_dir":              abs,
		"source_checkpoint_dtype": c.CheckpointDType,
		"source_step":             c.Step(),
	}
	meta := checkpoint.Meta{Config: cfg.GPTConfig(), TrainingState: state}
	if len(c.tokenizer) > 0 {
		if !json.Valid(c.tokenizer) {
			w.Abort()
			return config.Config{}, fmt.Errorf("MyPT checkpoint %s: tokenizer.json is not valid JSON", srcDir)
		}
		meta.Tokenizer = json.RawMessage(c.tokenizer)
	}
	if err := w.Commit(meta); err != nil {
		return config.Config{}, err
	}
	o.log.Info("imported MyPT checkpoint", "from", srcDir, "to", dstDir, "params", len(layout.Tensors), "stored_dtype", c.CheckpointDType)
	return cfg, nil
}

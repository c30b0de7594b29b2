package checkpoint

import (
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"

	"github.com/mypt/mypt/sdk"
	pb "github.com/mypt/mypt/sdk/proto/backendv1"
)

// Checkpoint is an opened checkpoint directory. Its JSON files are read and
// verified by Open; tensors are read one at a time on demand, each checked
// against its CRC-32 as it is read. Close releases the files.
type Checkpoint struct {
	dir            string
	model          *stReader
	optimizer      *stReader // nil without optimizer.safetensors
	layout         Layout    // as stored
	man            *manifest
	config         []byte
	tokenizer      []byte
	trainingState  []byte
	optimizerSteps uint64
}

type stReader struct {
	name string
	f    *os.File
	h    *stHeader
	sums safetensorsSums
}

// Open validates the checkpoint in dir: manifest, JSON files (checksums and
// syntax), safetensors headers (layout, sizes, checksums) and the pairing of
// optimizer moments with parameters. If dir is missing but a write to it was
// interrupted between its two renames, the complete previous checkpoint is
// opened from where it was left aside.
func Open(dir string) (*Checkpoint, error) {
	dir = filepath.Clean(dir)
	if old, ok := backupOf(dir); ok {
		slog.Warn("checkpoint: directory missing after an interrupted write; opening the previous checkpoint", "dir", dir, "from", old)
		dir = old
	}
	c := &Checkpoint{dir: dir}
	if err := c.open(); err != nil {
		c.Close()
		return nil, fmt.Errorf("checkpoint %s: %w", dir, err)
	}
	return c, nil
}

func (c *Checkpoint) open() error {
	if st, err := os.Stat(c.dir); err != nil {
		return err
	} else if !st.IsDir() {
		return errors.New("not a directory")
	}
	m, err := readManifest(c.dir)
	if err != nil {
		return err
	}
	c.man = m
	if c.config, err = m.readVerified(c.dir, ConfigFile); err != nil {
		return err
	}
	if c.trainingState, err = m.readVerified(c.dir, TrainingStateFile); err != nil {
		return err
	}
	if _, ok := m.Files[TokenizerFile]; ok {
		if c.tokenizer, err = m.readVerified(c.dir, TokenizerFile); err != nil {
			return err
		}
	}
	var cfg map[string]json.RawMessage
	if err := json.Unmarshal(c.config, &cfg); err != nil {
		return fmt.Errorf("%s: %w", ConfigFile, err)
	}
	if c.tokenizer != nil && !json.Valid(c.tokenizer) {
		return fmt.Errorf("%s is not valid JSON", TokenizerFile)
	}
	var env struct {
		FormatVersion  *int    `json:"format_version"`
		OptimizerSteps *uint64 `json:"optimizer_steps"`
	}
	if err := json.Unmarshal(c.trainingState, &env); err != nil {
		return fmt.Errorf("%s: %w", TrainingStateFile, err)
	}
	if env.FormatVersion == nil || *env.FormatVersion < 1 || *env.FormatVersion > FormatVersion {
		return fmt.Errorf("%s: format_version must be 1..%d", TrainingStateFile, FormatVersion)
	}
	if env.OptimizerSteps != nil {
		c.optimizerSteps = *env.OptimizerSteps
	}

	if c.model, err = openSafetensors(c.dir, ModelFile, m); err != nil {
		return err
	}
	switch c.model.h.Metadata[metaTieWeights] {
	case "true":
		c.layout.TieWeights = true
	case "false", "":
	default:
		return fmt.Errorf("%s: __metadata__ tie_weights is %q, want \"true\" or \"false\"", ModelFile, c.model.h.Metadata[metaTieWeights])
	}
	params := map[string][]int64{}
	for _, e := range c.model.h.Entries {
		c.layout.Tensors = append(c.layout.Tensors, TensorSpec{Name: e.Name, Role: pb.TensorRole_TENSOR_ROLE_PARAM, Shape: e.Shape, DType: e.DType})
		params[e.Name] = e.Shape
	}
	if _, ok := params["lm_head.weight"]; ok && c.layout.TieWeights {
		return fmt.Errorf("%s: tie_weights is true but lm_head.weight is stored too", ModelFile)
	}
	if _, ok := m.Safetensors[OptimizerFile]; !ok {
		return nil
	}
	if c.optimizer, err = openSafetensors(c.dir, OptimizerFile, m); err != nil {
		return err
	}
	for _, e := range c.optimizer.h.Entries {
		name, role, ok := parseStoredMoment(e.Name)
		if !ok {
			return fmt.Errorf("%s: tensor %s is neither exp_avg.<param> nor exp_avg_sq.<param>", OptimizerFile, e.Name)
		}
		shape, ok := params[name]
		if !ok {
			return fmt.Errorf("%s: tensor %s belongs to no parameter in %s", OptimizerFile, e.Name, ModelFile)
		}
		if !slices.Equal(shape, e.Shape) {
			return fmt.Errorf("%s: tensor %s has shape %v, its parameter %v", OptimizerFile, e.Name, e.Shape, shape)
		}
		c.layout.Tensors = append(c.layout.Tensors, TensorSpec{Name: name, Role: role, Shape: e.Shape, DType: e.DType})
	}
	return nil
}

func openSafetensors(dir, name string, m *manifest) (*stReader, error) {
	sums, ok := m.Safetensors[name]
	if !ok {
		return nil, fmt.Errorf("%s is not listed in %s", name, ManifestFile)
	}
	f, err := os.Open(filepath.Join(dir, name))
	if err != nil {
		return nil, err
	}
	r := &stReader{name: name, f: f, sums: sums}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if st.Size() != sums.Size {
		f.Close()
		return nil, fmt.Errorf("%s is %d bytes, manifest says %d (truncated or replaced)", name, st.Size(), sums.Size)
	}
	if r.h, err = readHeader(f, st.Size(), name); err != nil {
		f.Close()
		return nil, err
	}
	if r.h.CRC32 != sums.HeaderCRC32 {
		f.Close()
		return nil, fmt.Errorf("%s: header is corrupt (CRC-32 %08x, manifest says %08x)", name, r.h.CRC32, sums.HeaderCRC32)
	}
	for _, e := range r.h.Entries {
		if _, ok := sums.Tensors[e.Name]; !ok {
			f.Close()
			return nil, fmt.Errorf("%s: tensor %s has no checksum in %s", name, e.Name, ManifestFile)
		}
	}
	if len(sums.Tensors) != len(r.h.Entries) {
		f.Close()
		return nil, fmt.Errorf("%s: %s lists %d tensors, the file holds %d", name, ManifestFile, len(sums.Tensors), len(r.h.Entries))
	}
	return r, nil
}

// Close releases the checkpoint's files.
func (c *Checkpoint) Close() error {
	var errs []error
	for _, r := range []*stReader{c.model, c.optimizer} {
		if r != nil && r.f != nil {
			errs = append(errs, r.f.Close())
			r.f = nil
		}
	}
	return errors.Join(errs...)
}

// Dir is the directory the checkpoint was opened from.
func (c *Checkpoint) Dir() string { return c.dir }

// Layout lists the stored tensors (parameters, then moments if present)
// with their stored dtypes.
func (c *Checkpoint) Layout() Layout {
	return Layout{TieWeights: c.layout.TieWeights, Tensors: slices.Clone(c.layout.Tensors)}
}

// TieWeights reports whether lm_head.weight is token_embedding_table.weight.
func (c *Checkpoint) TieWeights() bool { return c.layout.TieWeights }

// HasOptimizer reports whether the checkpoint holds AdamW moments.
func (c *Checkpoint) HasOptimizer() bool { return c.optimizer != nil }

// OptimizerSteps is the AdamW step count recorded with the moments.
func (c *Checkpoint) OptimizerSteps() uint64 { return c.optimizerSteps }

// ConfigJSON returns config.json.
func (c *Checkpoint) ConfigJSON() []byte { return c.config }

// Config decodes config.json into v.
func (c *Checkpoint) Config(v any) error {
	if err := json.Unmarshal(c.config, v); err != nil {
		return fmt.Errorf("checkpoint %s: %s: %w", c.dir, ConfigFile, err)
	}
	return nil
}

// TokenizerJSON returns tokenizer.json, or nil if the checkpoint has none.
func (c *Checkpoint) TokenizerJSON() []byte { return c.tokenizer }

// TrainingStateJSON returns training_state.json (envelope included).
func (c *Checkpoint) TrainingStateJSON() []byte { return c.trainingState }

// TrainingState decodes training_state.json into v.
func (c *Checkpoint) TrainingState(v any) error {
	if err := json.Unmarshal(c.trainingState, v); err != nil {
		return fmt.Errorf("checkpoint %s: %s: %w", c.dir, TrainingStateFile, err)
	}
	return nil
}

// File returns an extra file written with Meta.ExtraFiles, verified.
func (c *Checkpoint) File(name string) ([]byte, error) {
	b, err := c.man.readVerified(c.dir, name)
	if err != nil {
		return nil, fmt.Errorf("checkpoint %s: %w", c.dir, err)
	}
	return b, nil
}

func (c *Checkpoint) locate(name string, role pb.TensorRole) (*stReader, *stEntry, bool) {
	r := c.model
	if role != pb.TensorRole_TENSOR_ROLE_PARAM {
		r = c.optimizer
	}
	if r == nil {
		return nil, nil, false
	}
	e, ok := r.h.entry(storedName(name, role))
	return r, e, ok
}

// ReadTensor reads one stored tensor, verifies its checksum and converts it
// to dtype (unspecified: the stored dtype).
func (c *Checkpoint) ReadTensor(name string, role pb.TensorRole, dtype pb.DType) (*sdk.Tensor, error) {
	r, e, ok := c.locate(name, role)
	if !ok {
		return nil, fmt.Errorf("checkpoint %s has no %s %s", c.dir, roleName(role), name)
	}
	if r.f == nil {
		return nil, fmt.Errorf("checkpoint %s is closed", c.dir)
	}
	data := make([]byte, e.End-e.Begin)
	if _, err := r.f.ReadAt(data, r.h.DataStart+e.Begin); err != nil {
		return nil, fmt.Errorf("checkpoint %s: read tensor %s from %s: %w", c.dir, e.Name, r.name, err)
	}
	if got, want := crc32.ChecksumIEEE(data), r.sums.Tensors[e.Name]; got != want {
		return nil, fmt.Errorf("checkpoint %s: tensor %s in %s is corrupt (CRC-32 %08x, manifest says %08x)", c.dir, e.Name, r.name, got, want)
	}
	if dtype == pb.DType_DTYPE_UNSPECIFIED {
		dtype = e.DType
	}
	out, err := convertData(data, e.DType, dtype)
	if err != nil {
		return nil, fmt.Errorf("checkpoint %s: tensor %s: %w", c.dir, e.Name, err)
	}
	return &sdk.Tensor{Name: name, Role: role, Shape: slices.Clone(e.Shape), DType: dtype, Data: out}, nil
}

// Check compares the checkpoint with the layout a model expects and returns
// an error naming the first mismatching, missing or extra tensor. Stored
// dtypes may differ from expected ones (they are converted on read). Moments
// are compared only if expect has them; stored moments are otherwise ignored.
func (c *Checkpoint) Check(expect Layout) error {
	if err := c.check(expect); err != nil {
		return fmt.Errorf("checkpoint %s: %w", c.dir, err)
	}
	return nil
}

func (c *Checkpoint) check(expect Layout) error {
	if err := expect.validate(); err != nil {
		return fmt.Errorf("expected %w", err)
	}
	if expect.TieWeights != c.layout.TieWeights {
		return fmt.Errorf("checkpoint has tie_weights=%v, model has tie_weights=%v", c.layout.TieWeights, expect.TieWeights)
	}
	withMoments := expect.HasMoments()
	if withMoments && c.optimizer == nil {
		return fmt.Errorf("checkpoint has no %s, so AdamW moments cannot be restored (start from it with a fresh optimizer instead)", OptimizerFile)
	}
	var problems []string
	want := map[slotKey]bool{}
	for _, t := range expect.Tensors {
		want[slotKey{t.Name, t.Role}] = true
		_, e, ok := c.locate(t.Name, t.Role)
		switch {
		case !ok:
			problems = append(problems, fmt.Sprintf("checkpoint has no tensor %s (model expects shape %v)", storedName(t.Name, t.Role), t.Shape))
		case !slices.Equal(e.Shape, t.Shape):
			problems = append(problems, fmt.Sprintf("checkpoint tensor %s has shape %v, model expects %v", e.Name, e.Shape, t.Shape))
		}
	}
	for _, t := range c.layout.Tensors {
		if !want[slotKey{t.Name, t.Role}] && (withMoments || t.Role == pb.TensorRole_TENSOR_ROLE_PARAM) {
			problems = append(problems, fmt.Sprintf("checkpoint tensor %s is not in the model", storedName(t.Name, t.Role)))
		}
	}
	switch len(problems) {
	case 0:
		return nil
	case 1:
		return errors.New(problems[0])
	}
	return fmt.Errorf("%s (and %d more mismatches)", problems[0], len(problems)-1)
}

// NewStateReader returns an sdk.StateReader that yields the tensors of
// expect, in its order and dtypes, after Check(expect) passes. The header
// carries the stored optimizer step count when moments are included, else 0.
func (c *Checkpoint) NewStateReader(expect Layout) (*StateReader, error) {
	if err := c.Check(expect); err != nil {
		return nil, err
	}
	h := &pb.StateHeader{TensorCount: uint32(len(expect.Tensors))}
	if expect.HasMoments() {
		h.OptimizerSteps = c.optimizerSteps
	}
	return &StateReader{c: c, specs: slices.Clone(expect.Tensors), header: h}, nil
}

// StateReader streams a checkpoint's tensors one at a time. It implements
// sdk.StateReader.
type StateReader struct {
	c      *Checkpoint
	specs  []TensorSpec
	header *pb.StateHeader
	next   int
}

// Header implements sdk.StateReader.
func (r *StateReader) Header() *pb.StateHeader { return r.header }

// Next implements sdk.StateReader.
func (r *StateReader) Next() (*sdk.Tensor, error) {
	if r.next >= len(r.specs) {
		return nil, io.EOF
	}
	s := r.specs[r.next]
	t, err := r.c.ReadTensor(s.Name, s.Role, s.DType)
	if err != nil {
		return nil, err
	}
	r.next++
	return t, nil
}

// Verify reads every stored tensor and checks its checksum.
func (c *Checkpoint) Verify() error {
	for _, t := range c.layout.Tensors {
		if _, err := c.ReadTensor(t.Name, t.Role, pb.DType_DTYPE_UNSPECIFIED); err != nil {
			return err
		}
	}
	return nil
}

// Package myptckpt reads MyPT's own checkpoint directories (model.pt saved
// with torch.save, config.json, tokenizer.json, training_state.json) and
// converts them into mypt checkpoints, so `--model` can start from a model
// trained with MyPT.
//
// model.pt is a zip archive holding a pickle (data.pkl) and one raw record
// per tensor storage. The pickle is decoded by a strict, minimal unpickler
// that accepts only what torch.save writes for a state_dict and never runs
// Python code: the only globals allowed are collections.OrderedDict,
// torch._utils._rebuild_tensor_v2 / _rebuild_parameter and the torch
// Float/BFloat16/Half/Double storage classes. Both MyPT forms are accepted:
// {"state_dict": {...}, "checkpoint_dtype": ..., "model_dtype": ...} and a raw
// state_dict. Legacy single-file checkpoints (latest.pt / final.pt) are not.
// MyPT's bundle layout is described in docs/MYPT.md §17.
package myptckpt

import (
	"archive/zip"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/mypt/mypt/core/checkpoint"
)

// File names inside a MyPT checkpoint directory.
const (
	ModelFile         = "model.pt"
	ConfigFile        = "config.json"
	TokenizerFile     = "tokenizer.json"
	TrainingStateFile = "training_state.json"
)

// IsMyPTCheckpoint reports whether dir looks like a MyPT checkpoint: it has
// model.pt and config.json and is not a mypt checkpoint (no manifest.json).
func IsMyPTCheckpoint(dir string) bool {
	for _, f := range []string{ModelFile, ConfigFile} {
		if st, err := os.Stat(filepath.Join(dir, f)); err != nil || !st.Mode().IsRegular() {
			return false
		}
	}
	_, err := os.Stat(filepath.Join(dir, checkpoint.ManifestFile))
	return os.IsNotExist(err)
}

// TensorInfo describes one tensor of model.pt.
type TensorInfo struct {
	Name  string
	Shape []int64
	// DType is the storage dtype as torch names it: "float32", "bfloat16",
	// "float16" or "float64".
	DType string
}

// Checkpoint is an opened MyPT checkpoint directory. Tensors are read on
// demand from model.pt. Close releases the file.
type Checkpoint struct {
	dir        string
	zr         *zip.ReadCloser
	prefix     string // record prefix inside the zip, e.g. "model/"
	tensors    map[string]*tensorRef
	names      []string // state_dict order
	config     []byte
	tokenizer  []byte
	trainState []byte
	// CheckpointDType is model.pt's "checkpoint_dtype" ("" for a raw
	// state_dict).
	CheckpointDType string
}

// Open reads dir's config.json (required), tokenizer.json and
// training_state.json (optional), and model.pt's pickle. Tensor data is read
// later by Tensor.
func Open(dir string) (*Checkpoint, error) {
	c := &Checkpoint{dir: dir}
	var err error
	if c.config, err = os.ReadFile(filepath.Join(dir, ConfigFile)); err != nil {
		return nil, fmt.Errorf("MyPT checkpoint %s: %w", dir, err)
	}
	if c.tokenizer, err = readOptional(filepath.Join(dir, TokenizerFile)); err != nil {
		return nil, err
	}
	if c.trainState, err = readOptional(filepath.Join(dir, TrainingStateFile)); err != nil {
		return nil, err
	}
	path := filepath.Join(dir, ModelFile)
	if c.zr, err = zip.OpenReader(path); err != nil {
		return nil, fmt.Errorf("%s: not a torch.save zip archive: %w", path, err)
	}
	if err := c.readPickle(); err != nil {
		c.zr.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

func readOptional(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return b, nil
}

func (c *Checkpoint) record(name string) (*zip.File, error) {
	full := c.prefix + name
	for _, f := range c.zr.File {
		if f.Name == full {
			return f, nil
		}
	}
	return nil, fmt.Errorf("record %s missing from the archive", full)
}

func readRecord(f *zip.File, limit int64) ([]byte, error) {
	if int64(f.UncompressedSize64) > limit {
		return nil, fmt.Errorf("record %s is %d bytes, more than the %d expected", f.Name, f.UncompressedSize64, limit)
	}
	r, err := f.Open()
	if err != nil {
		return nil, fmt.Errorf("record %s: %w", f.Name, err)
	}
	defer r.Close()
	b, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("record %s: %w", f.Name, err)
	}
	return b, nil
}

func (c *Checkpoint) readPickle() error {
	var pkl *zip.File
	for _, f := range c.zr.File {
		dir, base := pathSplit(f.Name)
		if base == "data.pkl" && !strings.Contains(strings.TrimSuffix(dir, "/"), "/") {
			if pkl != nil {
				return fmt.Errorf("more than one data.pkl in the archive")
			}
			pkl = f
			c.prefix = dir
		}
	}
	if pkl == nil {
		return fmt.Errorf("no data.pkl in the archive (not a torch.save file, or the legacy pre-1.6 format)")
	}
	if f, err := c.record("byteorder"); err == nil {
		b, err := readRecord(f, 16)
		if err != nil {
			return err
		}
		if string(b) != "little" {
			return fmt.Errorf("byteorder %q is not supported", b)
		}
	}
	data, err := readRecord(pkl, 1<<30)
	if err != nil {
		return err
	}
	root, err := unpickle(data)
	if err != nil {
		return err
	}
	d, ok := root.(*pyDict)
	if !ok {
		return fmt.Errorf("data.pkl holds %T, not a dict", root)
	}
	sd := d
	if v, ok := d.get("state_dict"); ok {
		if sd, ok = v.(*pyDict); !ok {
			return fmt.Errorf(`"state_dict" is %T, not a dict`, v)
		}
		if s, ok := d.get("checkpoint_dtype"); ok {
			c.CheckpointDType, _ = s.(string)
		}
	} else if _, ok := d.get("model_state_dict"); ok {
		return fmt.Errorf("legacy single-file MyPT checkpoint (model_state_dict) is not supported; load and re-save it with MyPT first")
	}
	c.tensors = map[string]*tensorRef{}
	for _, k := range sd.keys {
		name, ok := k.(string)
		if !ok {
			return fmt.Errorf("state_dict key %v is not a string", k)
		}
		t, ok := sd.values[k].(*tensorRef)
		if !ok {
			return fmt.Errorf("state_dict[%q] is %T, not a tensor", name, sd.values[k])
		}
		c.tensors[name] = t
		c.names = append(c.names, name)
	}
	if len(c.names) == 0 {
		return fmt.Errorf("empty state_dict")
	}
	return nil
}

func pathSplit(p string) (dir, base string) {
	i := strings.LastIndex(p, "/")
	return p[:i+1], p[i+1:]
}

// Close releases model.pt.
func (c *Checkpoint) Close() error { return c.zr.Close() }

// Dir is the directory the checkpoint was opened from.
func (c *Checkpoint) Dir() string { return c.dir }

// ConfigJSON returns config.json (MyPT's GPTConfig).
func (c *Checkpoint) ConfigJSON() []byte { return c.config }

// TokenizerJSON returns tokenizer.json, or nil if there is none.
func (c *Checkpoint) TokenizerJSON() []byte { return c.tokenizer }

// TrainingStateJSON returns training_state.json, or nil if there is none.
func (c *Checkpoint) TrainingStateJSON() []byte { return c.trainState }

// Names lists the state_dict's tensor names in their saved order.
func (c *Checkpoint) Names() []string { return append([]string(nil), c.names...) }

// Info describes the named tensor.
func (c *Checkpoint) Info(name string) (TensorInfo, bool) {
	t, ok := c.tensors[name]
	if !ok {
		return TensorInfo{}, false
	}
	return TensorInfo{Name: name, Shape: append([]int64(nil), t.shape...), DType: torchDType(t.storage.class)}, true
}

func torchDType(class string) string {
	switch class {
	case "FloatStorage":
		return "float32"
	case "BFloat16Storage":
		return "bfloat16"
	case "HalfStorage":
		return "float16"
	case "DoubleStorage":
		return "float64"
	}
	return class
}

// Tensor reads the named tensor as float32 values in row-major order.
// bfloat16 and float16 are widened exactly; float64 is rounded to nearest.
func (c *Checkpoint) Tensor(name string) ([]float32, []int64, error) {
	t, ok := c.tensors[name]
	if !ok {
		return nil, nil, fmt.Errorf("model.pt has no tensor %q", name)
	}
	vals, err := c.readTensor(t)
	if err != nil {
		return nil, nil, fmt.Errorf("model.pt tensor %q: %w", name, err)
	}
	return vals, append([]int64(nil), t.shape...), nil
}

func (c *Checkpoint) readTensor(t *tensorRef) ([]float32, error) {
	es, _ := storageElemSize(t.storage.class)
	f, err := c.record("data/" + t.storage.key)
	if err != nil {
		return nil, err
	}
	want := t.storage.numel * int64(es)
	if int64(f.UncompressedSize64) != want {
		return nil, fmt.Errorf("storage %s is %d bytes, want %d (%d × %s)", f.Name, f.UncompressedSize64, want, t.storage.numel, t.storage.class)
	}
	raw, err := readRecord(f, want)
	if err != nil {
		return nil, err
	}
	n := int64(1)
	for _, d := range t.shape {
		n *= d
	}
	out := make([]float32, n)
	if n == 0 {
		return out, nil
	}
	// Bounds: the largest element index reached by the view.
	maxIdx := t.offset
	for i, d := range t.shape {
		maxIdx += (d - 1) * t.stride[i]
	}
	if t.offset < 0 || maxIdx >= t.storage.numel {
		return nil, fmt.Errorf("view (offset %d, size %v, stride %v) exceeds storage of %d elements", t.offset, t.shape, t.stride, t.storage.numel)
	}
	idx := make([]int64, len(t.shape))
	for k := int64(0); k < n; k++ {
		e := t.offset
		for i := range idx {
			e += idx[i] * t.stride[i]
		}
		out[k] = decodeElem(raw, e, t.storage.class)
		for i := len(idx) - 1; i >= 0; i-- {
			idx[i]++
			if idx[i] < t.shape[i] {
				break
			}
			idx[i] = 0
		}
	}
	return out, nil
}

func decodeElem(raw []byte, e int64, class string) float32 {
	switch class {
	case "FloatStorage":
		return math.Float32frombits(binary.LittleEndian.Uint32(raw[4*e:]))
	case "BFloat16Storage":
		return checkpoint.BF16ToF32(binary.LittleEndian.Uint16(raw[2*e:]))
	case "HalfStorage":
		return checkpoint.F16ToF32(binary.LittleEndian.Uint16(raw[2*e:]))
	default: // DoubleStorage
		return float32(math.Float64frombits(binary.LittleEndian.Uint64(raw[8*e:])))
	}
}

// sortedNames is a helper for error messages.
func sortedNames(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

package checkpoint

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/mypt/mypt/core/atomicfile"
	"github.com/mypt/mypt/sdk"
	pb "github.com/mypt/mypt/sdk/proto/backendv1"
)

// Meta is the JSON side of a checkpoint, passed to Commit.
type Meta struct {
	// Config is marshalled to config.json; it must encode as a JSON object
	// (MyPT's GPTConfig keys).
	Config any
	// Tokenizer is written verbatim to tokenizer.json when not empty; it
	// must be valid JSON.
	Tokenizer json.RawMessage
	// TrainingState is marshalled to training_state.json; it must encode as
	// a JSON object (or be nil). The writer adds "format_version" and
	// "optimizer_steps" (from the stream header); the caller may set them
	// only to the same values.
	TrainingState any
	// ExtraFiles are written as they are (e.g. original_config.json). Names
	// must be plain file names other than the checkpoint's own files.
	ExtraFiles map[string][]byte
}

// Option configures a Writer.
type Option func(*Writer)

// StoreAs converts every tensor to d on write (e.g. BF16 or F16 for a
// deployment copy); by default tensors are stored in their layout dtype.
func StoreAs(d pb.DType) Option { return func(w *Writer) { w.store = d } }

// WithLogger sets the logger for progress and clean-up messages.
func WithLogger(l *slog.Logger) Option { return func(w *Writer) { w.log = l } }

// Writer streams a state into a new checkpoint directory. It implements
// sdk.StateWriter: tensors may arrive in any order and are written at their
// final offsets as they come, so only one tensor is held in memory at a
// time. Nothing is visible at the target until Commit succeeds. A Writer is
// not safe for concurrent use, and only one Writer may target a directory at
// a time.
type Writer struct {
	target string
	tmp    string
	layout Layout
	store  pb.DType
	log    *slog.Logger

	files      []*stFile // model first, then optimizer if the layout has moments
	slots      map[slotKey]*slot
	header     *pb.StateHeader
	announced  uint64
	closed     bool
	faultHook  func(stage string) error // tests only: fail (or crash) at a stage
	noExchange bool                     // tests only: force the two-rename swap
}

type slotKey struct {
	name string
	role pb.TensorRole
}

type slot struct {
	want     TensorSpec // as the layout lists it: what WriteTensor accepts
	spec     TensorSpec // as stored (after StoreAs)
	file     *stFile
	entry    stEntry
	received bool
	crc      uint32
}

type stFile struct {
	name      string
	f         *os.File
	size      int64
	headerCRC uint32
}

// NewWriter prepares a checkpoint for dir: it creates a temporary directory
// beside dir and lays out model.safetensors (and optimizer.safetensors when
// the layout has moments) with their headers written and space reserved.
// Leftovers of an earlier crashed write to dir are cleaned up first.
func NewWriter(dir string, layout Layout, opts ...Option) (*Writer, error) {
	w := &Writer{target: filepath.Clean(dir), layout: layout, log: slog.Default()}
	for _, o := range opts {
		o(w)
	}
	if err := layout.validate(); err != nil {
		return nil, err
	}
	if w.store != pb.DType_DTYPE_UNSPECIFIED && sdk.DTypeSize(w.store) == 0 {
		return nil, fmt.Errorf("checkpoint: cannot store as %s", dtypeName(w.store))
	}
	if err := recoverTarget(w.target, w.log); err != nil {
		return nil, err
	}
	// Dir, not Split: a bare name must get "." (MkdirTemp would read "" as
	// the system temp dir, possibly on another filesystem).
	parent, base := filepath.Dir(w.target), filepath.Base(w.target)
	if base == "." || base == ".." || base == string(filepath.Separator) {
		return nil, fmt.Errorf("checkpoint %q: need a directory name to write to", dir)
	}
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return nil, fmt.Errorf("checkpoint %s: create parent directory: %w", dir, err)
	}
	tmp, err := os.MkdirTemp(parent, "."+base+tmpInfix)
	if err != nil {
		return nil, fmt.Errorf("checkpoint %s: create temporary directory: %w", dir, err)
	}
	w.tmp = tmp
	if err := w.prepare(); err != nil {
		w.Abort()
		return nil, fmt.Errorf("checkpoint %s: %w", dir, err)
	}
	return w, nil
}

func (w *Writer) prepare() error {
	if err := os.Chmod(w.tmp, 0o755); err != nil {
		return err
	}
	w.slots = map[slotKey]*slot{}
	byFile := map[string][]TensorSpec{}
	for _, t := range w.layout.Tensors {
		fn, _ := fileFor(t.Role) // validated
		byFile[fn] = append(byFile[fn], t)
	}
	for _, fn := range []string{ModelFile, OptimizerFile} {
		specs := byFile[fn]
		if len(specs) == 0 {
			continue
		}
		entries := make([]stEntry, len(specs))
		for i, t := range specs {
			entries[i] = stEntry{Name: storedName(t.Name, t.Role), DType: w.storedDType(t), Shape: t.Shape}
		}
		entries, dataSize, err := layoutEntries(entries)
		if err != nil {
			return err
		}
		meta := map[string]string{metaFormat: "pt"}
		if fn == ModelFile {
			meta[metaTieWeights] = fmt.Sprint(w.layout.TieWeights)
		}
		hdr, err := encodeHeader(entries, meta)
		if err != nil {
			return fmt.Errorf("%s: %w", fn, err)
		}
		f, err := os.OpenFile(filepath.Join(w.tmp, fn), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
		if err != nil {
			return err
		}
		sf := &stFile{name: fn, f: f, size: int64(len(hdr)) + dataSize, headerCRC: crc32.ChecksumIEEE(hdr)}
		w.files = append(w.files, sf)
		if _, err := f.WriteAt(hdr, 0); err != nil {
			return fmt.Errorf("write %s header: %w", fn, err)
		}
		// Reserve the full size now (sparse where supported): a tensor
		// missing at Commit is caught by bookkeeping, not by file length.
		if err := f.Truncate(sf.size); err != nil {
			return fmt.Errorf("size %s: %w", fn, err)
		}
		for i, t := range specs {
			e := entries[i]
			e.Begin += int64(len(hdr))
			e.End += int64(len(hdr))
			stored := t
			stored.DType = e.DType
			w.slots[slotKey{t.Name, t.Role}] = &slot{want: t, spec: stored, file: sf, entry: e}
		}
	}
	return nil
}

// WriteHeader implements sdk.StateWriter. It records the optimizer step
// count for training_state.json. It may be called more than once (say, one
// stream for parameters and one for moments) if the step counts agree.
func (w *Writer) WriteHeader(h *pb.StateHeader) error {
	if w.closed {
		return errors.New("checkpoint: WriteHeader after Commit or Abort")
	}
	if w.header != nil && w.header.GetOptimizerSteps() != h.GetOptimizerSteps() {
		return fmt.Errorf("checkpoint: state streams disagree on optimizer_steps (%d, then %d)",
			w.header.GetOptimizerSteps(), h.GetOptimizerSteps())
	}
	w.announced += uint64(h.GetTensorCount())
	if w.announced > uint64(len(w.layout.Tensors)) {
		return fmt.Errorf("checkpoint: state streams announce %d tensors, the layout has %d", w.announced, len(w.layout.Tensors))
	}
	w.header = &pb.StateHeader{OptimizerSteps: h.GetOptimizerSteps()}
	return nil
}

// WriteTensor implements sdk.StateWriter: it checks t against the layout,
// converts it to the stored dtype if needed, and writes it at its offset.
func (w *Writer) WriteTensor(t *sdk.Tensor) error {
	if w.closed {
		return errors.New("checkpoint: WriteTensor after Commit or Abort")
	}
	s, ok := w.slots[slotKey{t.Name, t.Role}]
	if !ok {
		return fmt.Errorf("checkpoint: %s %s is not in the checkpoint layout", roleName(t.Role), t.Name)
	}
	want := s.want
	if !slices.Equal(t.Shape, want.Shape) {
		return fmt.Errorf("checkpoint: %s %s has shape %v, layout says %v", roleName(t.Role), t.Name, t.Shape, want.Shape)
	}
	if t.DType != want.DType {
		return fmt.Errorf("checkpoint: %s %s has dtype %s, layout says %s", roleName(t.Role), t.Name, dtypeName(t.DType), dtypeName(want.DType))
	}
	if n, _ := tensorBytes(t.Name, t.Shape, t.DType); int64(len(t.Data)) != n {
		return fmt.Errorf("checkpoint: %s %s has %d data bytes, shape %v of %s needs %d", roleName(t.Role), t.Name, len(t.Data), t.Shape, dtypeName(t.DType), n)
	}
	if s.received {
		return fmt.Errorf("checkpoint: %s %s arrived twice", roleName(t.Role), t.Name)
	}
	data, err := convertData(t.Data, t.DType, s.spec.DType)
	if err != nil {
		return fmt.Errorf("checkpoint: %s %s: %w", roleName(t.Role), t.Name, err)
	}
	if _, err := s.file.f.WriteAt(data, s.entry.Begin); err != nil {
		return fmt.Errorf("checkpoint: write %s %s to %s: %w", roleName(t.Role), t.Name, s.file.name, err)
	}
	s.crc = crc32.ChecksumIEEE(data)
	s.received = true
	return nil
}

func (w *Writer) storedDType(t TensorSpec) pb.DType {
	if w.store != pb.DType_DTYPE_UNSPECIFIED {
		return w.store
	}
	return t.DType
}

// Commit writes the JSON files and the manifest, syncs everything to disk,
// and moves the checkpoint into place, replacing any previous one there.
// A crash at any point leaves either the previous checkpoint or the new
// one, complete. On error the previous checkpoint is untouched and the
// temporary directory is removed.
func (w *Writer) Commit(meta Meta) error {
	if w.closed {
		return errors.New("checkpoint: Commit after Commit or Abort")
	}
	err := w.commit(meta)
	if err != nil {
		w.Abort()
		return fmt.Errorf("checkpoint %s: %w", w.target, err)
	}
	return nil
}

func (w *Writer) commit(meta Meta) error {
	for _, t := range w.layout.Tensors {
		if !w.slots[slotKey{t.Name, t.Role}].received {
			return fmt.Errorf("%s %s was never written", roleName(t.Role), t.Name)
		}
	}
	files, err := w.jsonFiles(meta)
	if err != nil {
		return err
	}
	man := manifest{Format: manifestFormat, FormatVersion: FormatVersion, Files: map[string]fileSum{}, Safetensors: map[string]safetensorsSums{}}
	for _, sf := range w.files {
		sums := safetensorsSums{Size: sf.size, HeaderCRC32: sf.headerCRC, Tensors: map[string]uint32{}}
		for _, s := range w.slots {
			if s.file == sf {
				sums.Tensors[s.entry.Name] = s.crc
			}
		}
		man.Safetensors[sf.name] = sums
	}
	if err := w.fault("tensors-written"); err != nil {
		return err
	}
	for _, sf := range w.files {
		if err := sf.f.Sync(); err != nil {
			return fmt.Errorf("sync %s: %w", sf.name, err)
		}
		if err := sf.f.Close(); err != nil {
			return fmt.Errorf("close %s: %w", sf.name, err)
		}
		sf.f = nil
	}
	names := slices.Sorted(func(yield func(string) bool) {
		for n := range files {
			if !yield(n) {
				return
			}
		}
	})
	for _, name := range names {
		if err := atomicfile.WriteNew(filepath.Join(w.tmp, name), files[name]); err != nil {
			return err
		}
		man.Files[name] = sumBytes(files[name])
	}
	if err := w.fault("json-written"); err != nil {
		return err
	}
	mb, err := json.MarshalIndent(man, "", "  ")
	if err != nil {
		return fmt.Errorf("encode %s: %w", ManifestFile, err)
	}
	if err := atomicfile.WriteNew(filepath.Join(w.tmp, ManifestFile), append(mb, '\n')); err != nil {
		return err
	}
	if err := atomicfile.SyncDir(w.tmp); err != nil {
		return err
	}
	if err := w.fault("before-swap"); err != nil {
		return err
	}
	if err := w.swapIntoPlace(); err != nil {
		return err
	}
	w.closed = true
	w.log.Debug("checkpoint committed", "dir", w.target, "tensors", len(w.layout.Tensors))
	return nil
}

// jsonFiles renders config.json, tokenizer.json, training_state.json and the
// extra files.
func (w *Writer) jsonFiles(meta Meta) (map[string][]byte, error) {
	files := map[string][]byte{}
	if meta.Config == nil {
		return nil, fmt.Errorf("%s: no model config given", ConfigFile)
	}
	cfg, err := marshalObject(meta.Config)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", ConfigFile, err)
	}
	files[ConfigFile] = cfg
	if len(meta.Tokenizer) > 0 {
		var buf bytes.Buffer
		if err := json.Indent(&buf, meta.Tokenizer, "", "  "); err != nil {
			return nil, fmt.Errorf("%s: tokenizer state is not valid JSON: %w", TokenizerFile, err)
		}
		files[TokenizerFile] = append(buf.Bytes(), '\n')
	}
	ts, err := w.trainingState(meta.TrainingState)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", TrainingStateFile, err)
	}
	files[TrainingStateFile] = ts
	for name, b := range meta.ExtraFiles {
		if name == "" || name != filepath.Base(name) || strings.HasPrefix(name, ".") || name == ManifestFile {
			return nil, fmt.Errorf("extra file name %q is not a plain file name", name)
		}
		if _, taken := files[name]; taken || name == ModelFile || name == OptimizerFile {
			return nil, fmt.Errorf("extra file %q would replace a checkpoint file", name)
		}
		files[name] = b
	}
	return files, nil
}

// trainingState wraps the caller's object in the envelope: format_version
// and optimizer_steps come first, then the caller's keys in their order.
func (w *Writer) trainingState(v any) ([]byte, error) {
	body := []byte("{}")
	if v != nil {
		var err error
		if body, err = json.Marshal(v); err != nil {
			return nil, err
		}
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(body, &fields); err != nil || fields == nil {
		return nil, fmt.Errorf("training state must encode as a JSON object, got %.40s", body)
	}
	var steps uint64
	if w.header != nil {
		steps = w.header.GetOptimizerSteps()
	}
	env := map[string]uint64{"format_version": FormatVersion, "optimizer_steps": steps}
	var prefix bytes.Buffer
	prefix.WriteByte('{')
	for _, key := range []string{"format_version", "optimizer_steps"} {
		raw, set := fields[key]
		if !set {
			fmt.Fprintf(&prefix, "%q:%d,", key, env[key])
			continue
		}
		var got uint64
		if err := json.Unmarshal(raw, &got); err != nil || got != env[key] {
			if key == "optimizer_steps" && w.header == nil && err == nil {
				continue // no stream header: the caller's count stands
			}
			return nil, fmt.Errorf("training state sets %s to %s, but it is %d", key, raw, env[key])
		}
	}
	rest := bytes.TrimSpace(body)[1:] // after '{'
	if len(fields) == 0 {
		rest = []byte("}")
		prefix.Truncate(prefix.Len() - 1) // drop the trailing comma
	}
	var out bytes.Buffer
	if err := json.Indent(&out, append(prefix.Bytes(), rest...), "", "  "); err != nil {
		return nil, err
	}
	return append(out.Bytes(), '\n'), nil
}

func marshalObject(v any) ([]byte, error) {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return nil, err
	}
	if len(b) == 0 || b[0] != '{' {
		return nil, fmt.Errorf("must encode as a JSON object, got %.40s", b)
	}
	return append(b, '\n'), nil
}

// Abort discards everything written so far. It is safe to call after
// Commit (it then does nothing) and more than once.
func (w *Writer) Abort() {
	if w.closed && w.tmp == "" {
		return
	}
	w.closed = true
	for _, sf := range w.files {
		if sf.f != nil {
			_ = sf.f.Close()
			sf.f = nil
		}
	}
	if w.tmp != "" {
		if err := os.RemoveAll(w.tmp); err != nil {
			w.log.Warn("checkpoint: could not remove temporary directory", "dir", w.tmp, "err", err)
		}
		w.tmp = ""
	}
}

func (w *Writer) fault(stage string) error {
	if w.faultHook == nil {
		return nil
	}
	return w.faultHook(stage)
}

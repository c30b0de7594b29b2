package checkpoint

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"slices"
	"strconv"

	"github.com/mypt/mypt/sdk"
	pb "github.com/mypt/mypt/sdk/proto/backendv1"
)

// The safetensors format: an 8-byte little-endian header length N, N bytes
// of JSON header, then the tensor data. Offsets in the header are relative
// to the start of the data. Files are written by this package's own codec
// because the Go library on offer only serialises whole in-memory maps,
// which does not fit streaming an 8 GiB state one tensor at a time.

const (
	metadataKey = "__metadata__"
	// maxHeaderBytes bounds the JSON header (the reference implementation
	// uses the same 100 MB limit) so a corrupt length cannot exhaust memory.
	maxHeaderBytes = 100_000_000
	headerAlign    = 8
)

// stEntry is one tensor of a safetensors file.
type stEntry struct {
	Name  string
	DType pb.DType
	Shape []int64
	Begin int64 // byte offsets relative to the data start
	End   int64
}

// stHeader is a parsed safetensors header.
type stHeader struct {
	Entries   []stEntry // in header order
	Metadata  map[string]string
	DataStart int64  // absolute file offset of the data: 8 + N
	CRC32     uint32 // of the length prefix and the JSON header
	byName    map[string]int
}

func (h *stHeader) entry(name string) (*stEntry, bool) {
	i, ok := h.byName[name]
	if !ok {
		return nil, false
	}
	return &h.Entries[i], true
}

// tensorBytes is the data size of a tensor, or an error naming it.
func tensorBytes(name string, shape []int64, d pb.DType) (int64, error) {
	n, err := sdk.NumElements(shape)
	if err != nil {
		return 0, fmt.Errorf("tensor %s: %w", name, err)
	}
	size := int64(sdk.DTypeSize(d))
	if size == 0 {
		return 0, fmt.Errorf("tensor %s: unsupported dtype %s", name, dtypeName(d))
	}
	if n > (1<<62)/size {
		return 0, fmt.Errorf("tensor %s: shape %v is too large", name, shape)
	}
	return n * size, nil
}

// layoutEntries assigns contiguous data offsets to tensors in the given
// order and returns the entries with the total data size.
func layoutEntries(specs []stEntry) ([]stEntry, int64, error) {
	out := make([]stEntry, len(specs))
	var off int64
	for i, s := range specs {
		n, err := tensorBytes(s.Name, s.Shape, s.DType)
		if err != nil {
			return nil, 0, err
		}
		s.Begin, s.End = off, off+n
		off += n
		out[i] = s
	}
	return out, off, nil
}

// encodeHeader returns the length prefix and the JSON header, padded with
// spaces so the data starts at a multiple of 8 bytes. Tensors appear in the
// order given, metadata keys sorted.
func encodeHeader(entries []stEntry, metadata map[string]string) ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	if len(metadata) > 0 {
		md, err := json.Marshal(metadata) // encoding/json sorts map keys
		if err != nil {
			return nil, fmt.Errorf("encode metadata: %w", err)
		}
		b.WriteString(`"` + metadataKey + `":`)
		b.Write(md)
	}
	for i, e := range entries {
		if e.Name == metadataKey {
			return nil, fmt.Errorf("tensor name %q is reserved", e.Name)
		}
		if i > 0 || len(metadata) > 0 {
			b.WriteByte(',')
		}
		name, err := json.Marshal(e.Name)
		if err != nil {
			return nil, fmt.Errorf("encode tensor name %q: %w", e.Name, err)
		}
		b.Write(name)
		b.WriteString(`:{"dtype":"` + dtypeName(e.DType) + `","shape":[`)
		for j, d := range e.Shape {
			if j > 0 {
				b.WriteByte(',')
			}
			b.WriteString(strconv.FormatInt(d, 10))
		}
		fmt.Fprintf(&b, `],"data_offsets":[%d,%d]}`, e.Begin, e.End)
	}
	b.WriteByte('}')
	for b.Len()%headerAlign != 0 {
		b.WriteByte(' ')
	}
	out := make([]byte, 8, 8+b.Len())
	binary.LittleEndian.PutUint64(out, uint64(b.Len()))
	return append(out, b.Bytes()...), nil
}

// readHeader parses and validates the header of a safetensors file of the
// given size: known dtypes, sizes matching shapes, and data regions that
// tile the data section exactly (so truncation is caught up front).
func readHeader(r io.ReaderAt, size int64, file string) (*stHeader, error) {
	var prefix [8]byte
	if _, err := r.ReadAt(prefix[:], 0); err != nil {
		return nil, fmt.Errorf("%s: read header length: %w", file, err)
	}
	n := binary.LittleEndian.Uint64(prefix[:])
	if n > maxHeaderBytes || int64(n) > size-8 {
		return nil, fmt.Errorf("%s: header length %d does not fit the %d-byte file (limit %d)", file, n, size, maxHeaderBytes)
	}
	raw := make([]byte, n)
	if _, err := r.ReadAt(raw, 8); err != nil {
		return nil, fmt.Errorf("%s: read %d-byte header: %w", file, n, err)
	}
	h, err := parseHeaderJSON(raw)
	if err != nil {
		return nil, fmt.Errorf("%s: header: %w", file, err)
	}
	h.DataStart = 8 + int64(n)
	h.CRC32 = crc32.Update(crc32.ChecksumIEEE(prefix[:]), crc32.IEEETable, raw)
	if err := h.checkRegions(size - h.DataStart); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	return h, nil
}

// parseHeaderJSON decodes the header token by token, which keeps the tensor
// order and rejects duplicate names (a map decode would silently keep one).
func parseHeaderJSON(raw []byte) (*stHeader, error) {
	if len(raw) == 0 || raw[0] != '{' {
		return nil, errors.New("does not start with '{'")
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if _, err := dec.Token(); err != nil {
		return nil, err
	}
	h := &stHeader{byName: map[string]int{}}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, err
		}
		key, _ := tok.(string)
		if key == metadataKey {
			if h.Metadata != nil {
				return nil, fmt.Errorf("duplicate %s", metadataKey)
			}
			if err := dec.Decode(&h.Metadata); err != nil {
				return nil, fmt.Errorf("%s must map strings to strings: %w", metadataKey, err)
			}
			if h.Metadata == nil {
				h.Metadata = map[string]string{}
			}
			continue
		}
		if _, dup := h.byName[key]; dup {
			return nil, fmt.Errorf("tensor %s appears twice", key)
		}
		var info struct {
			DType       string        `json:"dtype"`
			Shape       []json.Number `json:"shape"`
			DataOffsets []json.Number `json:"data_offsets"`
		}
		if err := dec.Decode(&info); err != nil {
			return nil, fmt.Errorf("tensor %s: %w", key, err)
		}
		e := stEntry{Name: key}
		var ok bool
		if e.DType, ok = parseDTypeName(info.DType); !ok {
			return nil, fmt.Errorf("tensor %s: dtype %q is not supported (want F32, BF16, F16 or F64)", key, info.DType)
		}
		if info.Shape == nil {
			return nil, fmt.Errorf("tensor %s: no shape", key)
		}
		for _, d := range info.Shape {
			v, err := strconv.ParseInt(d.String(), 10, 64)
			if err != nil || v < 0 {
				return nil, fmt.Errorf("tensor %s: bad dimension %s in shape", key, d)
			}
			e.Shape = append(e.Shape, v)
		}
		if len(info.DataOffsets) != 2 {
			return nil, fmt.Errorf("tensor %s: data_offsets must have 2 entries, has %d", key, len(info.DataOffsets))
		}
		for i, p := range []*int64{&e.Begin, &e.End} {
			v, err := strconv.ParseInt(info.DataOffsets[i].String(), 10, 64)
			if err != nil || v < 0 {
				return nil, fmt.Errorf("tensor %s: bad data offset %s", key, info.DataOffsets[i])
			}
			*p = v
		}
		h.byName[key] = len(h.Entries)
		h.Entries = append(h.Entries, e)
	}
	if _, err := dec.Token(); err != nil {
		return nil, err
	}
	if rest := raw[dec.InputOffset():]; len(bytes.TrimRight(rest, " \t\r\n")) != 0 {
		return nil, fmt.Errorf("%d unexpected bytes after the JSON object", len(rest))
	}
	return h, nil
}

// checkRegions verifies each tensor's byte size against its shape and that
// the regions, sorted by offset, cover [0, dataSize) without gaps or overlap.
func (h *stHeader) checkRegions(dataSize int64) error {
	for _, e := range h.Entries {
		want, err := tensorBytes(e.Name, e.Shape, e.DType)
		if err != nil {
			return err
		}
		if e.End < e.Begin || e.End-e.Begin != want {
			return fmt.Errorf("tensor %s: data_offsets [%d, %d] hold %d bytes, shape %v of %s needs %d",
				e.Name, e.Begin, e.End, e.End-e.Begin, e.Shape, dtypeName(e.DType), want)
		}
	}
	sorted := slices.Clone(h.Entries)
	slices.SortStableFunc(sorted, func(a, b stEntry) int {
		return cmp.Or(cmp.Compare(a.Begin, b.Begin), cmp.Compare(a.End, b.End))
	})
	var off int64
	for _, e := range sorted {
		if e.Begin != off {
			return fmt.Errorf("tensor %s: data starts at byte %d, expected %d (regions must be contiguous)", e.Name, e.Begin, off)
		}
		off = e.End
	}
	if off != dataSize {
		return fmt.Errorf("tensors hold %d bytes of data but the file has %d after the header (truncated or padded)", off, dataSize)
	}
	return nil
}

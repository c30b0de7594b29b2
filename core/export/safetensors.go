package export

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"strings"

	"github.com/mypt/mypt/core/checkpoint"
	"github.com/mypt/mypt/sdk"
)

// hfTensor is one tensor of an exported file: its name, shape and a function
// producing its float32 values (called once, when the tensor is written, so
// only one tensor is held in memory at a time).
type hfTensor struct {
	name  string
	shape []int64
	load  func() ([]float32, error)
}

func numel(shape []int64) int64 {
	n := int64(1)
	for _, d := range shape {
		n *= d
	}
	return n
}

// dtypeInfo maps an export dtype to its safetensors name and element size.
func dtypeInfo(d string) (string, int, error) {
	switch d {
	case "", "f32", "float32", "fp32":
		return "F32", 4, nil
	case "bf16", "bfloat16":
		return "BF16", 2, nil
	case "f16", "fp16", "float16":
		return "F16", 2, nil
	}
	return "", 0, fmt.Errorf("unknown export dtype %q (want f32, bf16 or f16)", d)
}

// writeSafetensors writes tensors to path in the safetensors format: an
// 8-byte little-endian header length, a JSON header (with
// {"__metadata__":{"format":"pt"}}) padded with spaces to a multiple of 8,
// then the tensors' little-endian data back to back in header order.
func writeSafetensors(path string, tensors []hfTensor, dtype string) error {
	stName, es, err := dtypeInfo(dtype)
	if err != nil {
		return err
	}
	var hdr strings.Builder
	hdr.WriteString(`{"__metadata__":{"format":"pt"}`)
	var off int64
	seen := map[string]bool{}
	for _, t := range tensors {
		if seen[t.name] {
			return fmt.Errorf("duplicate tensor %s", t.name)
		}
		seen[t.name] = true
		name, _ := json.Marshal(t.name)
		shape, _ := json.Marshal(t.shape)
		if len(t.shape) == 0 {
			shape = []byte("[]")
		}
		n := numel(t.shape) * int64(es)
		fmt.Fprintf(&hdr, `,%s:{"dtype":"%s","shape":%s,"data_offsets":[%d,%d]}`, name, stName, shape, off, off+n)
		off += n
	}
	hdr.WriteString("}")
	h := []byte(hdr.String())
	for len(h)%8 != 0 {
		h = append(h, ' ')
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	w := bufio.NewWriterSize(f, 1<<20)
	var lenb [8]byte
	binary.LittleEndian.PutUint64(lenb[:], uint64(len(h)))
	w.Write(lenb[:])
	w.Write(h)
	buf := make([]byte, 0, 1<<16)
	for _, t := range tensors {
		vals, err := t.load()
		if err != nil {
			return err
		}
		if int64(len(vals)) != numel(t.shape) {
			return fmt.Errorf("tensor %s: %d values for shape %v", t.name, len(vals), t.shape)
		}
		for _, v := range vals {
			switch stName {
			case "F32":
				buf = binary.LittleEndian.AppendUint32(buf, math.Float32bits(v))
			case "BF16":
				buf = binary.LittleEndian.AppendUint16(buf, sdk.F32ToBF16(v))
			default:
				buf = binary.LittleEndian.AppendUint16(buf, checkpoint.F32ToF16(v))
			}
			if len(buf) >= 1<<16-8 {
				if _, err := w.Write(buf); err != nil {
					return err
				}
				buf = buf[:0]
			}
		}
	}
	if _, err := w.Write(buf); err != nil {
		return err
	}
	if err := w.Flush(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", path, err)
	}
	return f.Close()
}

package sdk

import (
	"encoding/binary"
	"fmt"
	"io"
	"math"

	pb "github.com/mypt/mypt/sdk/proto/backendv1"
)

// DTypeSize returns the size in bytes of one element of d, or 0 if unknown.
func DTypeSize(d pb.DType) int {
	switch d {
	case pb.DType_DTYPE_F32:
		return 4
	case pb.DType_DTYPE_BF16, pb.DType_DTYPE_F16:
		return 2
	case pb.DType_DTYPE_F64:
		return 8
	}
	return 0
}

// NumElements returns the product of shape, or an error for a negative
// dimension or an overflowing product.
func NumElements(shape []int64) (int64, error) {
	n := int64(1)
	for i, d := range shape {
		if d < 0 {
			return 0, fmt.Errorf("shape[%d] = %d is negative", i, d)
		}
		if d != 0 && n > math.MaxInt64/d {
			return 0, fmt.Errorf("shape %v overflows", shape)
		}
		n *= d
	}
	return n, nil
}

// F32Tensor builds an F32 tensor from values.
func F32Tensor(name string, role pb.TensorRole, shape []int64, values []float32) *Tensor {
	return &Tensor{Name: name, Role: role, Shape: shape, DType: pb.DType_DTYPE_F32, Data: F32Bytes(values)}
}

// F32Bytes encodes values as little-endian float32 bytes.
func F32Bytes(values []float32) []byte {
	b := make([]byte, 4*len(values))
	for i, v := range values {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(v))
	}
	return b
}

// F32Values decodes little-endian float32 bytes; len(b) must be a multiple of 4.
func F32Values(b []byte) ([]float32, error) {
	if len(b)%4 != 0 {
		return nil, fmt.Errorf("%d bytes is not a whole number of float32 values", len(b))
	}
	v := make([]float32, len(b)/4)
	for i := range v {
		v[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
	return v, nil
}

// F32ToBF16 rounds an IEEE binary32 value to bfloat16 with round-to-nearest-
// even, as PyTorch does; NaNs stay NaN (quieted, sign kept). It is the one
// rounding every part of mypt uses for BF16 state, so a backend converting
// with it agrees bit for bit with checkpoints and the conformance suite.
func F32ToBF16(f float32) uint16 {
	bits := math.Float32bits(f)
	if f != f {
		return uint16(bits>>16) | 0x0040
	}
	// Adding 0x7FFF plus the lowest kept bit rounds ties to even; a carry
	// into the exponent is the correct result (up to and including Inf).
	bits += 0x7FFF + (bits>>16)&1
	return uint16(bits >> 16)
}

// TensorList is a StateReader over tensors held in memory.
type TensorList struct {
	Head    *pb.StateHeader
	Tensors []*Tensor
	next    int
}

// NewTensorList returns a StateReader that yields tensors in order, with a
// header counting them and recording optimizerSteps.
func NewTensorList(optimizerSteps uint64, tensors ...*Tensor) *TensorList {
	return &TensorList{
		Head:    &pb.StateHeader{OptimizerSteps: optimizerSteps, TensorCount: uint32(len(tensors))},
		Tensors: tensors,
	}
}

// Header implements StateReader.
func (l *TensorList) Header() *pb.StateHeader { return l.Head }

// Next implements StateReader.
func (l *TensorList) Next() (*Tensor, error) {
	if l.next >= len(l.Tensors) {
		return nil, io.EOF
	}
	t := l.Tensors[l.next]
	l.next++
	return t, nil
}

// StateCollector is a StateWriter that keeps everything in memory.
type StateCollector struct {
	Head    *pb.StateHeader
	Tensors []*Tensor
}

// WriteHeader implements StateWriter.
func (c *StateCollector) WriteHeader(h *pb.StateHeader) error {
	c.Head = h
	return nil
}

// WriteTensor implements StateWriter.
func (c *StateCollector) WriteTensor(t *Tensor) error {
	c.Tensors = append(c.Tensors, t)
	return nil
}

// sendTensor splits t into chunks of at most maxChunk bytes.
func sendTensor(t *Tensor, maxChunk int, send func(*pb.StateChunk) error) error {
	total := len(t.Data)
	for off := 0; off == 0 || off < total; {
		end := min(off+maxChunk, total)
		c := &pb.TensorChunk{
			Name:       t.Name,
			Role:       t.Role,
			Shape:      t.Shape,
			Dtype:      t.DType,
			Offset:     uint64(off),
			TotalBytes: uint64(total),
			Data:       t.Data[off:end],
		}
		if err := send(&pb.StateChunk{Item: &pb.StateChunk_Tensor{Tensor: c}}); err != nil {
			return fmt.Errorf("send tensor %q at byte %d: %w", t.Name, off, err)
		}
		if end == total {
			return nil
		}
		off = end
	}
	return nil
}

// assembler rebuilds whole tensors from consecutive chunks and checks that
// the chunks are consistent: in order, no gaps, sizes matching shape·dtype.
type assembler struct {
	cur  *Tensor
	have uint64
}

// add consumes one chunk and returns the tensor it completes, if any. Errors
// name the offending chunk field so they can travel as InvalidArgument.
func (a *assembler) add(c *pb.TensorChunk) (*Tensor, error) {
	if a.cur == nil {
		if c.GetOffset() != 0 {
			return nil, fmt.Errorf("tensor %q: chunk.offset = %d, want 0 for its first chunk", c.GetName(), c.GetOffset())
		}
		n, err := NumElements(c.GetShape())
		if err != nil {
			return nil, fmt.Errorf("tensor %q: chunk.shape: %w", c.GetName(), err)
		}
		size := DTypeSize(c.GetDtype())
		if size == 0 {
			return nil, fmt.Errorf("tensor %q: chunk.dtype %v is not a known dtype", c.GetName(), c.GetDtype())
		}
		if want := uint64(n) * uint64(size); c.GetTotalBytes() != want {
			return nil, fmt.Errorf("tensor %q: chunk.total_bytes = %d, but shape %v of %v needs %d",
				c.GetName(), c.GetTotalBytes(), c.GetShape(), c.GetDtype(), want)
		}
		a.cur = &Tensor{
			Name:  c.GetName(),
			Role:  c.GetRole(),
			Shape: c.GetShape(),
			DType: c.GetDtype(),
			Data:  make([]byte, 0, c.GetTotalBytes()),
		}
		a.have = 0
	} else if c.GetName() != a.cur.Name || c.GetRole() != a.cur.Role {
		return nil, fmt.Errorf("tensor %q: chunk.name %q arrived before its %d of %d bytes were complete",
			a.cur.Name, c.GetName(), a.have, cap(a.cur.Data))
	} else if c.GetOffset() != a.have {
		return nil, fmt.Errorf("tensor %q: chunk.offset = %d, want %d (chunks must be in order without gaps)",
			a.cur.Name, c.GetOffset(), a.have)
	}
	if a.have+uint64(len(c.GetData())) > uint64(cap(a.cur.Data)) {
		return nil, fmt.Errorf("tensor %q: chunk.data runs past total_bytes %d", a.cur.Name, cap(a.cur.Data))
	}
	a.cur.Data = append(a.cur.Data, c.GetData()...)
	a.have += uint64(len(c.GetData()))
	if a.have < uint64(cap(a.cur.Data)) {
		return nil, nil
	}
	t := a.cur
	a.cur = nil
	return t, nil
}

// pending reports the name of a tensor whose chunks stopped early, if any.
func (a *assembler) pending() (string, bool) {
	if a.cur == nil {
		return "", false
	}
	return a.cur.Name, true
}

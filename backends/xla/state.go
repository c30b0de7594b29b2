package xla

import (
	"encoding/binary"
	"fmt"
	"math"

	pb "github.com/mypt/mypt/sdk/proto/backendv1"
)

// elemSize is the byte size of a state-stream dtype, 0 if unsupported.
func elemSize(d pb.DType) int {
	switch d {
	case pb.DType_DTYPE_F32:
		return 4
	case pb.DType_DTYPE_F64:
		return 8
	case pb.DType_DTYPE_BF16:
		return 2
	}
	return 0
}

// decodeF32 converts n little-endian elements of dtype d to float32.
func decodeF32(data []byte, n int, d pb.DType) ([]float32, error) {
	es := elemSize(d)
	if es == 0 {
		return nil, fmt.Errorf("unsupported dtype %v", d)
	}
	if len(data) != es*n {
		return nil, fmt.Errorf("got %d bytes, want %d (%d elements of %v)", len(data), es*n, n, d)
	}
	dst := make([]float32, n)
	for i := range dst {
		switch d {
		case pb.DType_DTYPE_F32:
			dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(data[4*i:]))
		case pb.DType_DTYPE_F64:
			dst[i] = float32(math.Float64frombits(binary.LittleEndian.Uint64(data[8*i:])))
		case pb.DType_DTYPE_BF16:
			dst[i] = math.Float32frombits(uint32(binary.LittleEndian.Uint16(data[2*i:])) << 16)
		}
	}
	return dst, nil
}

// encodeF32 converts src to little-endian elements of dtype d (bf16 rounds to nearest even).
func encodeF32(src []float32, d pb.DType) []byte {
	out := make([]byte, elemSize(d)*len(src))
	for i, v := range src {
		switch d {
		case pb.DType_DTYPE_F32:
			binary.LittleEndian.PutUint32(out[4*i:], math.Float32bits(v))
		case pb.DType_DTYPE_F64:
			binary.LittleEndian.PutUint64(out[8*i:], math.Float64bits(float64(v)))
		case pb.DType_DTYPE_BF16:
			bits := math.Float32bits(v)
			if v != v { // NaN stays NaN
				bits |= 1 << 22
			} else {
				bits += 0x7FFF + (bits>>16)&1
			}
			binary.LittleEndian.PutUint16(out[2*i:], uint16(bits>>16))
		}
	}
	return out
}

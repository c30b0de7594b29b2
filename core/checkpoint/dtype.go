package checkpoint

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/mypt/mypt/sdk"
	pb "github.com/mypt/mypt/sdk/proto/backendv1"
)

// safetensors dtype names for the dtypes the protocol knows.
var dtypeNames = map[pb.DType]string{
	pb.DType_DTYPE_F32:  "F32",
	pb.DType_DTYPE_BF16: "BF16",
	pb.DType_DTYPE_F16:  "F16",
	pb.DType_DTYPE_F64:  "F64",
}

func dtypeName(d pb.DType) string {
	if s, ok := dtypeNames[d]; ok {
		return s
	}
	return d.String()
}

func parseDTypeName(s string) (pb.DType, bool) {
	for d, name := range dtypeNames {
		if name == s {
			return d, true
		}
	}
	return pb.DType_DTYPE_UNSPECIFIED, false
}

// BF16ToF32 widens a bfloat16 value exactly.
func BF16ToF32(h uint16) float32 {
	return math.Float32frombits(uint32(h) << 16)
}

// F32ToF16 rounds an IEEE binary32 value to binary16 with round-to-nearest-
// even, including subnormal results and overflow to Inf. NaNs stay NaN.
func F32ToF16(f float32) uint16 {
	bits := math.Float32bits(f)
	sign := uint16(bits>>16) & 0x8000
	exp := int32(bits>>23) & 0xFF
	mant := bits & 0x7FFFFF
	switch {
	case exp == 0xFF && mant != 0: // NaN: keep the top payload bits, force quiet
		return sign | 0x7E00 | uint16(mant>>13)
	case exp == 0xFF: // Inf
		return sign | 0x7C00
	}
	// Unbiased exponent; binary16 normals cover 2^-14 .. 2^15.
	e := exp - 127
	if e > 15 {
		return sign | 0x7C00
	}
	if e >= -14 {
		// Normal result: keep 10 mantissa bits, round the dropped 13.
		h := uint32(e+15)<<10 | mant>>13
		rest := mant & 0x1FFF
		if rest > 0x1000 || (rest == 0x1000 && h&1 == 1) {
			h++ // may carry into the exponent, up to Inf: both correct
		}
		return sign | uint16(h)
	}
	if e < -25 {
		return sign // below half the smallest subnormal: rounds to zero
	}
	// Subnormal result: value = m·2^-24 with m = full significand >> shift.
	full := mant | 0x800000
	shift := uint32(-e - 1) // e = -15 → shift 14 (13 mantissa bits + 1)
	h := full >> shift
	rest := full & (1<<shift - 1)
	half := uint32(1) << (shift - 1)
	if rest > half || (rest == half && h&1 == 1) {
		h++
	}
	return sign | uint16(h)
}

// F16ToF32 widens a binary16 value exactly.
func F16ToF32(h uint16) float32 {
	sign := uint32(h&0x8000) << 16
	exp := uint32(h>>10) & 0x1F
	mant := uint32(h & 0x3FF)
	switch {
	case exp == 0x1F:
		return math.Float32frombits(sign | 0x7F800000 | mant<<13)
	case exp != 0:
		return math.Float32frombits(sign | (exp+112)<<23 | mant<<13)
	case mant == 0:
		return math.Float32frombits(sign)
	}
	// Subnormal: normalise into a binary32 normal.
	e := uint32(113)
	for mant&0x400 == 0 {
		mant <<= 1
		e--
	}
	return math.Float32frombits(sign | e<<23 | (mant&0x3FF)<<13)
}

// convertData re-encodes little-endian elements of dtype from as dtype to.
// Widening is exact; narrowing rounds to nearest even. F64 sources narrow
// through float32 (so F64→BF16/F16 rounds twice).
func convertData(src []byte, from, to pb.DType) ([]byte, error) {
	if from == to {
		return src, nil
	}
	inSize, outSize := sdk.DTypeSize(from), sdk.DTypeSize(to)
	if inSize == 0 || outSize == 0 {
		return nil, fmt.Errorf("cannot convert %s to %s", dtypeName(from), dtypeName(to))
	}
	if len(src)%inSize != 0 {
		return nil, fmt.Errorf("%d bytes is not a whole number of %s elements", len(src), dtypeName(from))
	}
	n := len(src) / inSize
	dst := make([]byte, n*outSize)
	le := binary.LittleEndian
	for i := range n {
		in := src[i*inSize:]
		out := dst[i*outSize:]
		if from == pb.DType_DTYPE_F64 && to == pb.DType_DTYPE_F32 {
			le.PutUint32(out, math.Float32bits(float32(math.Float64frombits(le.Uint64(in)))))
			continue
		}
		var f float32
		switch from {
		case pb.DType_DTYPE_F32:
			f = math.Float32frombits(le.Uint32(in))
		case pb.DType_DTYPE_BF16:
			f = BF16ToF32(le.Uint16(in))
		case pb.DType_DTYPE_F16:
			f = F16ToF32(le.Uint16(in))
		case pb.DType_DTYPE_F64:
			f = float32(math.Float64frombits(le.Uint64(in)))
		}
		switch to {
		case pb.DType_DTYPE_F32:
			le.PutUint32(out, math.Float32bits(f))
		case pb.DType_DTYPE_BF16:
			le.PutUint16(out, sdk.F32ToBF16(f)) // as the backends round: one rounding
		case pb.DType_DTYPE_F16:
			le.PutUint16(out, F32ToF16(f))
		case pb.DType_DTYPE_F64:
			le.PutUint64(out, math.Float64bits(float64(f)))
		}
	}
	return dst, nil
}

package sdk

import (
	"bytes"
	"math"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	pb "github.com/mypt/mypt/sdk/proto/backendv1"
)

func chunksOf(t *testing.T, tn *Tensor, max int) []*pb.TensorChunk {
	t.Helper()
	var out []*pb.TensorChunk
	if err := sendTensor(tn, max, func(c *pb.StateChunk) error {
		out = append(out, c.GetTensor())
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestChunkingRoundTrip(t *testing.T) {
	vals := make([]float32, 1001)
	for i := range vals {
		vals[i] = float32(i) * 0.5
	}
	tn := F32Tensor("w", pb.TensorRole_TENSOR_ROLE_PARAM, []int64{7, 143}, vals)
	chunks := chunksOf(t, tn, 1000)
	if len(chunks) != 5 { // 4004 bytes in chunks of 1000
		t.Fatalf("%d chunks, want 5", len(chunks))
	}
	var a assembler
	for i, c := range chunks {
		got, err := a.add(c)
		if err != nil {
			t.Fatal(err)
		}
		if (got != nil) != (i == len(chunks)-1) {
			t.Fatalf("chunk %d: completed = %v", i, got != nil)
		}
		if got != nil && !bytes.Equal(got.Data, tn.Data) {
			t.Fatal("reassembled bytes differ")
		}
	}
	// An empty tensor still travels as one chunk.
	empty := chunksOf(t, F32Tensor("e", pb.TensorRole_TENSOR_ROLE_PARAM, []int64{0}, nil), 1000)
	if got, err := a.add(empty[0]); err != nil || got == nil {
		t.Fatalf("empty tensor: %v, %v", got, err)
	}
}

func TestAssemblerRejects(t *testing.T) {
	tn := F32Tensor("w", pb.TensorRole_TENSOR_ROLE_PARAM, []int64{10}, make([]float32, 10))
	chunks := chunksOf(t, tn, 16)
	for _, tc := range []struct {
		name   string
		mutate func([]*pb.TensorChunk) []*pb.TensorChunk
		want   string
	}{
		{"gap", func(c []*pb.TensorChunk) []*pb.TensorChunk { return []*pb.TensorChunk{c[0], c[2]} }, "chunk.offset = 32, want 16"},
		{"late start", func(c []*pb.TensorChunk) []*pb.TensorChunk { return c[1:] }, "want 0"},
		{"wrong total", func(c []*pb.TensorChunk) []*pb.TensorChunk {
			c0 := proto.CloneOf(c[0])
			c0.TotalBytes = 44
			return []*pb.TensorChunk{c0}
		}, "total_bytes = 44"},
		{"interleaved", func(c []*pb.TensorChunk) []*pb.TensorChunk {
			c1 := proto.CloneOf(c[1])
			c1.Name = "other"
			return []*pb.TensorChunk{c[0], c1}
		}, `chunk.name "other"`},
		{"bad dtype", func(c []*pb.TensorChunk) []*pb.TensorChunk {
			c0 := proto.CloneOf(c[0])
			c0.Dtype = pb.DType_DTYPE_UNSPECIFIED
			return []*pb.TensorChunk{c0}
		}, "not a known dtype"},
	} {
		var a assembler
		var err error
		for _, c := range tc.mutate(chunks) {
			if _, err = a.add(c); err != nil {
				break
			}
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error = %v, want %q", tc.name, err, tc.want)
		}
	}
}

// Bit patterns worked out by hand from the IEEE layouts (core/checkpoint's
// tests also hold this function to PyTorch over every pattern class).
func TestF32ToBF16(t *testing.T) {
	for _, c := range []struct {
		in   uint32
		want uint16
		why  string
	}{
		{0x3F800000, 0x3F80, "1.0 is exact"},
		{0xC0490FDB, 0xC049, "-pi: dropped bits 0x0FDB < half, round down"},
		{0x3F808000, 0x3F80, "tie, kept LSB 0 (even): stays"},
		{0x3F818000, 0x3F82, "tie, kept LSB 1 (odd): rounds up to even"},
		{0x3F808001, 0x3F81, "just above the tie: up"},
		{0x7F7FFFFF, 0x7F80, "max float32 rounds up to +Inf"},
		{0x00000001, 0x0000, "smallest f32 subnormal rounds to +0"},
		{0x80000000, 0x8000, "-0 keeps its sign"},
		{0x7F800000, 0x7F80, "+Inf"},
		{0xFF800000, 0xFF80, "-Inf"},
		{0xFFC00001, 0xFFC0, "a negative quiet NaN keeps sign and stays NaN"},
		{0x7F800001, 0x7FC0, "a signalling NaN whose payload sits in the dropped bits is quieted, not turned into Inf"},
	} {
		if got := F32ToBF16(math.Float32frombits(c.in)); got != c.want {
			t.Errorf("F32ToBF16(%08x) = %04x, want %04x (%s)", c.in, got, c.want, c.why)
		}
	}
}

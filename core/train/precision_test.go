package train

import (
	"strings"
	"testing"

	pb "github.com/mypt/mypt/sdk/proto/backendv1"
)

func TestComputeDType(t *testing.T) {
	backend := func(kind string, dtypes ...pb.DType) *pb.GetInfoResponse {
		return &pb.GetInfoResponse{Name: "test",
			Devices:      []*pb.Device{{Kind: kind}},
			Capabilities: &pb.Capabilities{ComputeDtypes: dtypes}}
	}
	f32, bf16 := pb.DType_DTYPE_F32, pb.DType_DTYPE_BF16
	for _, c := range []struct {
		name, precision string
		b               *pb.GetInfoResponse
		want            pb.DType
		err             string
	}{
		{"auto on a GPU with bf16", "auto", backend("cuda", f32, bf16), bf16, ""},
		{"auto on a CPU with bf16", "auto", backend("cpu", f32, bf16), f32, ""},
		{"auto on a GPU without bf16", "auto", backend("cuda", f32), f32, ""},
		{"fp32 on a GPU with bf16", "fp32", backend("cuda", f32, bf16), f32, ""},
		{"bf16 on a CPU that declares it", "bf16", backend("cpu", f32, bf16), bf16, ""},
		{"bf16 undeclared", "bf16", backend("cpu", f32), 0, "does not declare BF16"},
	} {
		got, err := ComputeDType(c.b, c.precision)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%s: error %v, want one containing %q", c.name, err, c.err)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("%s: got %v, %v; want %v", c.name, got, err, c.want)
		}
	}
}

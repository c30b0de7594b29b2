package sdk_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	"github.com/mypt/mypt/sdk"
	pb "github.com/mypt/mypt/sdk/proto/backendv1"
)

// wireBackend is a raw gRPC Backend service that answers GetInfo with info and records
// the GetInfo request and every SetState chunk's data size as they arrive on the wire.
type wireBackend struct {
	pb.UnimplementedBackendServer
	info   *pb.GetInfoResponse
	req    *pb.GetInfoRequest
	chunks []int
	// refuse, when set, is every Configure's and SetState's answer.
	refuse error
}

func (w *wireBackend) Configure(context.Context, *pb.ConfigureRequest) (*pb.ConfigureResponse, error) {
	if w.refuse != nil {
		return nil, w.refuse
	}
	return &pb.ConfigureResponse{}, nil
}

func (w *wireBackend) GetInfo(_ context.Context, req *pb.GetInfoRequest) (*pb.GetInfoResponse, error) {
	w.req = req
	return w.info, nil
}

func (w *wireBackend) SetState(s pb.Backend_SetStateServer) error {
	if w.refuse != nil {
		return w.refuse
	}
	for {
		m, err := s.Recv()
		if errors.Is(err, io.EOF) {
			return s.SendAndClose(&pb.SetStateResponse{})
		}
		if err != nil {
			return err
		}
		if t := m.GetTensor(); t != nil {
			w.chunks = append(w.chunks, len(t.Data))
		}
	}
}

// dialWire connects a Client to w over an in-memory listener.
func dialWire(t *testing.T, w *wireBackend) *sdk.Client {
	t.Helper()
	lis := bufconn.Listen(1 << 20)
	srv := grpc.NewServer()
	pb.RegisterBackendServer(srv, w)
	go func() { _ = srv.Serve(lis) }()
	conn, err := grpc.NewClient("passthrough:///bufconn",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(); srv.Stop() })
	return sdk.NewInProcessClient("wire", pb.NewBackendClient(conn), nil)
}

// TestSetStateHonoursChunkSize: after GetInfo, SetState splits tensors into chunks of at
// most the backend's max_state_chunk_bytes (4 MiB when it declares 0).
func TestSetStateHonoursChunkSize(t *testing.T) {
	const size = 10_000 // bytes of the tensor sent (2,500 float32 values)
	for _, tc := range []struct {
		declared uint64
		want     []int
	}{
		{1000, []int{1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000}},
		{4096, []int{4096, 4096, 1808}},
		{0, []int{size}},
	} {
		w := &wireBackend{info: &pb.GetInfoResponse{ProtocolVersion: sdk.ProtocolVersion,
			Capabilities: &pb.Capabilities{MaxStateChunkBytes: tc.declared}}}
		c := dialWire(t, w)
		if _, err := c.GetInfo(t.Context(), nil); err != nil {
			t.Fatal(err)
		}
		tensor := sdk.F32Tensor("w", pb.TensorRole_TENSOR_ROLE_PARAM, []int64{size / 4}, make([]float32, size/4))
		if _, err := c.SetState(t.Context(), sdk.NewTensorList(0, tensor)); err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(w.chunks, tc.want) {
			t.Errorf("max_state_chunk_bytes %d: chunks %v, want %v", tc.declared, w.chunks, tc.want)
		}
	}
}

// TestGetInfoChecksProtocolVersion: a backend answering another protocol version is
// refused with both versions named; the request describes the host.
func TestGetInfoChecksProtocolVersion(t *testing.T) {
	w := &wireBackend{info: &pb.GetInfoResponse{Name: "future", ProtocolVersion: sdk.ProtocolVersion + 1}}
	c := dialWire(t, w)
	_, err := c.GetInfo(t.Context(), nil)
	if err == nil || !strings.Contains(err.Error(), "protocol v2") || !strings.Contains(err.Error(), "host speaks v1") {
		t.Fatalf("GetInfo of a v2 backend: %v, want an error naming both versions", err)
	}
	if w.req.GetHostProtocolVersion() != sdk.ProtocolVersion || w.req.GetHostVersion() == "" {
		t.Errorf("GetInfo request %v does not describe the host", w.req)
	}
	if n := len(w.req.GetHostFeatures()); n != len(pb.Feature_name)-1 {
		t.Errorf("host_features lists %d features, want every Feature (%d)", n, len(pb.Feature_name)-1)
	}
}

// TestMessageLimitMatchesProto: the Go constant is the proto's MAX_MESSAGE_BYTES, 512 MiB.
func TestMessageLimitMatchesProto(t *testing.T) {
	if sdk.MaxMessageBytes != 512<<20 || sdk.MaxChunkBytes != 4<<20 {
		t.Fatalf("MaxMessageBytes %d, MaxChunkBytes %d; want 512 MiB and 4 MiB (backend.proto)", sdk.MaxMessageBytes, sdk.MaxChunkBytes)
	}
}

// TestStatusErrorText: a backend's status error reaches users as "backend NAME: METHOD:
// Code: message", not gRPC's "rpc error: code = … desc = …", and callers still reach the
// status (sdk.Code, status.Code, errors.As to GRPCStatus), also through further wrapping.
func TestStatusErrorText(t *testing.T) {
	for _, tc := range []struct {
		refuse error
		code   codes.Code
		msg    string
		want   string
	}{
		{sdk.InvalidArgument("model.vocab_size", "must be positive, got %d", 0), codes.InvalidArgument,
			"model.vocab_size: must be positive, got 0",
			"backend wire: Configure: InvalidArgument: model.vocab_size: must be positive, got 0"},
		{sdk.Unimplemented("FEATURE_FROZEN_PARAMS"), codes.Unimplemented,
			"FEATURE_FROZEN_PARAMS is not implemented by this backend",
			"backend wire: Configure: Unimplemented: FEATURE_FROZEN_PARAMS is not implemented by this backend"},
		{status.Error(codes.ResourceExhausted, ""), codes.ResourceExhausted, "",
			"backend wire: Configure: ResourceExhausted"},
	} {
		c := dialWire(t, &wireBackend{refuse: tc.refuse})
		_, err := c.Configure(t.Context(), &pb.ConfigureRequest{})
		if err == nil || err.Error() != tc.want {
			t.Errorf("Configure error %q, want %q", err, tc.want)
		}
		for _, e := range []error{err, fmt.Errorf("configure backend: %w", err)} {
			if got := sdk.Code(e); got != tc.code {
				t.Errorf("sdk.Code(%q) = %v, want %v", e, got, tc.code)
			}
			if got := status.Code(e); got != tc.code {
				t.Errorf("status.Code(%q) = %v, want %v", e, got, tc.code)
			}
			var se interface{ GRPCStatus() *status.Status }
			if !errors.As(e, &se) || se.GRPCStatus().Code() != tc.code || se.GRPCStatus().Message() != tc.msg {
				t.Errorf("errors.As(%q) to GRPCStatus: %v, want code %v and message %q", e, se, tc.code, tc.msg)
			}
		}
	}
}

// TestSetStateStatusErrorText: a status that ends the SetState stream reads the same
// way, whether the client notices it while sending or when closing the stream.
func TestSetStateStatusErrorText(t *testing.T) {
	c := dialWire(t, &wireBackend{refuse: sdk.FailedPrecondition("call Configure before SetState")})
	tensor := sdk.F32Tensor("w", pb.TensorRole_TENSOR_ROLE_PARAM, []int64{4}, make([]float32, 4))
	_, err := c.SetState(t.Context(), sdk.NewTensorList(0, tensor))
	if err == nil || !strings.HasPrefix(err.Error(), "backend wire: SetState: ") ||
		!strings.HasSuffix(err.Error(), "FailedPrecondition: call Configure before SetState") {
		t.Errorf("SetState error %q, want \"backend wire: SetState: [send …: ]FailedPrecondition: call Configure before SetState\"", err)
	}
	if sdk.Code(err) != codes.FailedPrecondition {
		t.Errorf("sdk.Code = %v, want FailedPrecondition", sdk.Code(err))
	}
}

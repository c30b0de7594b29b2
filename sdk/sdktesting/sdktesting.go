// Package sdktesting lets backend authors unit-test a sdk.Backend over a
// real gRPC connection, in process, without building a plugin binary: the
// same server adapter, chunked state streams and status codes as a plugin,
// over an in-memory listener.
package sdktesting

import (
	"context"
	"fmt"
	"net"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"

	"github.com/mypt/mypt/sdk"
	pb "github.com/mypt/mypt/sdk/proto/backendv1"
)

// Connect serves b on an in-memory gRPC listener and returns a client
// connected to it. Everything is torn down when the test ends.
func Connect(t testing.TB, b sdk.Backend) *sdk.Client {
	t.Helper()
	c, err := Dial(b)
	if err != nil {
		t.Fatalf("sdktesting: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// Dial is Connect for callers without a testing.TB; Close the client to stop
// the server.
func Dial(b sdk.Backend) (*sdk.Client, error) {
	lis := bufconn.Listen(1 << 20)
	srv := grpc.NewServer(grpc.MaxRecvMsgSize(sdk.MaxMessageBytes), grpc.MaxSendMsgSize(sdk.MaxMessageBytes))
	pb.RegisterBackendServer(srv, sdk.NewGRPCServer(b))
	go func() { _ = srv.Serve(lis) }()
	conn, err := grpc.NewClient("passthrough:///bufconn",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(sdk.MaxMessageBytes), grpc.MaxCallSendMsgSize(sdk.MaxMessageBytes)),
	)
	if err != nil {
		srv.Stop()
		return nil, err
	}
	return sdk.NewInProcessClient("in-process", pb.NewBackendClient(conn), func() error {
		err := conn.Close()
		srv.Stop()
		return err
	}), nil
}

// State returns b's tensors of the given roles (GetState's default roles —
// parameters and both Adam moments — when none) as float32, keyed
// "ROLE/name", e.g. "TENSOR_ROLE_GRAD/ln_f.weight". It fails t on an error
// or a tensor that is not F32.
func State(t testing.TB, b sdk.Backend, roles ...pb.TensorRole) map[string][]float32 {
	t.Helper()
	w := &sdk.StateCollector{}
	if err := b.GetState(context.Background(), &pb.GetStateRequest{Roles: roles}, w); err != nil {
		t.Fatalf("GetState: %v", err)
	}
	out := map[string][]float32{}
	for _, x := range w.Tensors {
		if x.DType != pb.DType_DTYPE_F32 {
			t.Fatalf("GetState: tensor %s is %v, want F32", x.Name, x.DType)
		}
		v, err := sdk.F32Values(x.Data)
		if err != nil {
			t.Fatalf("GetState: tensor %s: %v", x.Name, err)
		}
		out[fmt.Sprintf("%v/%s", x.Role, x.Name)] = v
	}
	return out
}

// Command testplugin is the bigram example backend with faults injected on
// request, for the SDK's process-level tests. MYPT_TESTPLUGIN_FAULT selects:
//
//	crash-in-forward  ForwardBackward logs an error and exits with status 3
//	hang-in-forward   ForwardBackward never returns
//	protocol-99       the handshake offers protocol version 99 only
package main

import (
	"context"
	"log/slog"
	"os"

	"github.com/hashicorp/go-plugin"

	"github.com/mypt/mypt/sdk"
	"github.com/mypt/mypt/sdk/examples/bigram"
	pb "github.com/mypt/mypt/sdk/proto/backendv1"
)

type faulty struct {
	*bigram.Backend
	fault string
}

func (f *faulty) ForwardBackward(ctx context.Context, req *pb.ForwardBackwardRequest) (*pb.ForwardBackwardResponse, error) {
	switch f.fault {
	case "crash-in-forward":
		slog.Error("testplugin: simulated crash in ForwardBackward")
		os.Exit(3)
	case "hang-in-forward":
		select {}
	}
	return f.Backend.ForwardBackward(ctx, req)
}

func main() {
	b := &faulty{Backend: bigram.New(), fault: os.Getenv("MYPT_TESTPLUGIN_FAULT")}
	if b.fault == "protocol-99" {
		hs := sdk.Handshake
		hs.ProtocolVersion = 99
		plugin.Serve(&plugin.ServeConfig{
			HandshakeConfig:  hs,
			VersionedPlugins: map[int]plugin.PluginSet{99: {sdk.PluginName: &sdk.GRPCPlugin{Impl: b}}},
		})
		return
	}
	sdk.Serve(b)
}

package sdk

import (
	"context"

	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"

	pb "github.com/mypt/mypt/sdk/proto/backendv1"
)

// Handshake is the go-plugin handshake every mypt backend plugin uses. The
// magic cookie only guards against running a plugin binary by hand; it is not
// a security measure.
var Handshake = plugin.HandshakeConfig{
	ProtocolVersion:  ProtocolVersion,
	MagicCookieKey:   "MYPT_BACKEND_PLUGIN",
	MagicCookieValue: "8d5c3f0e6a2b4e19b7f1c0a9d3e2f4b6",
}

// PluginName is the name the backend service is dispensed under.
const PluginName = "backend"

// GRPCPlugin is the go-plugin binding of the backend service. Impl is set on
// the plugin side and nil on the host side.
type GRPCPlugin struct {
	plugin.NetRPCUnsupportedPlugin
	Impl Backend
}

// GRPCServer registers the backend service on the plugin's gRPC server.
func (p *GRPCPlugin) GRPCServer(_ *plugin.GRPCBroker, s *grpc.Server) error {
	pb.RegisterBackendServer(s, NewGRPCServer(p.Impl))
	return nil
}

// GRPCClient returns the raw generated client; Client wraps it.
func (p *GRPCPlugin) GRPCClient(_ context.Context, _ *plugin.GRPCBroker, c *grpc.ClientConn) (any, error) {
	return pb.NewBackendClient(c), nil
}

// versionedPlugins lists the plugin sets per protocol version, so a v2 can be
// offered beside v1 later without breaking old plugins or hosts.
func versionedPlugins(impl Backend) map[int]plugin.PluginSet {
	return map[int]plugin.PluginSet{
		1: {PluginName: &GRPCPlugin{Impl: impl}},
	}
}

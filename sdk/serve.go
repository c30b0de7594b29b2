package sdk

import (
	"log/slog"
	"os"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
)

// Serve runs b as a mypt backend plugin and returns when the host is done
// with it. Call it from the plugin binary's main. It also makes the default
// slog logger write to the host's log (levels are kept).
//
// A plugin binary run by hand (without the host's handshake) prints a short
// explanation and exits with status 1.
func Serve(b Backend) {
	// go-plugin replaces os.Stderr with a pipe inside plugin.Serve; log lines
	// must go to the real stderr, where the host parses them.
	stderr := os.Stderr
	slog.SetDefault(NewPluginLogger(stderr, slog.LevelDebug))
	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig:  Handshake,
		VersionedPlugins: versionedPlugins(b),
		GRPCServer: func(opts []grpc.ServerOption) *grpc.Server {
			opts = append(opts, grpc.MaxRecvMsgSize(MaxMessageBytes), grpc.MaxSendMsgSize(MaxMessageBytes))
			return grpc.NewServer(opts...)
		},
		Logger: hclog.New(&hclog.LoggerOptions{
			Level:      hclog.Info,
			Output:     stderr,
			JSONFormat: true,
		}),
	})
}

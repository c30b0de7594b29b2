package conformance

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/mypt/mypt/sdk"
)

// source is where a suite's backends come from: a plugin binary started as
// processes (Run, Certify), or a constructor called in process (RunBackend,
// CertifyBackend). The checks see only sdk.Backend; what differs between the
// two — stopping a backend, noticing that it died — lives here.
type source interface {
	// open starts a backend: a new plugin process, or a new in-process backend.
	open(ctx context.Context) (sdk.Backend, error)
	// close stops a backend open returned, in order: Shutdown, then its process
	// or resources.
	close(b sdk.Backend) error
	// discard stops a backend that may be in any state, or hung, after a failure.
	discard(b sdk.Backend)
	// exited reports whether b's process has ended (never, in process).
	exited(b sdk.Backend) bool
}

// pluginSource starts a plugin binary through sdk.Start.
type pluginSource struct {
	path string
	env  []string // added to the plugin's environment
	opts sdk.StartOptions
}

func newPluginSource(path string, env []string, opts Options, log *slog.Logger) pluginSource {
	return pluginSource{path: path, env: env,
		opts: sdk.StartOptions{Logger: log, StartTimeout: opts.StartTimeout, CallTimeout: opts.CallTimeout}}
}

// start starts a plugin process; the handshake check needs the *sdk.Client.
func (p pluginSource) start(ctx context.Context) (*sdk.Client, error) {
	o := p.opts
	o.Env = p.env
	return sdk.Start(ctx, p.path, o)
}

func (p pluginSource) open(ctx context.Context) (sdk.Backend, error) { return p.start(ctx) }

func (pluginSource) close(b sdk.Backend) error { return b.(*sdk.Client).Close() }

func (pluginSource) discard(b sdk.Backend) { b.(*sdk.Client).Kill() }

func (pluginSource) exited(b sdk.Backend) bool { return b.(*sdk.Client).Exited() }

// inProcessSource calls a constructor for every backend a check needs.
type inProcessSource struct {
	newBackend func() sdk.Backend
}

// shutdownTimeout bounds the Shutdown that stops an in-process backend.
const shutdownTimeout = 10 * time.Second

func (s inProcessSource) open(context.Context) (b sdk.Backend, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("newBackend panicked: %v", p)
		}
	}()
	if b = s.newBackend(); b == nil {
		return nil, errors.New("newBackend returned nil")
	}
	return b, nil
}

// close shuts the backend down (a check may already have: that error is
// expected and ignored) and closes it when it holds resources beyond its
// session, as an *sdk.Client from sdktesting.Connect does.
func (inProcessSource) close(b sdk.Backend) error {
	ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	_ = b.Shutdown(ctx)
	if c, ok := b.(io.Closer); ok {
		return c.Close()
	}
	return nil
}

// discard closes the backend in the background: a hung in-process backend
// cannot be killed, and the next check must not wait for it.
func (s inProcessSource) discard(b sdk.Backend) { go func() { _ = s.close(b) }() }

func (inProcessSource) exited(sdk.Backend) bool { return false }

package sdk

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/mypt/mypt/sdk/proto/backendv1"
)

// ErrPluginExited is wrapped by every error caused by the plugin process
// dying (crash, kill, out-of-memory killer).
var ErrPluginExited = errors.New("backend plugin exited")

// StartOptions tunes how a plugin process is started.
type StartOptions struct {
	// Logger receives the plugin's log lines and go-plugin's own messages;
	// nil means slog.Default().
	Logger *slog.Logger
	// StartTimeout bounds the handshake; 0 means 30 s.
	StartTimeout time.Duration
	// CallTimeout bounds every call except the state streams; 0 means none.
	// A call that runs past it is reported as a hung plugin.
	CallTimeout time.Duration
	// Env is added to the plugin's environment.
	Env []string
	// HostVersion names the host in GetInfo requests, e.g. "mypt 0.3.0"; empty
	// means "mypt-sdk".
	HostVersion string
}

// Client is the host side of a running backend plugin. It implements
// Backend, so code that drives a backend does not care whether it runs in
// process or in a plugin. Close it to stop the process.
type Client struct {
	name   string // file name of the plugin binary, for messages
	path   string
	rpc    pb.BackendClient
	plugin *plugin.Client // nil for in-process connections
	cmd    *exec.Cmd
	stderr *tailWriter
	opts   StartOptions
	close  func() error

	mu         sync.Mutex
	chunkBytes int // SetState chunk size, from the last GetInfo (0 until then: MaxChunkBytes)
}

// Start launches the plugin binary at path, performs the handshake and
// returns a connected client.
func Start(ctx context.Context, path string, opts StartOptions) (*Client, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.StartTimeout == 0 {
		opts.StartTimeout = 30 * time.Second
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("backend plugin %s: %w", path, err)
	}
	name := filepath.Base(path)
	cmd := exec.Command(path)
	cmd.Env = append(cmd.Environ(), opts.Env...)
	bindToParent(cmd)
	tail := newTailWriter(40)
	pc := plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig:  Handshake,
		VersionedPlugins: versionedPlugins(nil),
		Cmd:              cmd,
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		Logger:           hostLogger(opts.Logger, "plugin"),
		Stderr:           tail,
		StartTimeout:     opts.StartTimeout,
		GRPCDialOptions: []grpc.DialOption{grpc.WithDefaultCallOptions(
			grpc.MaxCallRecvMsgSize(MaxMessageBytes), grpc.MaxCallSendMsgSize(MaxMessageBytes))},
	})
	c := &Client{name: name, path: path, plugin: pc, cmd: cmd, stderr: tail, opts: opts}
	rpcClient, err := pc.Client()
	if err != nil {
		pc.Kill()
		return nil, c.describeStartError(err)
	}
	raw, err := rpcClient.Dispense(PluginName)
	if err != nil {
		pc.Kill()
		return nil, fmt.Errorf("backend plugin %s: dispense %q: %w", path, PluginName, err)
	}
	c.rpc = raw.(pb.BackendClient)
	c.close = func() error { pc.Kill(); return nil }
	return c, nil
}

// describeStartError explains a failed start: a version mismatch, a binary
// that is not a mypt plugin, or one that crashed during start-up.
func (c *Client) describeStartError(err error) error {
	msg := strings.ToLower(err.Error())
	switch {
	case strings.Contains(msg, "incompatible api version"):
		return fmt.Errorf("backend plugin %s speaks another protocol version (this mypt speaks v%d): %w",
			c.path, ProtocolVersion, err)
	case strings.Contains(msg, "exec format error"), strings.Contains(msg, "permission denied"):
		return fmt.Errorf("backend plugin %s cannot be executed: %w", c.path, err)
	}
	return fmt.Errorf("backend plugin %s failed to start: %w%s", c.path, err, c.diagnostics())
}

// NewInProcessClient wraps an already-connected gRPC client, e.g. over an
// in-memory listener; closeFn is called by Close.
func NewInProcessClient(name string, rpc pb.BackendClient, closeFn func() error) *Client {
	return &Client{name: name, path: name, rpc: rpc, close: closeFn}
}

// Name returns the plugin binary's file name.
func (c *Client) Name() string { return c.name }

// Pid returns the plugin process id, or 0 for in-process clients.
func (c *Client) Pid() int {
	if c.cmd == nil || c.cmd.Process == nil {
		return 0
	}
	return c.cmd.Process.Pid
}

// Exited reports whether the plugin process has ended.
func (c *Client) Exited() bool { return c.plugin != nil && c.plugin.Exited() }

// Close asks the backend to shut down (briefly) and stops the process,
// waiting for it so no zombie is left behind.
func (c *Client) Close() error {
	if c.rpc != nil && !c.Exited() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, _ = c.rpc.Shutdown(ctx, &pb.ShutdownRequest{})
		cancel()
	}
	if c.close != nil {
		return c.close()
	}
	return nil
}

// Kill stops the plugin process immediately and reaps it.
func (c *Client) Kill() {
	if c.plugin != nil {
		c.plugin.Kill()
	} else if c.close != nil {
		_ = c.close()
	}
}

// StderrTail returns the last lines the plugin wrote to stderr.
func (c *Client) StderrTail() string {
	if c.stderr == nil {
		return ""
	}
	return c.stderr.String()
}

func (c *Client) callCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	if c.opts.CallTimeout > 0 {
		return context.WithTimeout(ctx, c.opts.CallTimeout)
	}
	return ctx, func() {}
}

// wrap adds the plugin's name and, when the process died or hung, its exit
// status and the tail of its stderr. A status error reads as the code's name
// and the backend's message (statusError); the status stays reachable through
// errors.As (and Code).
func (c *Client) wrap(method string, err error) error {
	if err == nil {
		return nil
	}
	err = readableStatus(err)
	code := status.Code(err)
	if c.plugin != nil && (code == codes.Unavailable || code == codes.Canceled || errors.Is(err, io.EOF)) {
		// The connection broke; give the process a moment to be reaped so
		// its exit status is known.
		deadline := time.Now().Add(3 * time.Second)
		for !c.plugin.Exited() && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if c.plugin.Exited() {
			return fmt.Errorf("backend plugin %s died during %s (%s)%s: %w: %w",
				c.name, method, c.exitStatus(), c.diagnostics(), ErrPluginExited, err)
		}
	}
	if code == codes.DeadlineExceeded && c.opts.CallTimeout > 0 {
		return fmt.Errorf("backend plugin %s did not answer %s within %s (hung?)%s: %w",
			c.name, method, c.opts.CallTimeout, c.diagnostics(), err)
	}
	return fmt.Errorf("backend %s: %s: %w", c.name, method, err)
}

func (c *Client) exitStatus() string {
	if c.cmd == nil || c.cmd.ProcessState == nil {
		return "exit status unknown"
	}
	return c.cmd.ProcessState.String()
}

func (c *Client) diagnostics() string {
	tail := strings.TrimSpace(c.StderrTail())
	if tail == "" {
		return ""
	}
	return "; last stderr lines:\n" + indent(tail) + "\n"
}

func indent(s string) string {
	return "    " + strings.ReplaceAll(s, "\n", "\n    ")
}

// GetInfo implements Backend. A nil req is filled with this host's description
// (HostRequest). The answer must speak this SDK's protocol version; its
// max_state_chunk_bytes sets the chunk size of later SetState calls.
func (c *Client) GetInfo(ctx context.Context, req *pb.GetInfoRequest) (*pb.GetInfoResponse, error) {
	ctx, cancel := c.callCtx(ctx)
	defer cancel()
	if req == nil {
		req = HostRequest(c.opts.HostVersion)
	}
	resp, err := c.rpc.GetInfo(ctx, req)
	if err != nil {
		return nil, c.wrap("GetInfo", err)
	}
	if v := resp.GetProtocolVersion(); v != ProtocolVersion {
		return nil, fmt.Errorf("backend %s: GetInfo: it speaks protocol v%d, this host speaks v%d", c.name, v, ProtocolVersion)
	}
	c.mu.Lock()
	c.chunkBytes = ChunkBytes(resp.GetCapabilities())
	c.mu.Unlock()
	return resp, nil
}

// HostRequest is the GetInfoRequest of a host called version ("" = "mypt-sdk"):
// this SDK's protocol version and every Feature it knows.
func HostRequest(version string) *pb.GetInfoRequest {
	if version == "" {
		version = "mypt-sdk"
	}
	req := &pb.GetInfoRequest{HostVersion: version, HostProtocolVersion: ProtocolVersion}
	for v := range pb.Feature_name {
		if v != 0 {
			req.HostFeatures = append(req.HostFeatures, pb.Feature(v))
		}
	}
	slices.Sort(req.HostFeatures)
	return req
}

// ChunkBytes is the SetState chunk size a backend declaring caps accepts:
// max_state_chunk_bytes, 0 meaning MaxChunkBytes, capped so a chunk fits in one
// message.
func ChunkBytes(caps *pb.Capabilities) int {
	n := caps.GetMaxStateChunkBytes()
	if n == 0 {
		return MaxChunkBytes
	}
	return int(min(n, uint64(MaxMessageBytes-chunkOverhead)))
}

func (c *Client) setStateChunk() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.chunkBytes == 0 {
		return MaxChunkBytes
	}
	return c.chunkBytes
}

// Configure implements Backend.
func (c *Client) Configure(ctx context.Context, req *pb.ConfigureRequest) (*pb.ConfigureResponse, error) {
	ctx, cancel := c.callCtx(ctx)
	defer cancel()
	resp, err := c.rpc.Configure(ctx, req)
	return resp, c.wrap("Configure", err)
}

// SetState implements Backend: it streams r's tensors in chunks of the size the
// backend declared in its last GetInfo (MaxChunkBytes before one).
func (c *Client) SetState(ctx context.Context, r StateReader) (*pb.SetStateResponse, error) {
	stream, err := c.rpc.SetState(ctx)
	if err != nil {
		return nil, c.wrap("SetState", err)
	}
	send := func(m *pb.StateChunk) error {
		if err := stream.Send(m); err != nil {
			if errors.Is(err, io.EOF) {
				// The server ended the stream early; its status says why.
				_, err = stream.CloseAndRecv()
			}
			// Readable here already: sendTensor wraps it before wrap sees it.
			return readableStatus(err)
		}
		return nil
	}
	chunk := c.setStateChunk()
	if err := send(&pb.StateChunk{Item: &pb.StateChunk_Header{Header: r.Header()}}); err != nil {
		return nil, c.wrap("SetState", err)
	}
	for {
		t, err := r.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("backend %s: SetState: read state: %w", c.name, err)
		}
		if err := sendTensor(t, chunk, send); err != nil {
			return nil, c.wrap("SetState", err)
		}
	}
	resp, err := stream.CloseAndRecv()
	return resp, c.wrap("SetState", err)
}

// GetState implements Backend: it reassembles chunks into whole tensors.
func (c *Client) GetState(ctx context.Context, req *pb.GetStateRequest, w StateWriter) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := c.rpc.GetState(ctx, req)
	if err != nil {
		return c.wrap("GetState", err)
	}
	var asm assembler
	for first := true; ; first = false {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			if first {
				return fmt.Errorf("backend %s: GetState: stream ended without a header", c.name)
			}
			if name, ok := asm.pending(); ok {
				return fmt.Errorf("backend %s: GetState: stream ended inside tensor %q", c.name, name)
			}
			return nil
		}
		if err != nil {
			return c.wrap("GetState", err)
		}
		if first {
			h := msg.GetHeader()
			if h == nil {
				return fmt.Errorf("backend %s: GetState: first message is not a StateHeader", c.name)
			}
			if err := w.WriteHeader(h); err != nil {
				return fmt.Errorf("GetState: write header: %w", err)
			}
			continue
		}
		chunk := msg.GetTensor()
		if chunk == nil {
			return fmt.Errorf("backend %s: GetState: a second StateHeader arrived mid-stream", c.name)
		}
		t, err := asm.add(chunk)
		if err != nil {
			return fmt.Errorf("backend %s: GetState: %w", c.name, err)
		}
		if t != nil {
			if err := w.WriteTensor(t); err != nil {
				return fmt.Errorf("GetState: write tensor %q: %w", t.Name, err)
			}
		}
	}
}

// ForwardBackward implements Backend.
func (c *Client) ForwardBackward(ctx context.Context, req *pb.ForwardBackwardRequest) (*pb.ForwardBackwardResponse, error) {
	ctx, cancel := c.callCtx(ctx)
	defer cancel()
	resp, err := c.rpc.ForwardBackward(ctx, req)
	return resp, c.wrap("ForwardBackward", err)
}

// OptimizerStep implements Backend.
func (c *Client) OptimizerStep(ctx context.Context, req *pb.OptimizerStepRequest) (*pb.OptimizerStepResponse, error) {
	ctx, cancel := c.callCtx(ctx)
	defer cancel()
	resp, err := c.rpc.OptimizerStep(ctx, req)
	return resp, c.wrap("OptimizerStep", err)
}

// Evaluate implements Backend.
func (c *Client) Evaluate(ctx context.Context, req *pb.EvaluateRequest) (*pb.EvaluateResponse, error) {
	ctx, cancel := c.callCtx(ctx)
	defer cancel()
	resp, err := c.rpc.Evaluate(ctx, req)
	return resp, c.wrap("Evaluate", err)
}

// Prefill implements Backend.
func (c *Client) Prefill(ctx context.Context, req *pb.PrefillRequest) (*pb.PrefillResponse, error) {
	ctx, cancel := c.callCtx(ctx)
	defer cancel()
	resp, err := c.rpc.Prefill(ctx, req)
	return resp, c.wrap("Prefill", err)
}

// Decode implements Backend.
func (c *Client) Decode(ctx context.Context, req *pb.DecodeRequest) (*pb.DecodeResponse, error) {
	ctx, cancel := c.callCtx(ctx)
	defer cancel()
	resp, err := c.rpc.Decode(ctx, req)
	return resp, c.wrap("Decode", err)
}

// ReleaseCache implements Backend.
func (c *Client) ReleaseCache(ctx context.Context, req *pb.ReleaseCacheRequest) (*pb.ReleaseCacheResponse, error) {
	ctx, cancel := c.callCtx(ctx)
	defer cancel()
	resp, err := c.rpc.ReleaseCache(ctx, req)
	return resp, c.wrap("ReleaseCache", err)
}

// Shutdown implements Backend: the backend frees everything but the process
// keeps running (Close stops it).
func (c *Client) Shutdown(ctx context.Context) error {
	ctx, cancel := c.callCtx(ctx)
	defer cancel()
	_, err := c.rpc.Shutdown(ctx, &pb.ShutdownRequest{})
	return c.wrap("Shutdown", err)
}

// tailWriter keeps the last n lines written to it.
type tailWriter struct {
	mu      sync.Mutex
	n       int
	lines   []string
	partial strings.Builder
}

func newTailWriter(n int) *tailWriter { return &tailWriter{n: n} }

func (w *tailWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, b := range p {
		if b != '\n' {
			w.partial.WriteByte(b)
			continue
		}
		w.lines = append(w.lines, w.partial.String())
		w.partial.Reset()
		if len(w.lines) > w.n {
			w.lines = w.lines[len(w.lines)-w.n:]
		}
	}
	return len(p), nil
}

func (w *tailWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	s := strings.Join(w.lines, "\n")
	if w.partial.Len() > 0 {
		s += "\n" + w.partial.String()
	}
	return s
}

var _ Backend = (*Client)(nil)

// Package sdk is what a mypt backend author imports: the Backend interface a
// compute plugin implements, Serve to run it as a go-plugin process, the host
// side Client the core uses to start and drive plugins, and the status errors
// that are part of the protocol's contract.
//
// Requests and responses are the messages of sdk/proto (package backendv1),
// documented field by field in backend.proto; the SDK hides transport:
// go-plugin handshakes, gRPC streams, chunking of large tensors and status
// codes. A backend built on sdk/backendkit (see docs/PLUGIN_AUTHORS.md):
//
//	func main() { sdk.Serve(backendkit.New(myEngine{})) }
package sdk

import (
	"context"

	pb "github.com/mypt/mypt/sdk/proto/backendv1"
)

// ProtocolVersion is the backend protocol version this SDK speaks.
const ProtocolVersion = 1

// MaxMessageBytes is the protocol's message-size limit (backend.proto's
// MAX_MESSAGE_BYTES): every gRPC server and client of the protocol, in a plugin,
// in the host or in process (sdktesting), sends and accepts messages up to it.
const MaxMessageBytes = int(pb.Limits_MAX_MESSAGE_BYTES)

// MaxChunkBytes is the default state chunk (backend.proto's
// DEFAULT_STATE_CHUNK_BYTES): what a backend that leaves
// Capabilities.max_state_chunk_bytes at 0 accepts, and what GetState sends.
const MaxChunkBytes = int(pb.Limits_DEFAULT_STATE_CHUNK_BYTES)

// chunkOverhead is room for a chunk's other fields (name, shape, offsets) within
// MaxMessageBytes.
const chunkOverhead = 64 << 10

// Backend is the compute a plugin provides. The SDK calls its methods from
// gRPC handlers one at a time (GetInfo excepted), unless the backend is
// SelfSerializing. Return errors made with InvalidArgument, FailedPrecondition,
// ResourceExhausted, Unimplemented or NotFound to give the host the right
// status code; any other error reaches the host as INTERNAL.
//
// Most backends are built with sdk/backendkit, which implements this interface
// around an engine and leaves only the maths to the backend. A backend written
// against Backend directly implements the calls of profile "core" (GetInfo,
// Configure, SetState, GetState, Evaluate, Shutdown) itself and embeds
// UnimplementedProfiles for the profiles it lacks (training: ForwardBackward and
// OptimizerStep; kv-cache: Prefill, Decode, ReleaseCache), which also gives
// defaults to calls added by later protocol versions.
type Backend interface {
	// GetInfo describes the backend; req says who the host is (it may be nil).
	GetInfo(ctx context.Context, req *pb.GetInfoRequest) (*pb.GetInfoResponse, error)
	Configure(ctx context.Context, req *pb.ConfigureRequest) (*pb.ConfigureResponse, error)
	// SetState reads a header and then whole tensors from r until io.EOF.
	SetState(ctx context.Context, r StateReader) (*pb.SetStateResponse, error)
	// GetState writes a header and then whole tensors to w; the SDK chunks them.
	GetState(ctx context.Context, req *pb.GetStateRequest, w StateWriter) error
	ForwardBackward(ctx context.Context, req *pb.ForwardBackwardRequest) (*pb.ForwardBackwardResponse, error)
	OptimizerStep(ctx context.Context, req *pb.OptimizerStepRequest) (*pb.OptimizerStepResponse, error)
	Evaluate(ctx context.Context, req *pb.EvaluateRequest) (*pb.EvaluateResponse, error)
	Prefill(ctx context.Context, req *pb.PrefillRequest) (*pb.PrefillResponse, error)
	Decode(ctx context.Context, req *pb.DecodeRequest) (*pb.DecodeResponse, error)
	ReleaseCache(ctx context.Context, req *pb.ReleaseCacheRequest) (*pb.ReleaseCacheResponse, error)
	Shutdown(ctx context.Context) error
}

// Tensor is one whole named tensor of a state stream.
type Tensor struct {
	Name  string
	Role  pb.TensorRole
	Shape []int64
	DType pb.DType
	Data  []byte // little-endian elements, row-major
}

// StateReader yields the tensors of an incoming state stream.
type StateReader interface {
	// Header returns the stream's header.
	Header() *pb.StateHeader
	// Next returns the next whole tensor, or io.EOF after the last one.
	Next() (*Tensor, error)
}

// StateWriter receives the tensors of an outgoing state stream. WriteHeader
// must be called once, before any WriteTensor.
type StateWriter interface {
	WriteHeader(h *pb.StateHeader) error
	WriteTensor(t *Tensor) error
}

// SelfSerializing is implemented by a Backend that serialises its own calls (as
// sdk/backendkit does); the SDK's gRPC adapter then does not hold a second lock
// around them.
type SelfSerializing interface {
	Backend
	SerializesCalls()
}

// UnimplementedProfiles answers UNIMPLEMENTED for the calls of the optional
// profiles (training and kv-cache). Embed it in a Backend and override what the
// backend supports; the core calls have no default.
type UnimplementedProfiles struct{}

func (UnimplementedProfiles) ForwardBackward(context.Context, *pb.ForwardBackwardRequest) (*pb.ForwardBackwardResponse, error) {
	return nil, Unimplemented("ForwardBackward")
}

func (UnimplementedProfiles) OptimizerStep(context.Context, *pb.OptimizerStepRequest) (*pb.OptimizerStepResponse, error) {
	return nil, Unimplemented("OptimizerStep")
}

func (UnimplementedProfiles) Prefill(context.Context, *pb.PrefillRequest) (*pb.PrefillResponse, error) {
	return nil, Unimplemented("Prefill")
}

func (UnimplementedProfiles) Decode(context.Context, *pb.DecodeRequest) (*pb.DecodeResponse, error) {
	return nil, Unimplemented("Decode")
}

func (UnimplementedProfiles) ReleaseCache(context.Context, *pb.ReleaseCacheRequest) (*pb.ReleaseCacheResponse, error) {
	return nil, Unimplemented("ReleaseCache")
}

package sdk

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	pb "github.com/mypt/mypt/sdk/proto/backendv1"
)

// grpcServer adapts a Backend to the generated gRPC service. Unless the backend
// is SelfSerializing it serialises calls (except GetInfo), so backend authors
// never see two at once.
type grpcServer struct {
	pb.UnimplementedBackendServer
	impl Backend
	mu   sync.Locker
}

// NewGRPCServer returns the gRPC service implementation for b. Serve uses it;
// it is exported for hosts that embed a backend in their own gRPC server.
func NewGRPCServer(b Backend) pb.BackendServer {
	var mu sync.Locker = &sync.Mutex{}
	if _, ok := b.(SelfSerializing); ok {
		mu = noLock{}
	}
	return &grpcServer{impl: b, mu: mu}
}

// noLock is the Locker of a SelfSerializing backend.
type noLock struct{}

func (noLock) Lock()   {}
func (noLock) Unlock() {}

func (s *grpcServer) GetInfo(ctx context.Context, req *pb.GetInfoRequest) (*pb.GetInfoResponse, error) {
	resp, err := s.impl.GetInfo(ctx, req)
	return resp, toStatus("GetInfo", err)
}

func (s *grpcServer) Configure(ctx context.Context, req *pb.ConfigureRequest) (*pb.ConfigureResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	resp, err := s.impl.Configure(ctx, req)
	return resp, toStatus("Configure", err)
}

func (s *grpcServer) SetState(stream pb.Backend_SetStateServer) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	first, err := stream.Recv()
	if err != nil {
		return toStatus("SetState", fmt.Errorf("receive header: %w", err))
	}
	h := first.GetHeader()
	if h == nil {
		return InvalidArgument("chunk.header", "the first SetState message must carry the StateHeader")
	}
	r := &streamReader{header: h, recv: stream.Recv}
	resp, err := s.impl.SetState(stream.Context(), r)
	if err != nil {
		if r.err != nil {
			return r.err
		}
		return toStatus("SetState", err)
	}
	// Drain what the backend left unread so a short read is reported, not hidden.
	for {
		if _, err := r.Next(); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			return err
		}
	}
	return stream.SendAndClose(resp)
}

func (s *grpcServer) GetState(req *pb.GetStateRequest, stream pb.Backend_GetStateServer) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	w := &streamWriter{send: stream.Send, maxChunk: MaxChunkBytes}
	err := s.impl.GetState(stream.Context(), req, w)
	if err == nil && !w.headerSent {
		err = errors.New("backend wrote no StateHeader")
	}
	return toStatus("GetState", err)
}

func (s *grpcServer) ForwardBackward(ctx context.Context, req *pb.ForwardBackwardRequest) (*pb.ForwardBackwardResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	resp, err := s.impl.ForwardBackward(ctx, req)
	return resp, toStatus("ForwardBackward", err)
}

func (s *grpcServer) OptimizerStep(ctx context.Context, req *pb.OptimizerStepRequest) (*pb.OptimizerStepResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	resp, err := s.impl.OptimizerStep(ctx, req)
	return resp, toStatus("OptimizerStep", err)
}

func (s *grpcServer) Evaluate(ctx context.Context, req *pb.EvaluateRequest) (*pb.EvaluateResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	resp, err := s.impl.Evaluate(ctx, req)
	return resp, toStatus("Evaluate", err)
}

func (s *grpcServer) Prefill(ctx context.Context, req *pb.PrefillRequest) (*pb.PrefillResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	resp, err := s.impl.Prefill(ctx, req)
	return resp, toStatus("Prefill", err)
}

func (s *grpcServer) Decode(ctx context.Context, req *pb.DecodeRequest) (*pb.DecodeResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	resp, err := s.impl.Decode(ctx, req)
	return resp, toStatus("Decode", err)
}

func (s *grpcServer) ReleaseCache(ctx context.Context, req *pb.ReleaseCacheRequest) (*pb.ReleaseCacheResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	resp, err := s.impl.ReleaseCache(ctx, req)
	return resp, toStatus("ReleaseCache", err)
}

func (s *grpcServer) Shutdown(ctx context.Context, _ *pb.ShutdownRequest) (*pb.ShutdownResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.impl.Shutdown(ctx); err != nil {
		return nil, toStatus("Shutdown", err)
	}
	return &pb.ShutdownResponse{}, nil
}

// streamReader turns a stream of chunks into whole tensors. It remembers a
// protocol error so the adapter can report it as such rather than as
// whatever the backend wrapped it in.
type streamReader struct {
	header *pb.StateHeader
	recv   func() (*pb.StateChunk, error)
	asm    assembler
	count  uint32
	err    error
}

func (r *streamReader) Header() *pb.StateHeader { return r.header }

func (r *streamReader) Next() (*Tensor, error) {
	if r.err != nil {
		return nil, r.err
	}
	for {
		msg, err := r.recv()
		if errors.Is(err, io.EOF) {
			if name, ok := r.asm.pending(); ok {
				r.err = InvalidArgument("chunk.data", "state stream ended inside tensor %q", name)
				return nil, r.err
			}
			if r.count != r.header.GetTensorCount() {
				r.err = InvalidArgument("header.tensor_count", "header announced %d tensors, stream carried %d",
					r.header.GetTensorCount(), r.count)
				return nil, r.err
			}
			return nil, io.EOF
		}
		if err != nil {
			r.err = toStatus("SetState", fmt.Errorf("receive chunk: %w", err))
			return nil, r.err
		}
		c := msg.GetTensor()
		if c == nil {
			r.err = InvalidArgument("chunk.header", "a second StateHeader arrived mid-stream")
			return nil, r.err
		}
		t, err := r.asm.add(c)
		if err != nil {
			r.err = InvalidArgument("chunk", "%v", err)
			return nil, r.err
		}
		if t != nil {
			r.count++
			return t, nil
		}
	}
}

// streamWriter chunks whole tensors onto a stream.
type streamWriter struct {
	send       func(*pb.StateChunk) error
	maxChunk   int
	headerSent bool
}

func (w *streamWriter) WriteHeader(h *pb.StateHeader) error {
	if w.headerSent {
		return errors.New("state header written twice")
	}
	w.headerSent = true
	return w.send(&pb.StateChunk{Item: &pb.StateChunk_Header{Header: h}})
}

func (w *streamWriter) WriteTensor(t *Tensor) error {
	if !w.headerSent {
		return errors.New("tensor written before the state header")
	}
	return sendTensor(t, w.maxChunk, w.send)
}

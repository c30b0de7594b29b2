// Command slidingkv is a deliberately broken backend for the conformance
// suite's own tests: the CPU reference backend, except that its KV cache
// keeps only the last 4 tokens (a sliding window the model does not have),
// so Decode's logits go wrong once a sequence is longer than that. Prefill
// and the full forward pass are right. The kvcache checks must catch it.
package main

import (
	"context"

	"github.com/mypt/mypt/backends/cpu"
	"github.com/mypt/mypt/sdk"
	"github.com/mypt/mypt/sdk/backendkit"
	pb "github.com/mypt/mypt/sdk/proto/backendv1"
)

const window = 4

type backend struct {
	*backendkit.Backend
	tokens map[uint64][]int32 // per cache handle, every token so far
}

func (b *backend) GetInfo(ctx context.Context, req *pb.GetInfoRequest) (*pb.GetInfoResponse, error) {
	info, err := b.Backend.GetInfo(ctx, req)
	if err == nil {
		info.Name = "slidingkv"
	}
	return info, err
}

func (b *backend) Configure(ctx context.Context, req *pb.ConfigureRequest) (*pb.ConfigureResponse, error) {
	resp, err := b.Backend.Configure(ctx, req)
	if err == nil {
		clear(b.tokens)
	}
	return resp, err
}

func (b *backend) Prefill(ctx context.Context, req *pb.PrefillRequest) (*pb.PrefillResponse, error) {
	resp, err := b.Backend.Prefill(ctx, req)
	if err == nil {
		b.tokens[resp.CacheHandle] = append([]int32(nil), req.Tokens...)
	}
	return resp, err
}

// Decode lets the real cache validate and advance, then answers with the
// logits of the last `window` tokens seen on their own.
func (b *backend) Decode(ctx context.Context, req *pb.DecodeRequest) (*pb.DecodeResponse, error) {
	resp, err := b.Backend.Decode(ctx, req)
	if err != nil {
		return resp, err
	}
	toks := append(b.tokens[req.CacheHandle], req.Token)
	b.tokens[req.CacheHandle] = toks
	if len(toks) > window {
		tmp, err := b.Backend.Prefill(ctx, &pb.PrefillRequest{Tokens: toks[len(toks)-window:]})
		if err != nil {
			return nil, err
		}
		resp.Logits = tmp.Logits
		if _, err := b.Backend.ReleaseCache(ctx, &pb.ReleaseCacheRequest{CacheHandle: tmp.CacheHandle}); err != nil {
			return nil, err
		}
	}
	return resp, nil
}

func (b *backend) ReleaseCache(ctx context.Context, req *pb.ReleaseCacheRequest) (*pb.ReleaseCacheResponse, error) {
	resp, err := b.Backend.ReleaseCache(ctx, req)
	if err == nil {
		delete(b.tokens, req.CacheHandle)
	}
	return resp, err
}

func (b *backend) Shutdown(ctx context.Context) error {
	clear(b.tokens)
	return b.Backend.Shutdown(ctx)
}

func main() { sdk.Serve(&backend{Backend: cpu.New(cpu.Options{}), tokens: map[uint64][]int32{}}) }

package generate

import (
	"context"
	"fmt"

	"google.golang.org/grpc/codes"

	"github.com/mypt/mypt/sdk"
	pb "github.com/mypt/mypt/sdk/proto/backendv1"
)

// Request is one generation.
type Request struct {
	Prompt       []int32
	MaxNewTokens int
	BlockSize    int            // the model's context length
	VocabSize    int            // the model's vocabulary (the width of a logits row)
	Stop         map[int32]bool // ids that end generation (kept in the output)
	Sampler      *Sampler
	// Emit, when set, receives each new id as soon as it is chosen.
	Emit func(id int32) error
}

// Generate runs the prompt through the backend's KV cache and samples up to
// MaxNewTokens ids, stopping after a stop id. It returns the new ids. A backend without
// a KV cache (profile core only: Prefill answers UNIMPLEMENTED) generates the same way by
// re-running the whole sequence through Evaluate for every token.
func Generate(ctx context.Context, b sdk.Backend, req Request) ([]int32, error) {
	if len(req.Prompt) == 0 {
		return nil, fmt.Errorf("empty prompt")
	}
	if n := len(req.Prompt) + req.MaxNewTokens; n > req.BlockSize {
		return nil, fmt.Errorf("prompt (%d tokens) plus max_new_tokens (%d) is %d, more than the model's context of %d tokens; shorten the prompt or lower max_new_tokens",
			len(req.Prompt), req.MaxNewTokens, n, req.BlockSize)
	}
	history := append([]int32(nil), req.Prompt...)
	var next func(id int32) ([]float32, error) // the logits after appending id
	pre, err := b.Prefill(ctx, &pb.PrefillRequest{Tokens: req.Prompt, Capacity: uint32(len(req.Prompt) + req.MaxNewTokens)})
	logits := pre.GetLogits()
	switch {
	case sdk.Code(err) == codes.Unimplemented:
		if logits, err = lastLogits(ctx, b, history, req.VocabSize); err != nil {
			return nil, fmt.Errorf("backend has no KV cache; full forward: %w", err)
		}
		next = func(int32) ([]float32, error) { return lastLogits(ctx, b, history, req.VocabSize) }
	case err != nil:
		return nil, fmt.Errorf("prefill: %w", err)
	default:
		defer b.ReleaseCache(context.WithoutCancel(ctx), &pb.ReleaseCacheRequest{CacheHandle: pre.GetCacheHandle()})
		next = func(id int32) ([]float32, error) {
			dec, err := b.Decode(ctx, &pb.DecodeRequest{CacheHandle: pre.GetCacheHandle(), Token: id})
			if err != nil {
				return nil, fmt.Errorf("decode: %w", err)
			}
			return dec.GetLogits(), nil
		}
	}
	var out []int32
	for len(out) < req.MaxNewTokens {
		id := req.Sampler.Next(logits, history)
		out = append(out, id)
		history = append(history, id)
		if req.Emit != nil {
			if err := req.Emit(id); err != nil {
				return out, err
			}
		}
		if req.Stop[id] || len(out) == req.MaxNewTokens {
			break
		}
		if logits, err = next(id); err != nil {
			return out, err
		}
	}
	return out, nil
}

// GreedyFullForward generates greedily by re-running the whole sequence
// through Evaluate at every step, without a KV cache: the reference the
// cached path is checked against.
func GreedyFullForward(ctx context.Context, b sdk.Backend, prompt []int32, maxNew, blockSize, vocab int, stop map[int32]bool) ([]int32, error) {
	seq := append([]int32(nil), prompt...)
	var out []int32
	for len(out) < maxNew && len(seq) <= blockSize {
		last, err := lastLogits(ctx, b, seq, vocab)
		if err != nil {
			return out, err
		}
		id := argmax(last)
		out = append(out, id)
		seq = append(seq, id)
		if stop[id] {
			break
		}
	}
	return out, nil
}

// lastLogits runs seq through Evaluate and returns the logits of its last position.
// Only that row is asked for (logit_positions), so B·T·V logits never cross the wire; a
// backend older than the field returns them all, recognised by the length.
func lastLogits(ctx context.Context, b sdk.Backend, seq []int32, vocab int) ([]float32, error) {
	t := len(seq)
	resp, err := b.Evaluate(ctx, &pb.EvaluateRequest{ReturnLogits: true, LogitPositions: []uint32{uint32(t - 1)},
		Batch: &pb.Batch{BatchSize: 1, SeqLen: uint32(t), Tokens: seq, Targets: make([]int32, t), LossWeights: make([]float32, t)}})
	if err != nil {
		return nil, err
	}
	last := resp.GetLogits()
	if len(last) == t*vocab {
		last = last[(t-1)*vocab:]
	}
	if len(last) != vocab {
		return nil, fmt.Errorf("evaluate returned %d logits for the last of %d positions, want %d", len(resp.GetLogits()), t, vocab)
	}
	return last, nil
}

package gpt_test

import (
	"context"
	"math"
	"testing"

	"github.com/mypt/mypt/conformance/golden"
	"github.com/mypt/mypt/sdk/examples/gpt"
	pb "github.com/mypt/mypt/sdk/proto/backendv1"
)

// TestKVCacheMatchesForward: Prefill (every logit) of a prompt and Decode of the rest
// give the full forward pass's logits at every position, on every golden model (both
// architectures, tied and untied, biases on and off). The cache runs the same forward
// pass and the same per-element arithmetic, so they are equal bit for bit.
func TestKVCacheMatchesForward(t *testing.T) {
	ctx := context.Background()
	cases, err := golden.Load()
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range cases {
		t.Run(g.Case, func(t *testing.T) {
			b := gpt.New()
			if _, err := b.Configure(ctx, &pb.ConfigureRequest{Model: g.Spec(), Optimizer: g.OptimizerSpec()}); err != nil {
				t.Fatal(err)
			}
			defer b.Shutdown(ctx)
			if _, err := b.SetState(ctx, g.InitState()); err != nil {
				t.Fatal(err)
			}
			T, V := int(g.Batch.SeqLen), int(g.Model.VocabSize)
			tokens := g.NewBatch().Tokens[:T]
			full, err := b.Evaluate(ctx, &pb.EvaluateRequest{ReturnLogits: true, Batch: &pb.Batch{
				BatchSize: 1, SeqLen: uint32(T), Tokens: tokens, Targets: make([]int32, T), LossWeights: make([]float32, T)}})
			if err != nil {
				t.Fatal(err)
			}
			same := func(what string, got, want []float32) {
				t.Helper()
				for i := range want {
					if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
						t.Fatalf("%s[%d] = %v, full forward %v", what, i, got[i], want[i])
					}
				}
			}
			const prompt = 3
			pre, err := b.Prefill(ctx, &pb.PrefillRequest{Tokens: tokens[:prompt], AllLogits: true})
			if err != nil {
				t.Fatal(err)
			}
			same("prefill logits", pre.Logits, full.Logits[:prompt*V])
			for i := prompt; i < T; i++ {
				d, err := b.Decode(ctx, &pb.DecodeRequest{CacheHandle: pre.CacheHandle, Token: tokens[i]})
				if err != nil {
					t.Fatal(err)
				}
				same("decode logits", d.Logits, full.Logits[i*V:(i+1)*V])
			}
		})
	}
}

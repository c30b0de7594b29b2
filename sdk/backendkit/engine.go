// Package backendkit is the RPC shell every mypt backend shares. A backend supplies an
// Engine (what its device can do, and a Session for each configured model) and the kit
// turns it into an sdk.Backend: it validates every request against the model contract
// (sdk/modelspec and the sdk.Validate* helpers), refuses what the engine does not declare
// with the protocol's status codes, serialises calls, streams state (sdk/paramstate),
// counts optimizer steps, and keeps the KV-cache table. A Session holds only maths.
//
// The profiles of the protocol map onto interfaces: every Session evaluates and holds
// state (profile "core"); a Session that also implements Trainer serves
// FEATURE_TRAINING, and one that implements KVSession serves FEATURE_KV_CACHE.
package backendkit

import (
	"context"

	"github.com/mypt/mypt/sdk/modelspec"
	"github.com/mypt/mypt/sdk/paramstate"
	pb "github.com/mypt/mypt/sdk/proto/backendv1"
)

// Engine is a backend's device and what it can do. The kit calls it under its lock.
type Engine interface {
	// Describe says what GetInfo reports. It is called once, on the first call that
	// needs it; an error (no device, say) is returned to that call and Describe is tried
	// again on the next.
	Describe(ctx context.Context) (Description, error)
	// NewSession builds the model cfg describes, parameters and optimizer state zero.
	// Errors from the sdk package (sdk.Unimplemented for a shape the engine cannot run,
	// sdk.ResourceExhausted when memory runs out) reach the host with their code.
	NewSession(ctx context.Context, cfg SessionConfig) (Session, error)
}

// Closer is implemented by an Engine holding a device that Shutdown releases. The
// engine must reopen it when it is next needed.
type Closer interface {
	Close() error
}

// Description is what an engine reports in GetInfo. The kit adds the protocol version,
// the architectures every session supports (all of modelspec's), F32 master weights and
// the default state chunk size.
type Description struct {
	// Name is the short backend name ("cpu"); its plugin binary is mypt-backend-<Name>.
	Name string
	// Version is the backend's own semantic version.
	Version string
	// Engine is free text naming the execution engine, e.g. "pure-go gemm avx512".
	Engine string
	// Devices are the devices computed on, the default first.
	Devices []*pb.Device
	// ComputeDTypes are the Precision.compute_dtype values sessions run; empty means F32.
	ComputeDTypes []pb.DType
	// Features are the optional behaviours the engine's sessions provide. Declaring
	// FEATURE_TRAINING or FEATURE_KV_CACHE promises sessions that implement Trainer or
	// KVSession.
	Features []pb.Feature
}

// CompleteFeatures are the features of a backend that implements the whole model
// contract, as the shipped backends do: training with dropout, NEFTune and frozen
// parameters, the KV cache, packed segments, returned logits, gradient state and heads
// without bias. FEATURE_DETERMINISTIC (a property of the engine) and
// FEATURE_GROUPED_QUERY_ATTENTION are declared on their own.
func CompleteFeatures() []pb.Feature {
	return []pb.Feature{pb.Feature_FEATURE_TRAINING, pb.Feature_FEATURE_DROPOUT, pb.Feature_FEATURE_NEFTUNE,
		pb.Feature_FEATURE_FROZEN_PARAMS, pb.Feature_FEATURE_KV_CACHE, pb.Feature_FEATURE_PACKED_SEGMENTS,
		pb.Feature_FEATURE_RETURN_LOGITS, pb.Feature_FEATURE_GRADIENT_STATE, pb.Feature_FEATURE_LM_HEAD_WITHOUT_BIAS}
}

// SessionConfig is a validated ConfigureRequest.
type SessionConfig struct {
	// Arch and Layout are the model and its parameter list, checked against each
	// other; the engine supports every variant they use (the kit refuses the ones its
	// features do not cover).
	Arch   modelspec.Arch
	Layout *modelspec.Layout
	// Compute is the matrix-product dtype, one of Description.ComputeDTypes.
	Compute pb.DType
	// Optimizer holds AdamW's hyper-parameters (validated).
	Optimizer Optimizer
	// Seed is the base seed of any randomness the backend owns.
	Seed uint64
	// MaxBatch is the largest batch the host will send (0 = unknown); MaxSeqLen the
	// longest sequence, in [1, Arch.BlockSize]. Hints for preallocation.
	MaxBatch, MaxSeqLen int
	// Deterministic asks for bit-reproducible kernels (only when declared).
	Deterministic bool
}

// Optimizer holds AdamW's hyper-parameters.
type Optimizer struct {
	Beta1, Beta2, Eps float64
}

// Session is one configured model: its parameters and optimizer state (a
// paramstate.Store, whose roles the GetState and SetState streams address) and the
// evaluation pass. The kit calls it one call at a time.
type Session interface {
	paramstate.Store
	// Evaluate runs b in evaluation mode (no dropout, no gradients). With rows non-nil
	// it also returns the logits of those flat positions (row·T + t), len(rows)·V values
	// in the order given.
	Evaluate(ctx context.Context, b *Batch, rows []int) (Totals, []float32, error)
	// Close releases the session's memory.
	Close() error
}

// Trainer is a Session that trains (FEATURE_TRAINING).
type Trainer interface {
	// ForwardBackward runs b in training mode (dropout and NEFTune on, their masks drawn
	// from dropoutSeed) and adds gradScale·∂(Σ w·CE)/∂θ to the gradient accumulators.
	ForwardBackward(ctx context.Context, b *Batch, gradScale float32, dropoutSeed uint64) (Totals, error)
	// OptimizerStep clips the accumulated gradients' global norm to s.ClipNorm (0 = no
	// clipping), applies AdamW and zeroes the accumulators. It returns the norm before
	// clipping. Frozen parameters (Layout.Params[i].Frozen) are left out of the norm and
	// get no update.
	OptimizerStep(ctx context.Context, s Step) (gradNorm float64, err error)
	// ZeroGrads clears the gradient accumulators (SetState does).
	ZeroGrads() error
}

// KVSession is a Session with a KV cache for generation (FEATURE_KV_CACHE).
type KVSession interface {
	// NewKVCache allocates an empty cache for one sequence of up to capacity tokens.
	NewKVCache(ctx context.Context, capacity int) (KVCache, error)
}

// KVCache is one sequence's keys and values.
type KVCache interface {
	// Extend runs tokens at positions start, start+1, … (start is the number of tokens
	// already in the cache; the kit checks the capacity), appends their keys and values
	// and returns the logits of every new position, len(tokens)·V values.
	Extend(ctx context.Context, tokens []int32, start int) ([]float32, error)
	// Release frees the cache.
	Release()
}

// MemoryReporter is implemented by a Session that knows how much memory it allocated;
// otherwise ConfigureResponse.memory_bytes is 16 bytes per parameter (fp32 weights,
// gradients and two moments).
type MemoryReporter interface {
	MemoryBytes() uint64
}

// Batch is a validated batch of B rows of T tokens, row-major.
type Batch struct {
	B, T int
	// Tokens, Targets and Weights have B·T entries; a target is only read where its
	// weight is positive (it may be out of range elsewhere).
	Tokens, Targets []int32
	Weights         []float32
	// Segments are the packed rows' segment ids (B·T), nil when the batch is not packed.
	Segments []int32
	// Positions are each token's position, restarting in every segment when the model
	// resets positions (modelspec.Arch.Positions).
	Positions []int32
}

// Totals are a pass's loss statistics over the positions with weight > 0.
type Totals struct {
	LossSum, WeightSum float64 // Σ w·CE, Σ w
	Correct, Counted   uint64  // argmax(logits) == target; positions counted
}

// Step is one OptimizerStep's hyper-parameters.
type Step struct {
	LearningRate, WeightDecay float64
	// ClipNorm is the global gradient-norm bound; 0 means no clipping (the kit maps
	// the request's ≤ 0 and +Inf to 0).
	ClipNorm float64
	// Number is the step being taken, counting from 1 (AdamW's bias correction uses it).
	Number uint64
}

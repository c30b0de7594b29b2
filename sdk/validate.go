package sdk

import (
	"fmt"
	"math"
	"slices"
	"strconv"

	pb "github.com/mypt/mypt/sdk/proto/backendv1"
)

// ValidateBatch checks a batch against the model's limits and returns an
// InvalidArgument error naming the first bad field (prefixed with field, e.g.
// "batch"), or nil. Backends call it before touching the data.
func ValidateBatch(field string, b *pb.Batch, vocabSize, blockSize int) error {
	if b == nil {
		return InvalidArgument(field, "missing")
	}
	bs, t := int(b.GetBatchSize()), int(b.GetSeqLen())
	if bs < 1 {
		return InvalidArgument(field+".batch_size", "must be ≥ 1, got %d", bs)
	}
	if t < 1 || t > blockSize {
		return InvalidArgument(field+".seq_len", "must be in [1, block_size=%d], got %d", blockSize, t)
	}
	n := bs * t
	if len(b.GetTokens()) != n {
		return InvalidArgument(field+".tokens", "has %d ids, want batch_size·seq_len = %d", len(b.GetTokens()), n)
	}
	if len(b.GetTargets()) != n {
		return InvalidArgument(field+".targets", "has %d ids, want batch_size·seq_len = %d", len(b.GetTargets()), n)
	}
	if len(b.GetLossWeights()) != n {
		return InvalidArgument(field+".loss_weights", "has %d values, want batch_size·seq_len = %d", len(b.GetLossWeights()), n)
	}
	if s := b.GetSegmentIds(); len(s) != 0 && len(s) != n {
		return InvalidArgument(field+".segment_ids", "has %d ids, want 0 or batch_size·seq_len = %d", len(s), n)
	}
	for i, id := range b.GetTokens() {
		if id < 0 || int(id) >= vocabSize {
			return InvalidArgument(fieldIndex(field+".tokens", i), "token id %d outside [0, vocab_size=%d)", id, vocabSize)
		}
	}
	weights := b.GetLossWeights()
	for i, w := range weights {
		if !(w >= 0) || math.IsInf(float64(w), 0) {
			return InvalidArgument(fieldIndex(field+".loss_weights", i), "weight %v must be finite and ≥ 0", w)
		}
	}
	for i, id := range b.GetTargets() {
		if weights[i] != 0 && (id < 0 || int(id) >= vocabSize) {
			return InvalidArgument(fieldIndex(field+".targets", i), "target id %d outside [0, vocab_size=%d)", id, vocabSize)
		}
	}
	return nil
}

// ValidateTokens checks a list of token ids (e.g. a prompt).
func ValidateTokens(field string, ids []int32, vocabSize int) error {
	for i, id := range ids {
		if id < 0 || int(id) >= vocabSize {
			return InvalidArgument(fieldIndex(field, i), "token id %d outside [0, vocab_size=%d)", id, vocabSize)
		}
	}
	return nil
}

// ValidateOptimizer checks a ConfigureRequest's optimizer: beta1 and beta2 in [0,1) and
// a positive eps.
func ValidateOptimizer(o *pb.OptimizerSpec) error {
	if o == nil {
		return InvalidArgument("optimizer", "missing")
	}
	if !(o.Beta1 >= 0 && o.Beta1 < 1) {
		return InvalidArgument("optimizer.beta1", "must be in [0,1), got %v", o.Beta1)
	}
	if !(o.Beta2 >= 0 && o.Beta2 < 1) {
		return InvalidArgument("optimizer.beta2", "must be in [0,1), got %v", o.Beta2)
	}
	if !(o.Eps > 0) {
		return InvalidArgument("optimizer.eps", "must be positive, got %v", o.Eps)
	}
	return nil
}

// ValidatePrecision checks a ConfigureRequest's precision against what a backend declares:
// F32 master weights, and a compute dtype among computeDTypes (unset means F32). It
// returns the compute dtype. A dtype the backend does not declare is a capability it
// lacks: Unimplemented, its message starting with the field.
func ValidatePrecision(pr *pb.Precision, computeDTypes []pb.DType) (pb.DType, error) {
	if d := pr.GetParamDtype(); d != pb.DType_DTYPE_UNSPECIFIED && d != pb.DType_DTYPE_F32 {
		return 0, Unimplemented("precision.param_dtype " + d.String() + " (only F32 master weights)")
	}
	compute := pr.GetComputeDtype()
	if compute == pb.DType_DTYPE_UNSPECIFIED {
		compute = pb.DType_DTYPE_F32
	}
	if !slices.Contains(computeDTypes, compute) {
		return 0, Unimplemented(fmt.Sprintf("precision.compute_dtype %v (this backend computes in %v)", compute, computeDTypes))
	}
	return compute, nil
}

// ValidateOptimizerStep checks an OptimizerStepRequest: learning_rate and weight_decay
// finite and ≥ 0, clip_norm not NaN (+Inf never clips).
func ValidateOptimizerStep(req *pb.OptimizerStepRequest) error {
	if lr := req.GetLearningRate(); !(lr >= 0) || math.IsInf(lr, 0) {
		return InvalidArgument("learning_rate", "must be finite and ≥ 0, got %v", lr)
	}
	if wd := req.GetWeightDecay(); !(wd >= 0) || math.IsInf(wd, 0) {
		return InvalidArgument("weight_decay", "must be finite and ≥ 0, got %v", wd)
	}
	if math.IsNaN(req.GetClipNorm()) {
		return InvalidArgument("clip_norm", "is NaN")
	}
	return nil
}

// PrefillCapacity checks a PrefillRequest's capacity (at most blockSize; 0 means
// blockSize) and prompt length (1 to the capacity), and returns the capacity. The
// prompt's token ids are left to ValidateTokens.
func PrefillCapacity(req *pb.PrefillRequest, blockSize int) (int, error) {
	capacity := int(req.GetCapacity())
	if capacity == 0 {
		capacity = blockSize
	}
	if capacity > blockSize {
		return 0, InvalidArgument("capacity", "%d exceeds block_size %d", capacity, blockSize)
	}
	if n := len(req.GetTokens()); n < 1 || n > capacity {
		return 0, InvalidArgument("tokens", "prompt length %d must be in [1, capacity=%d]", n, capacity)
	}
	return capacity, nil
}

// ValidateDecode checks a DecodeRequest's token and that its cache, holding length of
// capacity positions, has room for it (FailedPrecondition when full).
func ValidateDecode(req *pb.DecodeRequest, vocabSize, length, capacity int) error {
	if tok := req.GetToken(); tok < 0 || int(tok) >= vocabSize {
		return InvalidArgument("token", "token id %d is outside [0, %d)", tok, vocabSize)
	}
	if length >= capacity {
		return FailedPrecondition("cache %d is full (%d tokens)", req.GetCacheHandle(), capacity)
	}
	return nil
}

func fieldIndex(field string, i int) string {
	return field + "[" + strconv.Itoa(i) + "]"
}

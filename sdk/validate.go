package sdk

import (
	"math"
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

func fieldIndex(field string, i int) string {
	return field + "[" + strconv.Itoa(i) + "]"
}

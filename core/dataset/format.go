package dataset

import (
	"encoding/binary"
	"unsafe"
)

// File names inside a split (or shard) directory. All are raw little-endian
// arrays without headers, aligned token for token.
const (
	TokensFile   = "tokens.bin"        // uint32 token ids
	MaskFile     = "mask.bin"          // uint8: 1 where the loss weight is > 0
	WeightsFile  = "mask_weighted.bin" // float32 loss weights (optional)
	SegmentsFile = "segment_ids.bin"   // uint8: 0 = padding, 1..255 = episode within a pack (optional)
	IndexFile    = "episodes.idx"      // uint64 pairs (start, length), start relative to the shard

	MetadataFile  = "dataset_metadata.json"
	TokenizerFile = "tokenizer_state.json"

	// ShardDirFormat names shard directories: shard_00000, shard_00001, ...
	ShardDirFormat = "shard_%05d"
)

// Schema values of dataset_metadata.json.
const (
	SchemaEpisodes = "episode_indexed_sft_v1" // MyPT's chat SFT datasets
	SchemaStream   = "token_stream_v1"        // ours: plain token streams
)

// Episode locates one episode (or one packed sequence) inside a shard.
type Episode struct {
	Start  uint64
	Length uint64
}

var littleEndian = binary.NativeEndian.Uint16([]byte{1, 0}) == 1

// The helpers below view mapped little-endian bytes as typed slices without
// copying on little-endian hosts and decode a copy elsewhere. Callers check
// that len(b) is a multiple of the element size.

func asUint32(b []byte) []uint32 {
	if len(b) == 0 {
		return nil
	}
	if littleEndian && uintptr(unsafe.Pointer(&b[0]))%4 == 0 {
		return unsafe.Slice((*uint32)(unsafe.Pointer(&b[0])), len(b)/4)
	}
	out := make([]uint32, len(b)/4)
	for i := range out {
		out[i] = binary.LittleEndian.Uint32(b[4*i:])
	}
	return out
}

func asFloat32(b []byte) []float32 {
	u := asUint32(b)
	if len(u) == 0 {
		return nil
	}
	return unsafe.Slice((*float32)(unsafe.Pointer(&u[0])), len(u))
}

func asEpisodes(b []byte) []Episode {
	if len(b) == 0 {
		return nil
	}
	if littleEndian && uintptr(unsafe.Pointer(&b[0]))%8 == 0 {
		return unsafe.Slice((*Episode)(unsafe.Pointer(&b[0])), len(b)/16)
	}
	out := make([]Episode, len(b)/16)
	for i := range out {
		out[i] = Episode{binary.LittleEndian.Uint64(b[16*i:]), binary.LittleEndian.Uint64(b[16*i+8:])}
	}
	return out
}

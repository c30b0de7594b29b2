// Package dataset reads, writes and samples MyPT's episode-indexed datasets
// (and plain token streams), byte-compatible with MyPT's files.
//
// # Layout
//
// A dataset directory has train/ and val/ splits. Each split (or each of its
// shard_NNNNN directories) holds raw little-endian arrays aligned token for
// token: tokens.bin (uint32), mask.bin (uint8, 1 = supervised),
// mask_weighted.bin (float32 loss weights, optional), segment_ids.bin
// (uint8, packed data: 0 = padding, 1..255 = episode within the pack) and
// episodes.idx (uint64 start,length pairs, start relative to the shard).
// Beside them: dataset_metadata.json and tokenizer_state.json. A split with
// tokens.bin but no episodes.idx is a token stream.
//
// Open reads every shard. MyPT writes the first shard of a multi-shard split
// at the split root and later ones in shard_00001, ...; its loader then
// reads only the shard directories. Open reads the root first and then the
// shard directories, so MyPT's datasets lose nothing, and ShardWriter puts
// every shard in its own directory.
//
// # Sampling, for the trainer
//
//	ds, err := dataset.Open(dir)            // mmap; defer ds.Close()
//	tok, err := ds.Tokenizer()              // tokenizer_state.json
//	opt := dataset.DefaultOptions()         // MyPT defaults: epoch, shuffle, seed 1337, min 2 tokens
//	opt.Seed = cfg.EpochSeed
//	train, err := ds.Train.NewSampler(opt)
//	b, err := train.Next(batchSize, blockSize)
//	// b.Tokens, b.Targets: int32, B×T row-major; b.Weights: float32 loss
//	// weight of each target (0 on padding and unsupervised tokens);
//	// b.Segments: int32 segment id of each input for packed data, else nil.
//	pos := train.Position()                 // JSON-able; save with the checkpoint
//	err = train.SetPosition(pos)            // on resume: the same batches follow
//
// Evaluation uses a separate sampler in ModeSequential over ds.Val, created
// afresh for each evaluation so every evaluation sees the same batches in
// the same (file) order; the training sampler is never touched.
//
// Semantics are MyPT's GPTEpisodeDataLoader: in ModeEpoch the order of epoch
// e is numpy RandomState(seed+e).permutation(n) over the episodes with at
// least MinTokens tokens, and a batch that reaches the end of an epoch
// continues into the next; ModeRandom draws RandomState(seed).randint(0, n,
// size=B) per batch from one generator. Each row is the episode's last
// block+1 tokens (TruncateTail, MyPT; TruncateHead keeps the first) padded
// with <myPT_eot>; inputs are the window without its last token, targets
// without its first, weights are the mask (or mask_weighted.bin) of the
// targets. Without UseLossMask every weight is 1 (MyPT's unmasked mean).
// Deliberate differences: segment ids are returned whether or not the loss
// mask is used (MyPT drops them without a mask), an empty val split is an
// error instead of silently sampling train, and the position can be saved.
//
// A token stream (mypt prepare --text) samples windows: ModeRandom draws
// starts uniformly in [0, tokens-block) (numpy randint), ModeSequential
// walks consecutive windows; every weight is 1.
//
// Validate applies MyPT's validator rules per episode (per segment for
// packed data); Stats and RenderEpisode back `mypt dataset inspect` and
// `mypt dataset view`.
//
// MyPT's layout and loader are stated in docs/MYPT.md §9 (on-disk layout) and
// §10 (episode loader).
package dataset

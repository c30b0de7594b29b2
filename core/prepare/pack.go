package prepare

// episode is one tokenized conversation.
type episode struct {
	tokens  []uint32
	weights []float32
	packKey string // group for --pack_by_field ("" = _ungrouped)
}

// pack is one packed sequence of exactly blockSize tokens.
type pack struct {
	tokens   []uint32
	weights  []float32
	segments []uint8
	episodes int
}

// maxEpisodesPerPack keeps segment ids within uint8: 0 marks padding, real
// episodes are 1..255.
const maxEpisodesPerPack = 255

// greedyPack is MyPT's greedy_bin_pack (docs/MYPT.md §8 packing): episodes
// are appended in order to the current pack; an episode longer than the block
// keeps its last blockSize tokens; when the next episode does not fit (or the
// pack holds 255 episodes) the pack is padded with pad (weight 0, segment 0)
// and a new one starts. Episodes are never split.
func greedyPack(eps []*episode, blockSize int, pad uint32) []*pack {
	var out []*pack
	var cur *pack
	flush := func() {
		if cur == nil {
			return
		}
		for len(cur.tokens) < blockSize {
			cur.tokens = append(cur.tokens, pad)
			cur.weights = append(cur.weights, 0)
			cur.segments = append(cur.segments, 0)
		}
		out = append(out, cur)
		cur = nil
	}
	for _, e := range eps {
		toks, ws := e.tokens, e.weights
		if len(toks) > blockSize {
			toks, ws = toks[len(toks)-blockSize:], ws[len(ws)-blockSize:]
		}
		if cur != nil && (len(cur.tokens)+len(toks) > blockSize || cur.episodes >= maxEpisodesPerPack) {
			flush()
		}
		if cur == nil {
			cur = &pack{
				tokens:   make([]uint32, 0, blockSize),
				weights:  make([]float32, 0, blockSize),
				segments: make([]uint8, 0, blockSize),
			}
		}
		cur.episodes++
		cur.tokens = append(cur.tokens, toks...)
		cur.weights = append(cur.weights, ws...)
		for range toks {
			cur.segments = append(cur.segments, uint8(cur.episodes))
		}
	}
	flush()
	return out
}

// packingStats is MyPT's compute_packing_stats.
type packingStats struct {
	originalEpisodes      int
	originalTokens        int
	originalMaskTokens    float64
	originalMaskRatio     float64
	avgEpisodeLen         float64
	packedSequences       int
	packedTokens          int
	packedMaskTokens      float64
	packedMaskRatio       float64
	nonpadRatio           float64
	avgEpisodesPerPack    float64
	unpackedEffectiveMask float64
	trainingEfficiency    float64
}

func computePackingStats(eps []*episode, packs []*pack, blockSize int) packingStats {
	var s packingStats
	s.originalEpisodes = len(eps)
	for _, e := range eps {
		s.originalTokens += len(e.tokens)
		s.originalMaskTokens += sumWeights(e.weights)
	}
	if s.originalTokens > 0 {
		s.originalMaskRatio = s.originalMaskTokens / float64(s.originalTokens)
	}
	if len(eps) > 0 {
		s.avgEpisodeLen = float64(s.originalTokens) / float64(len(eps))
	}
	s.packedSequences = len(packs)
	episodesInPacks := 0
	for _, p := range packs {
		s.packedTokens += len(p.tokens)
		s.packedMaskTokens += sumWeights(p.weights)
		episodesInPacks += p.episodes
	}
	if s.packedTokens > 0 {
		s.packedMaskRatio = s.packedMaskTokens / float64(s.packedTokens)
	}
	if slots := len(packs) * blockSize; slots > 0 {
		s.nonpadRatio = float64(s.originalTokens) / float64(slots)
	}
	if len(packs) > 0 {
		s.avgEpisodesPerPack = float64(episodesInPacks) / float64(len(packs))
	}
	if blockSize > 0 {
		s.unpackedEffectiveMask = s.originalMaskRatio * (s.avgEpisodeLen / float64(blockSize))
	}
	s.trainingEfficiency = 1
	if s.unpackedEffectiveMask > 0 {
		s.trainingEfficiency = s.packedMaskRatio / s.unpackedEffectiveMask
	}
	return s
}

// sumWeights adds weights in order as float64, like Python's sum() over the
// list of floats.
func sumWeights(ws []float32) float64 {
	var s float64
	for _, w := range ws {
		s += float64(w)
	}
	return s
}

package config

// GPTConfig is MyPT's model config (GPTConfig, field order as in
// config.json; docs/MYPT.md §17, §20), written into checkpoints so MyPT-side
// tools can read them.
type GPTConfig struct {
	BatchSize            int     `json:"batch_size"`
	BlockSize            int     `json:"block_size"`
	VocabSize            int     `json:"vocab_size"`
	NEmbd                int     `json:"n_embd"`
	NHead                int     `json:"n_head"`
	NLayer               int     `json:"n_layer"`
	Dropout              float64 `json:"dropout"`
	Bias                 bool    `json:"bias"`
	UseCheckpoint        bool    `json:"use_checkpoint"`
	Device               string  `json:"device"`
	UseLossMask          bool    `json:"use_loss_mask"`
	TieWeights           bool    `json:"tie_weights"`
	SaveDtype            *string `json:"save_dtype"`
	PosEncoding          string  `json:"pos_encoding"`
	MLPType              string  `json:"mlp_type"`
	NormType             string  `json:"norm_type"`
	RopeTheta            float64 `json:"rope_theta"`
	RopeScale            float64 `json:"rope_scale"`
	SegmentPositionReset bool    `json:"segment_position_reset"`
	NeftuneAlpha         float64 `json:"neftune_alpha"`
	BatchSamplingMode    string  `json:"batch_sampling_mode"`
	PadTokenID           *int    `json:"pad_token_id"`
	EpisodeMinTokens     int     `json:"episode_min_tokens"`
	EpochSeed            int     `json:"epoch_seed"`
	EpochShuffle         bool    `json:"epoch_shuffle"`
	EpochDropLast        bool    `json:"epoch_drop_last"`
}

// GPTConfig returns the model part of c in MyPT's config.json form.
func (c Config) GPTConfig() GPTConfig {
	g := GPTConfig{
		BatchSize: c.BatchSize, BlockSize: c.BlockSize, VocabSize: c.VocabSize, NEmbd: c.NEmbd,
		NHead: c.NHead, NLayer: c.NLayer, Dropout: c.Dropout, Bias: c.Bias, Device: "cpu",
		UseLossMask: c.UseLossMask, TieWeights: c.TieWeights, PosEncoding: c.PosEncoding,
		MLPType: c.MLPType, NormType: c.NormType, RopeTheta: c.RopeTheta, RopeScale: c.RopeScale,
		SegmentPositionReset: c.SegmentPositionReset, NeftuneAlpha: c.NeftuneAlpha,
		BatchSamplingMode: c.BatchSamplingMode, EpisodeMinTokens: c.EpisodeMinTokens,
		EpochSeed: c.EpochSeed, EpochShuffle: c.EpochShuffle, EpochDropLast: c.EpochDropLast,
	}
	if c.PadTokenID >= 0 {
		pad := c.PadTokenID
		g.PadTokenID = &pad
	}
	return g
}

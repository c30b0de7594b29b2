// Package checkpoint reads and writes mypt checkpoint directories: model
// parameters and AdamW moments as safetensors files with MyPT's state_dict
// names, plus config.json, tokenizer.json, training_state.json and a
// manifest.json of checksums verified on load.
//
// Writes stream one tensor at a time into a temporary directory beside the
// target and become visible atomically on Commit; reads stream one tensor at
// a time, converting between F32, BF16 and F16 as the model asks. See
// docs/CHECKPOINTS.md for the format.
package checkpoint

import "github.com/mypt/mypt/sdk"

var (
	_ sdk.StateWriter = (*Writer)(nil)
	_ sdk.StateReader = (*StateReader)(nil)
)

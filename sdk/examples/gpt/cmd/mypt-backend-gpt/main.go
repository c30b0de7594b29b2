// Command mypt-backend-gpt serves the example GPT backend (sdk/examples/gpt) as a mypt
// plugin: put it next to the mypt binary and train with --backend gpt.
package main

import (
	"github.com/mypt/mypt/sdk"
	"github.com/mypt/mypt/sdk/examples/gpt"
)

func main() { sdk.Serve(gpt.New()) }

// Command mypt-backend-bigram serves the example bigram backend as a mypt
// plugin.
package main

import (
	"github.com/mypt/mypt/sdk"
	"github.com/mypt/mypt/sdk/examples/bigram"
)

func main() { sdk.Serve(bigram.New()) }

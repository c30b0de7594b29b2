// Command mypt-backend-xla is the XLA backend plugin (GoMLX + PJRT); the mypt core starts
// it. $PJRT_PLUGIN_LIBRARY_PATH names a PJRT plugin .so to run on (e.g. JAX's CUDA plugin);
// without it the plugin runs on GoMLX's pure-Go simplego engine. See docs/XLA.md.
package main

import (
	"github.com/mypt/mypt/backends/xla"
	"github.com/mypt/mypt/sdk"
)

func main() { sdk.Serve(xla.New(xla.OptionsFromEnv())) }

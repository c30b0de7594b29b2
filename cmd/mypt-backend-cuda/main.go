// Command mypt-backend-cuda is the CUDA backend plugin; the mypt core starts it.
// MYPT_CUDA_FAKE=1 runs it on the fake device (Go twins of the kernels, no GPU needed).
package main

import (
	"os"

	"github.com/mypt/mypt/backends/cuda"
	"github.com/mypt/mypt/sdk"
)

func main() {
	sdk.Serve(cuda.New(cuda.Options{Fake: os.Getenv("MYPT_CUDA_FAKE") == "1"}))
}

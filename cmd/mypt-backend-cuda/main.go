// Command mypt-backend-cuda is the CUDA backend plugin; the mypt core starts it.
// MYPT_CUDA_DEVICE=emulated runs kernels.cu itself on the CPU (the emulated device, which
// needs a C++ compiler); the default is the GPU.
package main

import (
	"github.com/mypt/mypt/backends/cuda"
	"github.com/mypt/mypt/sdk"
)

func main() { sdk.Serve(cuda.New(cuda.OptionsFromEnv())) }

// Command cudacheck compile-checks backends/cuda/kernels/kernels.cu with NVRTC for the given
// architectures (default sm_90) without a GPU: `make cuda-check`. Where libnvrtc is not
// installed it says so and exits 0.
package main

import (
	"fmt"
	"os"

	"github.com/mypt/mypt/backends/cuda/device"
	"github.com/mypt/mypt/backends/cuda/driver"
)

func main() {
	archs := os.Args[1:]
	if len(archs) == 0 {
		archs = []string{"sm_90"}
	}
	if _, err := driver.OpenNVRTC(); err != nil {
		fmt.Printf("cuda-check: skipped, NVRTC is not installed here (%v)\n", err)
		return
	}
	for _, a := range archs {
		log, err := device.CompileCheck(a)
		if err != nil {
			fmt.Fprintf(os.Stderr, "cuda-check: %s: %v\n", a, err)
			os.Exit(1)
		}
		fmt.Printf("cuda-check: kernels.cu compiles for %s\n%s", a, log)
	}
}

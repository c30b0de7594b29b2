// Command cudacheck compile-checks backends/cuda/kernels/kernels.cu without a GPU
// (`make cuda-check`):
//
//  1. always: clang-19 compiles it as CUDA device-only code, with no CUDA SDK, to PTX for
//     sm_80 and sm_90 (-Wall -Wextra -Werror), writing <out>/kernels_sm_80.ptx and
//     <out>/kernels_sm_90.ptx, and checks each one's .target line and that it has one .entry
//     per kernel of kernels.Signatures(). NVRTC's built-ins come from the force-included
//     kernels/nvrtc_prelude.h. Without clang-19 it fails with a one-line install hint.
//  2. where libnvrtc is installed: NVRTC compiles it (as the GPU device does) for the
//     architectures given as arguments, else the local GPU's, else sm_90. Without NVRTC
//     this step is skipped with a message.
//
// Usage: cudacheck [-clang clang-19] [-out bin] [nvrtc-arch ...]
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/mypt/mypt/backends/cuda/device"
	"github.com/mypt/mypt/backends/cuda/driver"
	"github.com/mypt/mypt/backends/cuda/kernels"
)

func main() {
	clang := flag.String("clang", defaultClang, "the clang that compiles kernels.cu to PTX (CUDA device-only, no SDK)")
	out := flag.String("out", "bin", "the directory for kernels_<arch>.ptx")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: cudacheck [-clang %s] [-out bin] [nvrtc-arch ...]\n", defaultClang)
		flag.PrintDefaults()
	}
	flag.Parse()
	// Both steps run whatever the other's outcome (a GPU machine may have NVRTC but no clang).
	failed := false
	report := func(err error) {
		if err != nil {
			fmt.Fprintf(os.Stderr, "cuda-check: %v\n", err)
			failed = true
		}
	}
	report(clangCheck(*clang, *out))
	report(nvrtcCheck(flag.Args()))
	if failed {
		os.Exit(1)
	}
}

// clangCheck compiles kernels.cu for clangArchs into out and checks the PTX.
func clangCheck(clangName, out string) error {
	start := time.Now()
	clang, err := findClang(clangName)
	if err != nil {
		return err
	}
	paths, err := compilePTX(context.Background(), clang, kernels.Source, "kernels", out, clangArchs)
	if err != nil {
		return err
	}
	names := kernelNames()
	var files []string
	for i, p := range paths {
		ptx, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if err := checkPTX(string(ptx), clangArchs[i], names); err != nil {
			return fmt.Errorf("%s: %v", p, err)
		}
		files = append(files, fmt.Sprintf("%s (%d bytes)", p, len(ptx)))
	}
	fmt.Printf("cuda-check: %s: kernels.cu compiles to PTX for %s, %d kernels each, in %.2fs: %s\n",
		clangName, strings.Join(clangArchs, " and "), len(names), time.Since(start).Seconds(),
		strings.Join(files, ", "))
	return nil
}

// kernelNames are the kernels of kernels.cu, sorted.
func kernelNames() []string {
	var names []string
	for k := range kernels.Signatures() {
		names = append(names, k)
	}
	slices.Sort(names)
	return names
}

// nvrtcCheck compiles kernels.cu with NVRTC for archs (default: the local GPU's
// architecture, else sm_90); where NVRTC is not installed it says so and succeeds.
func nvrtcCheck(archs []string) error {
	if _, err := driver.OpenNVRTC(); err != nil {
		first, _, _ := strings.Cut(err.Error(), "\n")
		fmt.Printf("cuda-check: NVRTC skipped, it is not installed here (%s)\n", first)
		return nil
	}
	if len(archs) == 0 {
		archs = []string{localArch()}
	}
	for _, a := range archs {
		log, err := device.CompileCheck(a)
		if err != nil {
			return fmt.Errorf("NVRTC %s: %v", a, err)
		}
		fmt.Printf("cuda-check: NVRTC: kernels.cu compiles for %s\n%s", a, log)
	}
	return nil
}

// localArch is GPU 0's architecture (sm_XY), or sm_90 where there is no usable GPU.
func localArch() string {
	drv, err := driver.OpenDriver()
	if err != nil {
		return "sm_90"
	}
	var n, dev, major, minor int32
	if drv.DeviceGetCount(&n) != 0 || n == 0 || drv.DeviceGet(&dev, 0) != 0 ||
		drv.DeviceGetAttribute(&major, driver.AttrComputeCapMajor, dev) != 0 ||
		drv.DeviceGetAttribute(&minor, driver.AttrComputeCapMinor, dev) != 0 {
		return "sm_90"
	}
	return fmt.Sprintf("sm_%d%d", major, minor)
}

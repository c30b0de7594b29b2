package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"

	"github.com/mypt/mypt/backends/cuda/kernels"
)

// The clang check: kernels.cu compiled as CUDA device-only code to PTX by Debian's clang-19,
// with no CUDA SDK and no GPU, for every architecture in clangArchs.

// clangArchs are the architectures the clang check always covers (A100, H100).
var clangArchs = []string{"sm_80", "sm_90"}

// defaultClang is the compiler, by name on PATH.
const defaultClang = "clang-19"

// installHint is the one line a developer without clang-19 gets.
const installHint = "apt-get install clang-19"

// Names inside the work directory compilePTX runs clang in.
const (
	preludeName = "nvrtc_prelude.h"
	noSDKDir    = "no-cuda-sdk" // an empty directory, given as the CUDA installation
)

// clangArgs is clang's command line (after the program name) compiling src, in the work
// directory, to PTX out for arch. This is the only place it is spelled out.
func clangArgs(arch, src, out string) []string {
	return []string{
		"-x", "cuda", "--cuda-device-only", "--cuda-gpu-arch=" + arch,
		// No CUDA headers, no libdevice: nvrtc_prelude.h declares NVRTC's built-ins.
		"-nocudainc", "-nocudalib",
		// The CUDA "installation" is an empty directory, so that a real one (/usr/local/cuda
		// on a GPU machine) changes nothing; clang-19 rejects a CUDA 13 SDK under -Werror.
		"--cuda-path=" + noSDKDir,
		// PTX ISA 7.8 (CUDA 11.8), the least that knows sm_90; without an SDK clang assumes
		// 4.2, which has none of the warp *_sync builtins.
		"--cuda-feature=+ptx78",
		"-std=c++17", // as NVRTC is given (driver.Compile)
		"-O3",        // NVRTC's default optimisation level
		// Kernels keep every parameter their launcher passes, used or not.
		"-Wall", "-Wextra", "-Wno-unused-parameter", "-Werror",
		"-include", preludeName,
		"-S", "-o", out, src,
	}
}

// findClang looks name up on PATH; the error is one line that says how to install clang-19.
func findClang(name string) (string, error) {
	p, err := exec.LookPath(name)
	if err != nil {
		return "", fmt.Errorf("%s not found, needed to compile-check kernels.cu for %s: %s",
			name, strings.Join(clangArchs, " and "), installHint)
	}
	return p, nil
}

// compilePTX compiles the CUDA source src (with the prelude force-included) for each of
// archs, in parallel, to outDir/<base>_<arch>.ptx, and returns those paths in archs' order.
// A stale PTX file is removed first, so a failure leaves none behind. Clang's diagnostics
// name the source <base>.cu with its own line numbers.
func compilePTX(ctx context.Context, clang, src, base, outDir string, archs []string) ([]string, error) {
	work, err := os.MkdirTemp("", "cudacheck-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(work)
	srcName := base + ".cu"
	if err := os.WriteFile(filepath.Join(work, srcName), []byte(src), 0o644); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(work, preludeName), []byte(kernels.NVRTCPrelude), 0o644); err != nil {
		return nil, err
	}
	if err := os.Mkdir(filepath.Join(work, noSDKDir), 0o755); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return nil, err
	}
	absOut, err := filepath.Abs(outDir) // clang runs in work
	if err != nil {
		return nil, err
	}
	paths := make([]string, len(archs))
	errs := make([]error, len(archs))
	var wg sync.WaitGroup
	for i, arch := range archs {
		paths[i] = filepath.Join(outDir, base+"_"+arch+".ptx")
		if err := os.Remove(paths[i]); err != nil && !os.IsNotExist(err) {
			return nil, err
		}
		wg.Go(func() {
			args := clangArgs(arch, srcName, filepath.Join(absOut, filepath.Base(paths[i])))
			cmd := exec.CommandContext(ctx, clang, args...)
			cmd.Dir = work
			out, err := cmd.CombinedOutput()
			if err != nil {
				errs[i] = fmt.Errorf("%s: %s %s: %v\n%s", arch, clang, strings.Join(args, " "), err, out)
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	return paths, nil
}

var (
	ptxTarget = regexp.MustCompile(`(?m)^\.target\s+(\w+)`)
	ptxEntry  = regexp.MustCompile(`(?m)^(?:\.visible\s+)?\.entry\s+(\w+)\(`)
)

// checkPTX verifies that ptx targets arch and defines exactly one entry per kernel.
func checkPTX(ptx, arch string, kernelNames []string) error {
	m := ptxTarget.FindStringSubmatch(ptx)
	if m == nil {
		return fmt.Errorf("%s: no .target line in the PTX", arch)
	}
	if m[1] != arch {
		return fmt.Errorf("%s: the PTX says .target %s", arch, m[1])
	}
	count := map[string]int{}
	for _, e := range ptxEntry.FindAllStringSubmatch(ptx, -1) {
		count[e[1]]++
	}
	var bad []string
	for _, k := range kernelNames {
		if count[k] != 1 {
			bad = append(bad, fmt.Sprintf("%s has %d .entry", k, count[k]))
		}
		delete(count, k)
	}
	for k := range count {
		bad = append(bad, fmt.Sprintf(".entry %s is no kernel of kernels.cu", k))
	}
	if len(bad) > 0 {
		slices.Sort(bad)
		return fmt.Errorf("%s: %s", arch, strings.Join(bad, "; "))
	}
	return nil
}

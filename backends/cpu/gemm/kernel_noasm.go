//go:build !amd64 || purego

package gemm

// availableKernels lists the kernels this build can run: only the portable one.
func availableKernels() []kernel { return []kernel{goKernel} }

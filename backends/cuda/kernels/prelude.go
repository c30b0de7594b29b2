package kernels

import _ "embed"

// NVRTCPrelude is nvrtc_prelude.h: declarations of what NVRTC provides built in and
// kernels.cu uses, for clang's compile check of Source without a CUDA SDK
// (backends/cuda/cmd/cudacheck force-includes it). NVRTC itself never sees it.
//
//go:embed nvrtc_prelude.h
var NVRTCPrelude string

// nvrtc_prelude.h: what NVRTC provides built in (no #include) and kernels.cu uses, declared
// for clang's CUDA device-only compilation without a CUDA SDK. It exists only for the
// compile check (`make cuda-check`, backends/cuda/cmd/cudacheck), which force-includes it:
//
//   clang-19 -x cuda --cuda-device-only --cuda-gpu-arch=sm_XX -nocudainc -nocudalib
//            -include nvrtc_prelude.h ... kernels.cu
//
// NVRTC never sees this file: the GPU device compiles kernels.cu as it is.
//
// When kernels.cu starts using another built-in, the check fails ("use of undeclared
// identifier"): declare it here, next to its kind, with NVRTC's (the CUDA headers')
// signature. Exact mappings use clang's NVVM builtins (the instructions libdevice itself
// emits under NVRTC's defaults: no -use_fast_math, -ftz=false, -prec-sqrt=true); the rest are
// libdevice's __nv_* functions, declared extern only: -nocudalib links no libdevice, so
// they stay `.extern .func` calls in the PTX. That is enough for a compile check (the
// source type-checks against the same signatures) but proves nothing about libdevice.

#ifndef MYPT_NVRTC_PRELUDE_H
#define MYPT_NVRTC_PRELUDE_H

#if !defined(__clang__) || !defined(__CUDA__) || !defined(__CUDA_ARCH__)
#error "nvrtc_prelude.h is for clang's CUDA device-only compile check; NVRTC needs no prelude"
#endif

// NVRTC defines these; clang defines __CUDA__ and __CUDA_ARCH__ itself.
#define __CUDACC__ 1
#define __CUDACC_RTC__ 1

// ---- execution-space and memory-space qualifiers (crt/host_defines.h under NVRTC)

#define __host__ __attribute__((host))
#define __device__ __attribute__((device))
#define __global__ __attribute__((global))
#define __shared__ __attribute__((shared))
#define __constant__ __attribute__((constant))
#define __forceinline__ __inline__ __attribute__((always_inline))
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...) __attribute__((launch_bounds(__VA_ARGS__)))

// ---- threadIdx, blockIdx, blockDim, gridDim, warpSize: clang's own definitions (reads of
// the %tid/%ctaid/%ntid/%nctaid special registers), shipped in its resource directory.

#include <__clang_cuda_builtin_vars.h>

// __syncthreads() is a clang builtin (bar.sync 0): nothing to declare.

// ---- type punning (__nv_*_as_* in libdevice are plain bit casts)

static __device__ __forceinline__ float __int_as_float(int x) { return __builtin_bit_cast(float, x); }
static __device__ __forceinline__ int __float_as_int(float x) { return __builtin_bit_cast(int, x); }
static __device__ __forceinline__ float __uint_as_float(unsigned int x) {
  return __builtin_bit_cast(float, x);
}
static __device__ __forceinline__ unsigned int __float_as_uint(float x) {
  return __builtin_bit_cast(unsigned int, x);
}
static __device__ __forceinline__ double __longlong_as_double(long long x) {
  return __builtin_bit_cast(double, x);
}
static __device__ __forceinline__ long long __double_as_longlong(double x) {
  return __builtin_bit_cast(long long, x);
}

// ---- min / max: the CUDA headers' overloads for the integer types (same type, and a signed
// and an unsigned of one width compared as unsigned) and for float / double.

#define MYPT_MINMAX(R, A, B)                                                        \
  static __device__ __forceinline__ R min(A a, B b) { return (R)a < (R)b ? (R)a : (R)b; } \
  static __device__ __forceinline__ R max(A a, B b) { return (R)a > (R)b ? (R)a : (R)b; }
MYPT_MINMAX(int, int, int)
MYPT_MINMAX(unsigned int, unsigned int, unsigned int)
MYPT_MINMAX(unsigned int, int, unsigned int)
MYPT_MINMAX(unsigned int, unsigned int, int)
MYPT_MINMAX(long, long, long)
MYPT_MINMAX(unsigned long, unsigned long, unsigned long)
MYPT_MINMAX(unsigned long, long, unsigned long)
MYPT_MINMAX(unsigned long, unsigned long, long)
MYPT_MINMAX(long long, long long, long long)
MYPT_MINMAX(unsigned long long, unsigned long long, unsigned long long)
MYPT_MINMAX(unsigned long long, long long, unsigned long long)
MYPT_MINMAX(unsigned long long, unsigned long long, long long)
#undef MYPT_MINMAX

// ---- math, exact: the NVVM builtins libdevice's __nv_* reduce to under NVRTC's defaults

static __device__ __forceinline__ float sqrtf(float x) { return __nvvm_sqrt_rn_f(x); }  // sqrt.rn.f32
static __device__ __forceinline__ double sqrt(double x) { return __nvvm_sqrt_rn_d(x); }  // sqrt.rn.f64
static __device__ __forceinline__ float rsqrtf(float x) { return __nvvm_rsqrt_approx_f(x); }  // rsqrt.approx.f32
static __device__ __forceinline__ double rsqrt(double x) { return __nvvm_rsqrt_approx_d(x); }
static __device__ __forceinline__ float fmaxf(float a, float b) { return __nvvm_fmax_f(a, b); }
static __device__ __forceinline__ float fminf(float a, float b) { return __nvvm_fmin_f(a, b); }
static __device__ __forceinline__ double fmax(double a, double b) { return __nvvm_fmax_d(a, b); }
static __device__ __forceinline__ double fmin(double a, double b) { return __nvvm_fmin_d(a, b); }
static __device__ __forceinline__ float fabsf(float x) { return __builtin_fabsf(x); }
static __device__ __forceinline__ double fabs(double x) { return __builtin_fabs(x); }
static __device__ __forceinline__ float min(float a, float b) { return fminf(a, b); }
static __device__ __forceinline__ float max(float a, float b) { return fmaxf(a, b); }
static __device__ __forceinline__ double min(double a, double b) { return fmin(a, b); }
static __device__ __forceinline__ double max(double a, double b) { return fmax(a, b); }
static __device__ __forceinline__ double min(float a, double b) { return fmin(a, b); }
static __device__ __forceinline__ double max(float a, double b) { return fmax(a, b); }
static __device__ __forceinline__ double min(double a, float b) { return fmin(a, b); }
static __device__ __forceinline__ double max(double a, float b) { return fmax(a, b); }

// ---- math, libdevice: declared extern only (see the top), for the compile check

extern "C" {
__device__ float __nv_expf(float);
__device__ double __nv_exp(double);
__device__ float __nv_logf(float);
__device__ double __nv_log(double);
__device__ float __nv_erff(float);
__device__ double __nv_erf(double);
__device__ float __nv_tanhf(float);
__device__ double __nv_tanh(double);
__device__ float __nv_powf(float, float);
__device__ double __nv_pow(double, double);
}

// The float and double functions, and the C++ float overloads of the double names (as the
// CUDA headers declare them: exp(float) is expf, not a double exp).
#define MYPT_LIBDEVICE1(F)                                                           \
  static __device__ __forceinline__ float F##f(float x) { return __nv_##F##f(x); }   \
  static __device__ __forceinline__ double F(double x) { return __nv_##F(x); }       \
  static __device__ __forceinline__ float F(float x) { return __nv_##F##f(x); }
MYPT_LIBDEVICE1(exp)
MYPT_LIBDEVICE1(log)
MYPT_LIBDEVICE1(erf)
MYPT_LIBDEVICE1(tanh)
#undef MYPT_LIBDEVICE1
static __device__ __forceinline__ float powf(float x, float y) { return __nv_powf(x, y); }
static __device__ __forceinline__ double pow(double x, double y) { return __nv_pow(x, y); }
static __device__ __forceinline__ float pow(float x, float y) { return __nv_powf(x, y); }

// ---- warp intrinsics (CUDA 9+ *_sync forms), on clang's NVVM builtins (they need PTX ISA
// 6.0+: the check passes --cuda-feature=+ptx78, the least PTX ISA that knows sm_90).
// The shuffles' last operand packs the segment width as the CUDA headers do: bits 8-12
// hold 32 − width, bits 0-4 the lane clamp (31, or 0 for shfl.up).

#define MYPT_SHFL(NAME, OP, DELTA, CLAMP)                                                   \
  static __device__ __forceinline__ int NAME(unsigned int mask, int v, DELTA d,             \
                                              int width = 32) {                             \
    return __nvvm_shfl_sync_##OP##_i32(mask, v, (int)d, ((32 - width) << 8) | (CLAMP));     \
  }                                                                                         \
  static __device__ __forceinline__ unsigned int NAME(unsigned int mask, unsigned int v,    \
                                                       DELTA d, int width = 32) {           \
    return (unsigned int)NAME(mask, (int)v, d, width);                                      \
  }                                                                                         \
  static __device__ __forceinline__ float NAME(unsigned int mask, float v, DELTA d,         \
                                                int width = 32) {                           \
    return __nvvm_shfl_sync_##OP##_f32(mask, v, (int)d, ((32 - width) << 8) | (CLAMP));     \
  }                                                                                         \
  static __device__ __forceinline__ long long NAME(unsigned int mask, long long v, DELTA d, \
                                                    int width = 32) {                       \
    int lo = NAME(mask, (int)(unsigned int)v, d, width);                                    \
    int hi = NAME(mask, (int)(v >> 32), d, width);                                          \
    return (long long)(((unsigned long long)(unsigned int)hi << 32) | (unsigned int)lo);    \
  }                                                                                         \
  static __device__ __forceinline__ unsigned long long NAME(                                \
      unsigned int mask, unsigned long long v, DELTA d, int width = 32) {                   \
    return (unsigned long long)NAME(mask, (long long)v, d, width);                          \
  }                                                                                         \
  static __device__ __forceinline__ double NAME(unsigned int mask, double v, DELTA d,       \
                                                 int width = 32) {                          \
    return __longlong_as_double(NAME(mask, __double_as_longlong(v), d, width));             \
  }
MYPT_SHFL(__shfl_sync, idx, int, 0x1f)
MYPT_SHFL(__shfl_up_sync, up, unsigned int, 0)
MYPT_SHFL(__shfl_down_sync, down, unsigned int, 0x1f)
MYPT_SHFL(__shfl_xor_sync, bfly, int, 0x1f)
#undef MYPT_SHFL

static __device__ __forceinline__ unsigned int __ballot_sync(unsigned int mask, int pred) {
  return __nvvm_vote_ballot_sync(mask, pred);
}
static __device__ __forceinline__ int __all_sync(unsigned int mask, int pred) {
  return __nvvm_vote_all_sync(mask, pred);
}
static __device__ __forceinline__ int __any_sync(unsigned int mask, int pred) {
  return __nvvm_vote_any_sync(mask, pred);
}
static __device__ __forceinline__ unsigned int __activemask() { return __nvvm_activemask(); }
static __device__ __forceinline__ void __syncwarp(unsigned int mask = 0xffffffffu) {
  __nvvm_bar_warp_sync(mask);
}

#endif  // MYPT_NVRTC_PRELUDE_H

// cuda_emu.h: the CUDA execution model for a host C++ compiler, force-included before
// kernels.cu when the emulated device (backends/cuda/device, emulated.go) builds it. The
// kernel source is not changed: what NVRTC provides built in is declared here.
//
// Model: a launch runs the grid's blocks on a pool of OS threads; within a block every
// CUDA thread is a fiber with its own stack, and the block's fibers run on one OS thread.
// __syncthreads() is a real barrier (a fiber runs until it reaches one; the block goes on
// when every live thread has arrived), __shared__ variables are per block (thread_local
// to the OS thread running the block), warps are 32 lanes whose intrinsics are collectives
// resolved when every participating lane has arrived. Between barriers the fibers run in
// an order the schedule chooses (forward, reverse or seeded random), so a missing barrier
// shows as a wrong result instead of hiding behind one lucky order.
#pragma once

#include <math.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <source_location>
#include <type_traits>

struct dim3 {
  unsigned int x = 1, y = 1, z = 1;
};

namespace emu {

// The fiber's view of the launch: its coordinates.
struct ThreadCoords {
  dim3 thread, block, blockShape, gridShape;  // (not blockDim, gridDim: those are macros below)
};

// current returns the running fiber's coordinates (thread-local to the OS thread).
const ThreadCoords& current();

// Warp collectives (kind), resolved when every participating lane has arrived.
enum WarpOp : int { kShfl, kShflUp, kShflDown, kShflXor, kBallot, kAny, kAll, kSyncWarp, kActiveMask };

// syncthreads blocks the calling thread until every live thread of its block arrives
// (site is the source line, to report threads waiting at different barriers).
void syncthreads(int site);

// warp runs a warp collective: op on the calling lane's value bits with argument arg
// (source lane, delta or lane mask) within segments of width lanes, among the lanes of
// mask. It returns the lane's result bits.
uint64_t warp(WarpOp op, unsigned mask, uint64_t bits, int arg, int width, int site);

// dynamicShared is the block's dynamic shared memory (launch's shared bytes, 16-byte
// aligned).
void* dynamicShared();

template <typename T>
inline uint64_t toBits(T v) {
  static_assert(sizeof(T) <= 8, "warp shuffles move at most 8 bytes");
  uint64_t b = 0;
  std::memcpy(&b, &v, sizeof(T));
  return b;
}

template <typename T>
inline T fromBits(uint64_t b) {
  T v;
  std::memcpy(&v, &b, sizeof(T));
  return v;
}

}  // namespace emu

#define threadIdx (::emu::current().thread)
#define blockIdx (::emu::current().block)
#define blockDim (::emu::current().blockShape)
#define gridDim (::emu::current().gridShape)
constexpr int warpSize = 32;

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__
#define __restrict__ __restrict
#define __launch_bounds__(...)
// Static shared memory: one copy per OS thread, and a block runs on one OS thread from
// its first instruction to its last, so every block sees its own.
#define __shared__ static thread_local
// Dynamic shared memory, for kernels that write DYNAMIC_SHARED(float, smem): under NVRTC
// the macro is `extern __shared__ float smem[]` (nvrtc_prelude.h / kernels.cu).
#define DYNAMIC_SHARED(type, name) type* name = static_cast<type*>(::emu::dynamicShared())

// The synchronising built-ins are functions whose default argument records the call site,
// so a block whose threads wait at different barriers is reported with both lines.
inline void __syncthreads(std::source_location at = std::source_location::current()) {
  ::emu::syncthreads(at.line());
}
inline void __syncwarp(unsigned mask = 0xffffffffu, std::source_location at = std::source_location::current()) {
  ::emu::warp(::emu::kSyncWarp, mask, 0, 0, warpSize, at.line());
}
inline void __threadfence() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
inline void __threadfence_block() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }

template <typename T>
inline T emuShuffle(::emu::WarpOp op, unsigned mask, T v, int arg, int width, std::source_location at) {
  return ::emu::fromBits<T>(::emu::warp(op, mask, ::emu::toBits(v), arg, width, at.line()));
}
template <typename T>
inline T __shfl_sync(unsigned mask, T v, int src, int width = warpSize,
                     std::source_location at = std::source_location::current()) {
  return emuShuffle(::emu::kShfl, mask, v, src, width, at);
}
template <typename T>
inline T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = warpSize,
                        std::source_location at = std::source_location::current()) {
  return emuShuffle(::emu::kShflUp, mask, v, static_cast<int>(delta), width, at);
}
template <typename T>
inline T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = warpSize,
                          std::source_location at = std::source_location::current()) {
  return emuShuffle(::emu::kShflDown, mask, v, static_cast<int>(delta), width, at);
}
template <typename T>
inline T __shfl_xor_sync(unsigned mask, T v, int laneMask, int width = warpSize,
                         std::source_location at = std::source_location::current()) {
  return emuShuffle(::emu::kShflXor, mask, v, laneMask, width, at);
}
inline unsigned __ballot_sync(unsigned mask, int pred, std::source_location at = std::source_location::current()) {
  return static_cast<unsigned>(::emu::warp(::emu::kBallot, mask, pred != 0, 0, warpSize, at.line()));
}
inline int __any_sync(unsigned mask, int pred, std::source_location at = std::source_location::current()) {
  return static_cast<int>(::emu::warp(::emu::kAny, mask, pred != 0, 0, warpSize, at.line()));
}
inline int __all_sync(unsigned mask, int pred, std::source_location at = std::source_location::current()) {
  return static_cast<int>(::emu::warp(::emu::kAll, mask, pred != 0, 0, warpSize, at.line()));
}
inline unsigned __activemask(std::source_location at = std::source_location::current()) {
  return static_cast<unsigned>(::emu::warp(::emu::kActiveMask, 0xffffffffu, 0, 0, warpSize, at.line()));
}

// Atomics: real ones (blocks run on several OS threads), relaxed as on the GPU.
template <typename T>
inline T atomicAdd(T* p, T v) {
  if constexpr (std::is_integral_v<T>) {
    return __atomic_fetch_add(p, v, __ATOMIC_RELAXED);
  } else {
    T old = __atomic_load_n(p, __ATOMIC_RELAXED);
    T sum = old + v;
    while (!__atomic_compare_exchange(p, &old, &sum, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
      sum = old + v;
    }
    return old;
  }
}
template <typename T>
inline T atomicMax(T* p, T v) {
  T old = __atomic_load_n(p, __ATOMIC_RELAXED);
  while (old < v && !__atomic_compare_exchange_n(p, &old, v, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
  }
  return old;
}
template <typename T>
inline T atomicExch(T* p, T v) {
  return __atomic_exchange_n(p, v, __ATOMIC_RELAXED);
}
template <typename T>
inline T atomicCAS(T* p, T expected, T desired) {
  __atomic_compare_exchange_n(p, &expected, desired, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
  return expected;
}

// Math built-ins: the C library's expf, logf, erff, sqrtf, fmaxf, … (math.h); the
// fast-math intrinsics run at full precision here.
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline float __expf(float x) { return std::exp(x); }
inline float __logf(float x) { return std::log(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float __int_as_float(int i) { return ::emu::fromBits<float>(static_cast<uint32_t>(i)); }
inline int __float_as_int(float f) { return static_cast<int>(static_cast<uint32_t>(::emu::toBits(f))); }
inline unsigned int __float_as_uint(float f) { return static_cast<uint32_t>(::emu::toBits(f)); }
inline float __uint_as_float(unsigned int u) { return ::emu::fromBits<float>(u); }

// CUDA's min/max overloads for mixed integer code.
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline unsigned int min(unsigned int a, unsigned int b) { return a < b ? a : b; }
inline unsigned int max(unsigned int a, unsigned int b) { return a > b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }
inline unsigned long long min(unsigned long long a, unsigned long long b) { return a < b ? a : b; }
inline unsigned long long max(unsigned long long a, unsigned long long b) { return a > b ? a : b; }
inline float min(float a, float b) { return std::fmin(a, b); }
inline float max(float a, float b) { return std::fmax(a, b); }

// Uses every declaration of backends/cuda/kernels/nvrtc_prelude.h once, so that the clang
// check proves each one compiles and lowers to the instruction it should (TestClangPrelude).

__device__ __noinline__ float keep(float x) { return x; }

extern "C" __global__ void __launch_bounds__(256) prelude_use(float* f, double* d, int* i,
                                                              unsigned int* u, long long* ll,
                                                              unsigned long long* ull) {
  __shared__ float sh[32];
  int t = threadIdx.x + blockIdx.x * blockDim.x + gridDim.x + warpSize;
  sh[t & 31] = f[t];
  __syncthreads();
  float x = sh[(t + 1) & 31];
  double y = d[t];

  f[0] = __int_as_float(__float_as_int(x)) + __uint_as_float(__float_as_uint(x));
  d[0] = __longlong_as_double(__double_as_longlong(y));

  i[0] = min(i[1], i[2]) + max(i[1], i[2]);
  u[0] = min(u[1], u[2]) + max(u[1], u[2]) + min(i[1], u[2]) + max(u[1], i[2]);
  ll[0] = min(ll[1], ll[2]) + max(ll[1], ll[2]);
  ull[0] = min(ull[1], ull[2]) + max(ull[1], ull[2]) + min(ll[1], ull[2]) + max(ull[1], ll[2]);
  long l1 = (long)ll[3], l2 = (long)ll[4];
  unsigned long ul = (unsigned long)ull[3];
  ll[5] = min(l1, l2) + max(l1, l2);
  ull[5] = min(ul, ul) + max(ul, ul) + min(l1, ul) + max(ul, l2);

  f[1] = sqrtf(x) + rsqrtf(x) + fmaxf(x, f[2]) + fminf(x, f[2]) + fabsf(x) + min(x, f[3]) +
         max(x, f[3]);
  d[1] = sqrt(y) + rsqrt(y) + fmax(y, d[2]) + fmin(y, d[2]) + fabs(y) + min(y, d[3]) +
         max(y, d[3]) + min(x, y) + max(y, x);

  f[2] = expf(x) + logf(x) + erff(x) + tanhf(x) + powf(x, x);
  f[3] = exp(x) + log(x) + erf(x) + tanh(x) + pow(x, x);  // the float overloads
  d[4] = exp(y) + log(y) + erf(y) + tanh(y) + pow(y, y);

  unsigned int all = __activemask();
  f[4] = __shfl_sync(all, x, 0) + __shfl_up_sync(all, x, 1) + __shfl_down_sync(all, x, 1, 16) +
         __shfl_xor_sync(all, x, 1);
  i[4] = __shfl_sync(all, i[5], 0) + __shfl_xor_sync(all, i[5], 2, 8);
  u[4] = __shfl_down_sync(all, u[5], 2);
  ll[6] = __shfl_sync(all, ll[7], 3);
  ull[6] = __shfl_up_sync(all, ull[7], 3);
  d[5] = __shfl_xor_sync(all, y, 4);
  u[6] = __ballot_sync(all, x > 0.0f) + __all_sync(all, t > 0) + __any_sync(all, t > 1);
  __syncwarp();
  __syncwarp(all);
  f[5] = keep(x);
}

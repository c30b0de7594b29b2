// mypt CUDA backend kernels. Compiled at run time by NVRTC for the device's architecture
// (backends/cuda/device), no headers included. Every kernel has a Go twin in
// backends/cuda/device/twins.go with the same indexing (blockIdx/threadIdx loops) that the
// fake device runs in CI; keep the two in step. Arguments are listed in kernels.go (Specs).
//
// Conventions: all activations and parameters are fp32, row-major; "n" is rows (B·T).
// No kernel uses atomics: every reduction has a fixed order, so results are bit-identical
// from run to run on the same GPU (FEATURE_DETERMINISTIC).

#define MAXHD 128  // largest head dimension the attention kernels accept
#define ATT_BQ 32  // queries per attention block (one thread each)
#define ATT_BK 32  // keys per shared-memory tile
#define NEG_INF __int_as_float(0xff800000)

typedef unsigned long long u64;

// ---- counter-based randomness, the CPU backend's splitmix hash (backends/cpu/model.go)

__device__ __forceinline__ u64 splitmix(u64 x) {
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

// hash53 is the 53-bit uniform integer behind uniform(seed, site, i) = hash53/2^53.
__device__ __forceinline__ u64 hash53(u64 seed, u64 site, u64 i) {
  return splitmix(seed ^ splitmix((site << 48) ^ i)) >> 11;
}

// dropScale is the dropout factor of element i: 0 when uniform < p (hash53 < thr), else keep.
__device__ __forceinline__ float dropScale(u64 seed, u64 site, u64 i, u64 thr, float keep) {
  return hash53(seed, site, i) < thr ? 0.0f : keep;
}

// ---- embeddings

// out[r,:] = wte[tokens[r],:] (+ wpe[pos[r],:]). grid n, block any.
extern "C" __global__ void embed_fwd(float* out, const float* wte, const float* wpe,
                                     const int* tokens, const int* pos, int n, int C) {
  int r = blockIdx.x;
  if (r >= n) return;
  const float* e = wte + (long long)tokens[r] * C;
  for (int j = threadIdx.x; j < C; j += blockDim.x) {
    float v = e[j];
    if (wpe) v += wpe[(long long)pos[r] * C + j];
    out[(long long)r * C + j] = v;
  }
}

// NEFTune: x[i] += amp·(2u−1). grid ceil(n/block).
extern "C" __global__ void neftune(float* x, long long n, u64 seed, double amp) {
  long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  double u = (double)hash53(seed, 0, (u64)i) * (1.0 / 9007199254740992.0);
  x[i] += (float)(amp * (2.0 * u - 1.0));
}

// Deterministic scatter-add of row gradients into a table: group g adds, in row order, the
// rows rows[offs[g]..offs[g+1]) of d into table row ids[g]. grid groups, block any.
extern "C" __global__ void embed_bwd(float* table, const float* d, const int* rows,
                                     const int* offs, const int* ids, int C) {
  int g = blockIdx.x;
  float* dst = table + (long long)ids[g] * C;
  for (int j = threadIdx.x; j < C; j += blockDim.x) {
    float s = 0.0f;
    for (int k = offs[g]; k < offs[g + 1]; k++) s += d[(long long)rows[k] * C + j];
    dst[j] += s;
  }
}

// ---- block reductions (blockDim.x a power of two ≤ 1024, red has blockDim.x entries)

__device__ float blockSum(float v, float* red) {
  int t = threadIdx.x;
  red[t] = v;
  __syncthreads();
  for (int s = blockDim.x / 2; s > 0; s >>= 1) {
    if (t < s) red[t] += red[t + s];
    __syncthreads();
  }
  float r = red[0];
  __syncthreads();
  return r;
}

// ---- LayerNorm / RMSNorm

// grid n, block 256 (power of two). mean is unused (left alone) for RMSNorm.
extern "C" __global__ void norm_fwd(float* out, float* mean, float* rstd, const float* in,
                                    const float* w, const float* b, int n, int C, float eps,
                                    int layerNorm) {
  __shared__ float red[1024];
  int r = blockIdx.x;
  const float* x = in + (long long)r * C;
  float m = 0.0f;
  if (layerNorm) {
    float s = 0.0f;
    for (int j = threadIdx.x; j < C; j += blockDim.x) s += x[j];
    m = blockSum(s, red) / C;
  }
  float ss = 0.0f;
  for (int j = threadIdx.x; j < C; j += blockDim.x) {
    float d = x[j] - m;
    ss += d * d;
  }
  float rs = rsqrtf(blockSum(ss, red) / C + eps);
  if (threadIdx.x == 0) {
    if (layerNorm) mean[r] = m;
    rstd[r] = rs;
  }
  float* o = out + (long long)r * C;
  for (int j = threadIdx.x; j < C; j += blockDim.x) {
    float v = (x[j] - m) * rs * w[j];
    if (b) v += b[j];
    o[j] = v;
  }
}

// din += ∂/∂in. grid n, block 256.
extern "C" __global__ void norm_bwd_dx(float* din, const float* dout, const float* in,
                                       const float* mean, const float* rstd, const float* w,
                                       int n, int C, int layerNorm) {
  __shared__ float red[1024];
  int r = blockIdx.x;
  const float* x = in + (long long)r * C;
  const float* dy = dout + (long long)r * C;
  float m = layerNorm ? mean[r] : 0.0f, rs = rstd[r];
  float sd = 0.0f, sdx = 0.0f;
  for (int j = threadIdx.x; j < C; j += blockDim.x) {
    float d = dy[j] * w[j];
    sd += d;
    sdx += d * (x[j] - m) * rs;
  }
  sd = layerNorm ? blockSum(sd, red) / C : 0.0f;
  sdx = blockSum(sdx, red) / C;
  float* dx = din + (long long)r * C;
  for (int j = threadIdx.x; j < C; j += blockDim.x) {
    float xh = (x[j] - m) * rs;
    dx[j] += rs * (dy[j] * w[j] - sd - xh * sdx);
  }
}

// dw[j] += Σ_r dout·x̂, db[j] += Σ_r dout, rows in order. grid ceil(C/block).
extern "C" __global__ void norm_bwd_dw(float* dw, float* db, const float* dout, const float* in,
                                       const float* mean, const float* rstd, int n, int C,
                                       int layerNorm) {
  int j = blockIdx.x * blockDim.x + threadIdx.x;
  if (j >= C) return;
  float sw = 0.0f, sb = 0.0f;
  for (int r = 0; r < n; r++) {
    float m = layerNorm ? mean[r] : 0.0f;
    float dy = dout[(long long)r * C + j];
    sw += dy * (in[(long long)r * C + j] - m) * rstd[r];
    sb += dy;
  }
  dw[j] += sw;
  if (db) db[j] += sb;
}

// ---- linear helpers (the products themselves are cuBLASLt)

// out[r,:] = b. grid ceil(n·oc/block).
extern "C" __global__ void fill_rows(float* out, const float* b, long long total, int oc) {
  long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (i < total) out[i] = b[i % oc];
}

// db[j] += Σ_r d[r,j], rows in order. grid ceil(oc/block).
extern "C" __global__ void col_sum_add(float* db, const float* d, int n, int oc) {
  int j = blockIdx.x * blockDim.x + threadIdx.x;
  if (j >= oc) return;
  float s = 0.0f;
  for (int r = 0; r < n; r++) s += d[(long long)r * oc + j];
  db[j] += s;
}

// fp32 → bf16 bits, round to nearest even, NaN kept. grid ceil(n/block).
extern "C" __global__ void cast_bf16(unsigned short* dst, const float* src, long long n) {
  long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  unsigned int bits = __float_as_uint(src[i]);
  if (src[i] != src[i]) bits |= 1u << 22;
  else bits += 0x7FFFu + ((bits >> 16) & 1u);
  dst[i] = (unsigned short)(bits >> 16);
}

// ---- residual + dropout

// branch = skip + branch·mask; thr == 0 means no dropout. grid ceil(n/block).
extern "C" __global__ void residual_add(float* branch, const float* skip, long long n, u64 seed,
                                        u64 site, u64 thr, float keep) {
  long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  float m = thr ? dropScale(seed, site, (u64)i, thr, keep) : 1.0f;
  branch[i] = skip[i] + branch[i] * m;
}

// dst = src·mask (the dropout backward). grid ceil(n/block).
extern "C" __global__ void mask_mul(float* dst, const float* src, long long n, u64 seed, u64 site,
                                    u64 thr, float keep) {
  long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  dst[i] = src[i] * dropScale(seed, site, (u64)i, thr, keep);
}

// ---- activations (exact erf GELU; SwiGLU silu(gate)·up). grid ceil(n/block).

extern "C" __global__ void gelu_fwd(float* out, const float* in, long long n) {
  long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  float x = in[i];
  out[i] = 0.5f * x * (1.0f + erff(x * 0.70710678118654752440f));
}

extern "C" __global__ void gelu_bwd(float* din, const float* dout, const float* in, long long n) {
  long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  float x = in[i];
  float cdf = 0.5f * (1.0f + erff(x * 0.70710678118654752440f));
  float pdf = 0.39894228040143267794f * expf(-0.5f * x * x);
  din[i] = dout[i] * (cdf + x * pdf);
}

extern "C" __global__ void swiglu_fwd(float* out, const float* gate, const float* up, long long n) {
  long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  float g = gate[i];
  float s = 1.0f / (1.0f + expf(-g));
  out[i] = (g * s) * up[i];
}

extern "C" __global__ void swiglu_bwd(float* dgate, float* dup, const float* dout,
                                      const float* gate, const float* up, long long n) {
  long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  float g = gate[i];
  float s = 1.0f / (1.0f + expf(-g));
  dgate[i] = dout[i] * up[i] * (s * (1.0f + g * (1.0f - s)));
  dup[i] = dout[i] * (g * s);
}

// ---- RoPE (split half) on the q and k parts of qkv rows [n, 3C]; cos/sin [maxPos, hd/2].
// inverse applies the transposed rotation (the backward). grid ceil(n·nh·half/block).
extern "C" __global__ void rope(float* qkv, const int* pos, const float* cosT, const float* sinT,
                                int n, int C, int nh, int inverse) {
  int hd = C / nh, half = hd / 2;
  long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (t >= (long long)n * nh * half) return;
  int i = t % half;
  int h = (t / half) % nh;
  int r = t / ((long long)half * nh);
  float c = cosT[pos[r] * half + i];
  float s = sinT[pos[r] * half + i];
  if (inverse) s = -s;
  for (int part = 0; part < 2; part++) {
    float* x = qkv + (long long)r * 3 * C + part * C + h * hd;
    float x1 = x[i], x2 = x[i + half];
    x[i] = x1 * c - x2 * s;
    x[i + half] = x2 * c + x1 * s;
  }
}

// ---- attention: causal, segment-isolated, flash-style (online softmax, no T×T matrix).
//
// Batch row b has Tq queries and Tk keys. Query r sits at position r+qoff and reads
// q[(b·Tq+r)·sq + h·hd ...]; key j reads k[(b·Tk+j)·skv + h·hd], v likewise; y[(b·Tq+r)·sy +
// h·hd]. Query r may attend key j when j ≤ r+qoff and (no seg or seg[b·Tq+r] == seg[b·Tk+j]).
// Dropout (thr > 0) scales probability (b,h,r,j) by the hash of index ((b·nh+h)·Tq+r)·Tk+j:
// the CPU backend's [B,nh,T,T] mask. lse[(b·nh+h)·Tq+r] = logsumexp of the row (may be null).
// grid (ceil(Tq/ATT_BQ), B·nh), block ATT_BQ.

__device__ __forceinline__ bool attAllowed(const int* seg, int b, int Tq, int Tk, int r, int j,
                                           int qoff) {
  return j <= r + qoff && (!seg || seg[b * Tq + r] == seg[b * Tk + j]);
}

extern "C" __global__ void attn_fwd(float* y, float* lse, const float* q, const float* k,
                                    const float* v, const int* seg, int Tq, int Tk, int qoff,
                                    int nh, int hd, int sq, int skv, int sy, u64 seed, u64 site,
                                    u64 thr, float keep) {
  __shared__ float Ks[ATT_BK][MAXHD];
  __shared__ float Vs[ATT_BK][MAXHD];
  int bh = blockIdx.y, b = bh / nh, h = bh % nh;
  int r = blockIdx.x * ATT_BQ + threadIdx.x;
  bool active = r < Tq;
  float scale = rsqrtf((float)hd);
  float qr[MAXHD], acc[MAXHD];
  float m = NEG_INF, l = 0.0f;
  if (active) {
    const float* qp = q + (long long)(b * Tq + r) * sq + h * hd;
    for (int d = 0; d < hd; d++) { qr[d] = qp[d]; acc[d] = 0.0f; }
  }
  int lastQ = min(Tq - 1, (int)(blockIdx.x * ATT_BQ + ATT_BQ - 1)) + qoff;
  for (int j0 = 0; j0 <= lastQ && j0 < Tk; j0 += ATT_BK) {
    int jt = j0 + threadIdx.x;  // ATT_BQ == ATT_BK: thread t loads key row j0+t
    if (jt < Tk) {
      const float* kp = k + (long long)(b * Tk + jt) * skv + h * hd;
      const float* vp = v + (long long)(b * Tk + jt) * skv + h * hd;
      for (int d = 0; d < hd; d++) { Ks[threadIdx.x][d] = kp[d]; Vs[threadIdx.x][d] = vp[d]; }
    }
    __syncthreads();
    if (active) {
      for (int jj = 0; jj < ATT_BK && j0 + jj < Tk; jj++) {
        int j = j0 + jj;
        if (!attAllowed(seg, b, Tq, Tk, r, j, qoff)) continue;
        float s = 0.0f;
        for (int d = 0; d < hd; d++) s += qr[d] * Ks[jj][d];
        s *= scale;
        float mn = fmaxf(m, s);
        float corr = expf(m - mn);
        float p = expf(s - mn);
        l = l * corr + p;
        float pd = thr ? p * dropScale(seed, site, ((u64)(bh * Tq + r)) * Tk + j, thr, keep) : p;
        for (int d = 0; d < hd; d++) acc[d] = acc[d] * corr + pd * Vs[jj][d];
        m = mn;
      }
    }
    __syncthreads();
  }
  if (active) {
    float* yp = y + (long long)(b * Tq + r) * sy + h * hd;
    float inv = 1.0f / l;
    for (int d = 0; d < hd; d++) yp[d] = acc[d] * inv;
    if (lse) lse[bh * Tq + r] = m + logf(l);
  }
}

// D[(b·nh+h)·T+r] = Σ_d dy·y over the head. grid ceil(B·nh·T/block).
extern "C" __global__ void attn_bwd_pre(float* D, const float* dy, const float* y, int B, int T,
                                        int nh, int hd, int sy) {
  int t = blockIdx.x * blockDim.x + threadIdx.x;
  if (t >= B * nh * T) return;
  int r = t % T, bh = t / T, b = bh / nh, h = bh % nh;
  long long off = (long long)(b * T + r) * sy + h * hd;
  float s = 0.0f;
  for (int d = 0; d < hd; d++) s += dy[off + d] * y[off + d];
  D[t] = s;
}

// dq for each query (thread), recomputing probabilities from lse; keys tiled in shared
// memory. Training layout: Tq = Tk = T, qoff = 0. grid (ceil(T/ATT_BQ), B·nh), block ATT_BQ.
extern "C" __global__ void attn_bwd_dq(float* dq, const float* q, const float* k, const float* v,
                                       const float* dy, const float* lse, const float* D,
                                       const int* seg, int T, int nh, int hd, int sq, int sy,
                                       u64 seed, u64 site, u64 thr, float keep) {
  __shared__ float Ks[ATT_BK][MAXHD];
  __shared__ float Vs[ATT_BK][MAXHD];
  int bh = blockIdx.y, b = bh / nh, h = bh % nh;
  int r = blockIdx.x * ATT_BQ + threadIdx.x;
  bool active = r < T;
  float scale = rsqrtf((float)hd);
  float qr[MAXHD], dyr[MAXHD], acc[MAXHD];
  float L = 0.0f, Dr = 0.0f;
  if (active) {
    const float* qp = q + (long long)(b * T + r) * sq + h * hd;
    const float* dp = dy + (long long)(b * T + r) * sy + h * hd;
    for (int d = 0; d < hd; d++) { qr[d] = qp[d]; dyr[d] = dp[d]; acc[d] = 0.0f; }
    L = lse[bh * T + r];
    Dr = D[bh * T + r];
  }
  int lastQ = min(T - 1, (int)(blockIdx.x * ATT_BQ + ATT_BQ - 1));
  for (int j0 = 0; j0 <= lastQ; j0 += ATT_BK) {
    int jt = j0 + threadIdx.x;
    if (jt < T) {
      const float* kp = k + (long long)(b * T + jt) * sq + h * hd;
      const float* vp = v + (long long)(b * T + jt) * sq + h * hd;
      for (int d = 0; d < hd; d++) { Ks[threadIdx.x][d] = kp[d]; Vs[threadIdx.x][d] = vp[d]; }
    }
    __syncthreads();
    if (active) {
      for (int jj = 0; jj < ATT_BK && j0 + jj < T; jj++) {
        int j = j0 + jj;
        if (!attAllowed(seg, b, T, T, r, j, 0)) continue;
        float s = 0.0f, dpv = 0.0f;
        for (int d = 0; d < hd; d++) { s += qr[d] * Ks[jj][d]; dpv += dyr[d] * Vs[jj][d]; }
        float p = expf(s * scale - L);
        if (thr) dpv *= dropScale(seed, site, ((u64)(bh * T + r)) * T + j, thr, keep);
        float ds = p * (dpv - Dr);
        for (int d = 0; d < hd; d++) acc[d] += ds * Ks[jj][d];
      }
    }
    __syncthreads();
  }
  if (active) {
    float* o = dq + (long long)(b * T + r) * sq + h * hd;
    for (int d = 0; d < hd; d++) o[d] = acc[d] * scale;
  }
}

// dk and dv for each key (thread) over the queries that see it; queries tiled in shared
// memory. grid (ceil(T/ATT_BK), B·nh), block ATT_BK.
extern "C" __global__ void attn_bwd_dkv(float* dk, float* dv, const float* q, const float* k,
                                        const float* v, const float* dy, const float* lse,
                                        const float* D, const int* seg, int T, int nh, int hd,
                                        int sq, int sy, u64 seed, u64 site, u64 thr, float keep) {
  __shared__ float Qs[ATT_BQ][MAXHD];
  __shared__ float DYs[ATT_BQ][MAXHD];
  __shared__ float Ls[ATT_BQ], Ds[ATT_BQ];
  int bh = blockIdx.y, b = bh / nh, h = bh % nh;
  int j = blockIdx.x * ATT_BK + threadIdx.x;
  bool active = j < T;
  float scale = rsqrtf((float)hd);
  float kr[MAXHD], vr[MAXHD], dka[MAXHD], dva[MAXHD];
  if (active) {
    const float* kp = k + (long long)(b * T + j) * sq + h * hd;
    const float* vp = v + (long long)(b * T + j) * sq + h * hd;
    for (int d = 0; d < hd; d++) { kr[d] = kp[d]; vr[d] = vp[d]; dka[d] = 0.0f; dva[d] = 0.0f; }
  }
  for (int i0 = blockIdx.x * ATT_BK; i0 < T; i0 += ATT_BQ) {  // queries i ≥ first key of block
    int it = i0 + threadIdx.x;
    if (it < T) {
      const float* qp = q + (long long)(b * T + it) * sq + h * hd;
      const float* dp = dy + (long long)(b * T + it) * sy + h * hd;
      for (int d = 0; d < hd; d++) { Qs[threadIdx.x][d] = qp[d]; DYs[threadIdx.x][d] = dp[d]; }
      Ls[threadIdx.x] = lse[bh * T + it];
      Ds[threadIdx.x] = D[bh * T + it];
    }
    __syncthreads();
    if (active) {
      for (int ii = 0; ii < ATT_BQ && i0 + ii < T; ii++) {
        int i = i0 + ii;
        if (!attAllowed(seg, b, T, T, i, j, 0)) continue;
        float s = 0.0f, dpv = 0.0f;
        for (int d = 0; d < hd; d++) { s += Qs[ii][d] * kr[d]; dpv += DYs[ii][d] * vr[d]; }
        float p = expf(s * scale - Ls[ii]);
        float mk = thr ? dropScale(seed, site, ((u64)(bh * T + i)) * T + j, thr, keep) : 1.0f;
        float ds = p * (dpv * mk - Ds[ii]);
        float pm = p * mk;
        for (int d = 0; d < hd; d++) { dva[d] += pm * DYs[ii][d]; dka[d] += ds * Qs[ii][d]; }
      }
    }
    __syncthreads();
  }
  if (active) {
    float* ko = dk + (long long)(b * T + j) * sq + h * hd;
    float* vo = dv + (long long)(b * T + j) * sq + h * hd;
    for (int d = 0; d < hd; d++) { ko[d] = dka[d] * scale; vo[d] = dva[d]; }
  }
}

// k/v cache append: kc[(pos0+i)·C + c] = qkv[i·3C + C + c], vc likewise. grid ceil(n·C/block).
extern "C" __global__ void kv_append(float* kc, float* vc, const float* qkv, int n, int C, int pos0) {
  long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (t >= (long long)n * C) return;
  int i = t / C, c = t % C;
  kc[(long long)(pos0 + i) * C + c] = qkv[(long long)i * 3 * C + C + c];
  vc[(long long)(pos0 + i) * C + c] = qkv[(long long)i * 3 * C + 2 * C + c];
}

// ---- fused classifier: softmax cross-entropy with loss weights, one block per row.
// rowLoss[r] = w·(logsumexp − x[target]) (double), correct[r] = argmax == target (first
// maximum). With grad, the row is overwritten in place by scale·w·(softmax − onehot): no
// probability tensor is kept. grid n, block 256 (power of two).
extern "C" __global__ void xent(float* logits, const int* targets, const float* weights,
                                double* rowLoss, int* correct, int n, int V, double scale,
                                int grad) {
  __shared__ float rv[1024];
  __shared__ int ri[1024];
  int r = blockIdx.x, t = threadIdx.x;
  float* x = logits + (long long)r * V;
  float mx = NEG_INF;
  int arg = 0x7fffffff;
  for (int j = t; j < V; j += blockDim.x)
    if (x[j] > mx) { mx = x[j]; arg = j; }
  rv[t] = mx; ri[t] = arg;
  __syncthreads();
  for (int s = blockDim.x / 2; s > 0; s >>= 1) {
    if (t < s && (rv[t + s] > rv[t] || (rv[t + s] == rv[t] && ri[t + s] < ri[t]))) {
      rv[t] = rv[t + s]; ri[t] = ri[t + s];
    }
    __syncthreads();
  }
  mx = rv[0]; arg = ri[0];
  __syncthreads();
  float se = 0.0f;
  for (int j = t; j < V; j += blockDim.x) se += expf(x[j] - mx);
  rv[t] = se;
  __syncthreads();
  for (int s = blockDim.x / 2; s > 0; s >>= 1) {
    if (t < s) rv[t] += rv[t + s];
    __syncthreads();
  }
  float sum = rv[0];
  double w = weights[r];
  int tg = targets[r];
  if (t == 0) {
    if (w > 0) {
      double lse = (double)mx + log((double)sum);
      rowLoss[r] = w * (lse - (double)x[tg]);
      correct[r] = arg == tg;
    } else {
      rowLoss[r] = 0.0;
      correct[r] = 0;
    }
  }
  __syncthreads();
  if (!grad) return;
  bool live = w != 0.0 && scale != 0.0;
  float f = live ? (float)(scale * w / (double)sum) : 0.0f;
  for (int j = t; j < V; j += blockDim.x) x[j] = live ? f * expf(x[j] - mx) : 0.0f;
  __syncthreads();
  if (t == 0 && live) x[tg] -= (float)(scale * w);
}

// ---- optimizer

// One AdamW step (torch.optim.AdamW arithmetic in fp32) over n elements; zeroes g.
// grid ceil(n/block).
extern "C" __global__ void adamw(float* p, float* g, float* m, float* v, long long n, float gscale,
                                 float b1, float c1, float b2, float c2, float bc2Sqrt, float eps,
                                 float decay, float stepSize) {
  long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  float gi = g[i] * gscale;
  float mi = b1 * m[i] + c1 * gi;
  float vi = b2 * v[i] + c2 * gi * gi;
  m[i] = mi;
  v[i] = vi;
  float denom = sqrtf(vi) / bc2Sqrt + eps;
  p[i] = p[i] * decay - stepSize * mi / denom;
  g[i] = 0.0f;
}

// Partial sums of squares in double: block b sums elements b·block+t, stepping by the
// whole grid, then reduces in a fixed tree. grid G, block 256.
extern "C" __global__ void sumsq(double* partial, const float* g, long long n) {
  __shared__ double red[256];
  int t = threadIdx.x;
  double s = 0.0;
  for (long long i = (long long)blockIdx.x * blockDim.x + t; i < n; i += (long long)gridDim.x * blockDim.x) {
    double x = g[i];
    s += x * x;
  }
  red[t] = s;
  __syncthreads();
  for (int k = blockDim.x / 2; k > 0; k >>= 1) {
    if (t < k) red[t] += red[t + k];
    __syncthreads();
  }
  if (t == 0) partial[blockIdx.x] = red[0];
}

#!/usr/bin/python3
"""Times numpy's float32 matmul (Debian numpy -> OpenBLAS sgemm) on the shapes of
bench_test.go, so the Go engine can be compared with OpenBLAS on the same machine.

Run: OPENBLAS_NUM_THREADS=2 /usr/bin/python3 backends/cpu/gemm/openblas_bench.py
Needs: apt-get install -y python3-numpy libopenblas0-pthread
Accumulating shapes (beta=1 in Go) are timed as plain products (beta=0) here.
"""
import time

import numpy as np

SHAPES = [  # name, transA, transB, m, n, k
    ("square1024_NN", False, False, 1024, 1024, 1024),
    ("fwd_xWt_2048x3072x768_NT", False, True, 2048, 3072, 768),
    ("bwd_dX_2048x768x3072_NN", False, False, 2048, 768, 3072),
    ("bwd_dW_3072x768x2048_TN", True, False, 3072, 768, 2048),
    ("shakes_fwd_768x384x128_NT", False, True, 768, 384, 128),
    ("shakes_dW_384x128x768_TN", True, False, 384, 128, 768),
    ("vocab_fwd_256x50304x64_NT", False, True, 256, 50304, 64),
    ("vocab_dX_256x64x50304_NN", False, False, 256, 64, 50304),
    ("vocab_dW_50304x64x256_TN", True, False, 50304, 64, 256),
    ("attn_qk_256x256x64_NT", False, True, 256, 256, 64),
    ("attn_pv_256x64x256_NN", False, False, 256, 64, 256),
    ("attn_qk_64x64x32_NT", False, True, 64, 64, 32),
    ("tiny_16x16x16_NN", False, False, 16, 16, 16),
]


def main():
    rng = np.random.default_rng(1)
    np.show_runtime() if hasattr(np, "show_runtime") else None
    for name, ta, tb, m, n, k in SHAPES:
        a = rng.random((k, m) if ta else (m, k), dtype=np.float32)
        b = rng.random((n, k) if tb else (k, n), dtype=np.float32)
        opa, opb = (a.T if ta else a), (b.T if tb else b)
        c = np.empty((m, n), dtype=np.float32)
        flops = 2.0 * m * n * k
        reps = max(3, int(2e9 / flops))
        best = float("inf")
        for _ in range(5):
            t0 = time.perf_counter()
            for _ in range(reps):
                np.matmul(opa, opb, out=c)
            best = min(best, (time.perf_counter() - t0) / reps)
        print(f"{name:32s} {flops / best / 1e9:8.1f} GFLOP/s")


if __name__ == "__main__":
    main()

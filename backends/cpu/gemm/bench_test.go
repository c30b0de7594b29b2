package gemm

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/gonum"
)

type benchShape struct {
	name           string
	transA, transB bool
	m, n, k        int
	beta           float32
}

// Shapes the trainer runs: GPT-2 124M-like linear layers (B·T = 2048 rows), nanoGPT's
// Shakespeare-char config (B·T = 768, C = 128), the 50304-vocab classifier with C = 64,
// and attention's per-head products.
var benchShapes = []benchShape{
	{"square1024_NN", false, false, 1024, 1024, 1024, 0},
	{"fwd_xWt_2048x3072x768_NT", false, true, 2048, 3072, 768, 0},
	{"bwd_dX_2048x768x3072_NN", false, false, 2048, 768, 3072, 0},
	{"bwd_dW_3072x768x2048_TN_acc", true, false, 3072, 768, 2048, 1},
	{"shakes_fwd_768x384x128_NT", false, true, 768, 384, 128, 0},
	{"shakes_dW_384x128x768_TN_acc", true, false, 384, 128, 768, 1},
	{"vocab_fwd_256x50304x64_NT", false, true, 256, 50304, 64, 0},
	{"vocab_dX_256x64x50304_NN", false, false, 256, 64, 50304, 0},
	{"vocab_dW_50304x64x256_TN_acc", true, false, 50304, 64, 256, 1},
	{"attn_qk_256x256x64_NT", false, true, 256, 256, 64, 0},
	{"attn_pv_256x64x256_NN", false, false, 256, 64, 256, 0},
	{"attn_qk_64x64x32_NT", false, true, 64, 64, 32, 0},
	{"tiny_16x16x16_NN", false, false, 16, 16, 16, 0},
}

func BenchmarkSgemm(b *testing.B) {
	e := New(0)
	defer e.Close()
	peer := gonum.Implementation{}
	for _, s := range benchShapes {
		rng := rand.New(rand.NewPCG(1, 1))
		rand32 := func(n int) []float32 {
			v := make([]float32, n)
			for i := range v {
				v[i] = rng.Float32() - 0.5
			}
			return v
		}
		lda, ldb := s.k, s.n
		if s.transA {
			lda = s.m
		}
		if s.transB {
			ldb = s.k
		}
		a, bm, c := rand32(s.m*s.k), rand32(s.k*s.n), rand32(s.m*s.n)
		flops := 2 * float64(s.m) * float64(s.n) * float64(s.k)
		var gonumRate float64
		b.Run(s.name+"/gonum", func(b *testing.B) {
			tA, tB := blas.NoTrans, blas.NoTrans
			if s.transA {
				tA = blas.Trans
			}
			if s.transB {
				tB = blas.Trans
			}
			for b.Loop() {
				peer.Sgemm(tA, tB, s.m, s.n, s.k, 1, a, lda, bm, ldb, s.beta, c, s.n)
			}
			gonumRate = flops * float64(b.N) / b.Elapsed().Seconds() / 1e9
			b.ReportMetric(gonumRate, "GFLOP/s")
		})
		b.Run(s.name+"/mypt", func(b *testing.B) {
			for b.Loop() {
				e.Sgemm(s.transA, s.transB, s.m, s.n, s.k, 1, a, lda, bm, ldb, s.beta, c, s.n)
			}
			rate := flops * float64(b.N) / b.Elapsed().Seconds() / 1e9
			b.ReportMetric(rate, "GFLOP/s")
			if gonumRate > 0 {
				b.ReportMetric(rate/gonumRate, "x_gonum")
			}
		})
	}
}

// BenchmarkKernels measures each micro-kernel variant alone on a 1024³ product, one thread.
func BenchmarkKernels(b *testing.B) {
	const n = 1024
	a, bm, c := make([]float32, n*n), make([]float32, n*n), make([]float32, n*n)
	for i := range a {
		a[i], bm[i] = float32(i%7)-3, float32(i%5)-2
	}
	for _, kern := range availableKernels() {
		e := newEngine(1, kern)
		b.Run(fmt.Sprintf("%s/1thread", kern.name), func(b *testing.B) {
			for b.Loop() {
				e.Sgemm(false, false, n, n, n, 1, a, n, bm, n, 0, c, n)
			}
			b.ReportMetric(2*n*n*n*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
		})
		e.Close()
	}
}

// BenchmarkMicroKernel runs each micro-kernel on L1-resident panels: the ceiling the full
// product can approach on one core.
func BenchmarkMicroKernel(b *testing.B) {
	const k = 256
	for _, kern := range availableKernels() {
		a := make([]float32, kern.mr*k)
		bp := make([]float32, kern.nr*k)
		c := make([]float32, kern.mr*kern.nr)
		b.Run(kern.name, func(b *testing.B) {
			for b.Loop() {
				kern.fn(k, &a[0], &bp[0], &c[0], kern.nr, 1, 1)
			}
			b.ReportMetric(2*float64(kern.mr*kern.nr*k)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
		})
	}
}

// BenchmarkPackers measures the panel packers on a 14×256 (A) and 32×256 (B) panel whose
// source rows are 300 floats apart (source in L2).
func BenchmarkPackers(b *testing.B) {
	const kc, ld = 256, 300
	src := make([]float32, 32*ld+ld*kc)
	for _, kern := range availableKernels() {
		for _, panelW := range []int{kern.mr, kern.nr} {
			dst := make([]float32, kc*panelW)
			for _, p := range []struct {
				name string
				fn   panelPacker
			}{{"copy", kern.copyPanel}, {"gather", kern.gatherPanel}} {
				b.Run(fmt.Sprintf("%s/%s%d", kern.name, p.name, panelW), func(b *testing.B) {
					for b.Loop() {
						p.fn(dst, src, ld, kc, panelW, panelW)
					}
					b.ReportMetric(float64(kc*panelW)*float64(b.N)/b.Elapsed().Seconds()/1e9, "Gfloats/s")
				})
			}
		}
	}
}

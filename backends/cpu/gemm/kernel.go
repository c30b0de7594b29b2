package gemm

import "unsafe"

// kernel is a register-blocked micro-kernel: it multiplies an mr×k packed panel of A
// (stored k-major: a[p*mr+i]) by a k×nr packed panel of B (b[p*nr+j]) and writes
// C[i*ldc+j] = alpha·acc + beta·C[i*ldc+j] for the full mr×nr tile, never reading C when
// beta == 0. k >= 1.
type kernel struct {
	name   string
	mr, nr int
	fn     func(k int, a, b, c *float32, ldc int, alpha, beta float32)

	copyPanel, gatherPanel panelPacker // the packers that fill this kernel's panels
}

// goKernel is the portable micro-kernel: a 4×4 tile held in sixteen scalar accumulators.
var goKernel = kernel{name: "go4x4", mr: 4, nr: 4, fn: kernel4x4Go,
	copyPanel: copyPanelGo, gatherPanel: gatherPanelGo}

func kernel4x4Go(k int, ap, bp, cp *float32, ldc int, alpha, beta float32) {
	a := unsafe.Slice(ap, 4*k)
	b := unsafe.Slice(bp, 4*k)
	var c00, c01, c02, c03, c10, c11, c12, c13 float32
	var c20, c21, c22, c23, c30, c31, c32, c33 float32
	for p := 0; p < k; p++ {
		av := a[4*p : 4*p+4 : 4*p+4]
		bv := b[4*p : 4*p+4 : 4*p+4]
		a0, a1, a2, a3 := av[0], av[1], av[2], av[3]
		b0, b1, b2, b3 := bv[0], bv[1], bv[2], bv[3]
		c00 += a0 * b0
		c01 += a0 * b1
		c02 += a0 * b2
		c03 += a0 * b3
		c10 += a1 * b0
		c11 += a1 * b1
		c12 += a1 * b2
		c13 += a1 * b3
		c20 += a2 * b0
		c21 += a2 * b1
		c22 += a2 * b2
		c23 += a2 * b3
		c30 += a3 * b0
		c31 += a3 * b1
		c32 += a3 * b2
		c33 += a3 * b3
	}
	c := unsafe.Slice(cp, 3*ldc+4)
	acc := [16]float32{c00, c01, c02, c03, c10, c11, c12, c13, c20, c21, c22, c23, c30, c31, c32, c33}
	for i := 0; i < 4; i++ {
		row := c[i*ldc : i*ldc+4 : i*ldc+4]
		if beta == 0 {
			for j := range row {
				row[j] = alpha * acc[4*i+j]
			}
		} else {
			for j := range row {
				row[j] = alpha*acc[4*i+j] + beta*row[j]
			}
		}
	}
}

// bestKernel is the fastest kernel this CPU supports, chosen once at start-up.
var bestKernel = availableKernels()[0]

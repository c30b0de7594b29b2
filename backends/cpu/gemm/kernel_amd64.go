//go:build amd64 && !purego

package gemm

import "golang.org/x/sys/cpu"

//go:noescape
func kernel14x32(k int, a, b, c *float32, ldc int, alpha, beta float32)

//go:noescape
func kernel6x16(k int, a, b, c *float32, ldc int, alpha, beta float32)

//go:noescape
func copyPanel512(dst, src *float32, ld, kc int, masks *[4]uint16)

//go:noescape
func gatherPanel512(dst, src *float32, ld, kc int, masks *[4]uint16, idx *[16]int32)

var (
	avx512Kernel = kernel{name: "avx512-14x32", mr: 14, nr: 32, fn: kernel14x32,
		copyPanel: copyPanelAVX512, gatherPanel: gatherPanelAVX512}
	avx2Kernel = kernel{name: "avx2-6x16", mr: 6, nr: 16, fn: kernel6x16,
		copyPanel: copyPanelGo, gatherPanel: gatherPanelGo}
)

// panelMasks returns the AVX-512 lane masks for a panel row: load masks for the w valid
// source values and store masks for the panelW-wide destination, each as two 16-lane halves.
func panelMasks(panelW, w int) [4]uint16 {
	half := func(n int) uint16 { return uint16(1<<min(max(n, 0), 16) - 1) }
	return [4]uint16{half(w), half(w - 16), half(panelW), half(panelW - 16)}
}

func copyPanelAVX512(dst, src []float32, ld, kc, panelW, w int) {
	if kc == 0 {
		return
	}
	_ = dst[kc*panelW-1]
	_ = src[(kc-1)*ld+w-1]
	masks := panelMasks(panelW, w)
	copyPanel512(&dst[0], &src[0], ld, kc, &masks)
}

//go:noescape
func transpose16(dst, src *float32, ld, dstStride, blocks, rows int)

// gatherPanelAVX512 transposes full 14- or 32-wide panels 16 columns at a time in
// registers; edge panels and the last kc%16 columns use hardware gathers and Go.
func gatherPanelAVX512(dst, src []float32, ld, kc, panelW, w int) {
	if blocks := kc / 16; w == panelW && (w == 14 || w == 32) && blocks > 0 {
		_ = dst[kc*panelW-1]
		_ = src[(w-1)*ld+kc-1]
		for r0 := 0; r0 < w; r0 += 16 {
			transpose16(&dst[r0], &src[r0*ld], ld, panelW, blocks, min(16, w-r0))
		}
		if done := blocks * 16; done < kc {
			gatherPanelGo(dst[done*panelW:], src[done:], ld, kc-done, panelW, w)
		}
		return
	}
	gatherPanelHW(dst, src, ld, kc, panelW, w)
}

func gatherPanelHW(dst, src []float32, ld, kc, panelW, w int) {
	if kc == 0 || w == 0 {
		copyPanelGo(dst, src, ld, kc, panelW, 0)
		return
	}
	if ld >= 1<<26 { // 32-bit gather offsets
		gatherPanelGo(dst, src, ld, kc, panelW, w)
		return
	}
	_ = dst[kc*panelW-1]
	_ = src[(w-1)*ld+kc-1]
	masks := panelMasks(panelW, w)
	var idx [16]int32
	for i := range idx {
		idx[i] = int32(i * ld)
	}
	gatherPanel512(&dst[0], &src[0], ld, kc, &masks, &idx)
}

// availableKernels lists the kernels this CPU (and OS) can run, fastest first.
func availableKernels() []kernel {
	var ks []kernel
	if cpu.X86.HasAVX512F {
		ks = append(ks, avx512Kernel)
	}
	if cpu.X86.HasAVX2 && cpu.X86.HasFMA {
		ks = append(ks, avx2Kernel)
	}
	return append(ks, goKernel)
}

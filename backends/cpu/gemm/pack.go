package gemm

// A panel packer fills kc rows of a packed panel, each panelW floats wide:
// row p takes w values from src and is zero past w. copyPanel reads row p from
// src[p*ld : p*ld+w]; gatherPanel reads element i of row p from src[i*ld+p].
type panelPacker func(dst, src []float32, ld, kc, panelW, w int)

// copyPanelGo is the portable copyPanel.
func copyPanelGo(dst, src []float32, ld, kc, panelW, w int) {
	for p := 0; p < kc; p++ {
		out := dst[p*panelW : p*panelW+panelW]
		copy(out, src[p*ld:p*ld+w])
		clear(out[w:])
	}
}

// gatherPanelGo is the portable gatherPanel: it walks each source row contiguously and
// scatters it down a panel column.
func gatherPanelGo(dst, src []float32, ld, kc, panelW, w int) {
	dst = dst[:kc*panelW]
	for i := 0; i < w; i++ {
		row := src[i*ld : i*ld+kc]
		for p, v := range row {
			dst[p*panelW+i] = v
		}
	}
	for i := w; i < panelW; i++ {
		for p := 0; p < kc; p++ {
			dst[p*panelW+i] = 0
		}
	}
}

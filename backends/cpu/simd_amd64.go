//go:build amd64 && !purego

package cpu

import "golang.org/x/sys/cpu"

// useAVX2 selects the assembly loops in simd_amd64.s; set once at start-up.
var useAVX2 = cpu.X86.HasAVX2 && cpu.X86.HasFMA

//go:noescape
func expShiftSumAVX2(dst, src *float32, n int, shift float32) float32

//go:noescape
func geluFwdAVX2(out, in *float32, n int)

//go:noescape
func geluBwdAVX2(din, dout, in *float32, n int)

//go:noescape
func maxAVX2(x *float32, n int) float32

//go:noescape
func scaleAVX2(x *float32, n int, f float32)

//go:noescape
func addAVX2(dst, src *float32, n int)

//go:noescape
func adamwAVX2(param, grad, m, v *float32, n int, c *adamConsts)

//go:noescape
func sumSquaresAVX2(x *float32, n int) float64

//go:noescape
func indexAVX2(x *float32, n int, v float32) int

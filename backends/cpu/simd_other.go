//go:build !amd64 || purego

package cpu

// Without the amd64 assembly every wrapper in fastmath.go takes its Go loop.
const useAVX2 = false

func expShiftSumAVX2(dst, src *float32, n int, shift float32) float32 { panic("no asm") }
func geluFwdAVX2(out, in *float32, n int)                             { panic("no asm") }
func geluBwdAVX2(din, dout, in *float32, n int)                       { panic("no asm") }
func maxAVX2(x *float32, n int) float32                               { panic("no asm") }
func scaleAVX2(x *float32, n int, f float32)                          { panic("no asm") }
func addAVX2(dst, src *float32, n int)                                { panic("no asm") }
func adamwAVX2(param, grad, m, v *float32, n int, c *adamConsts)      { panic("no asm") }
func sumSquaresAVX2(x *float32, n int) float64                        { panic("no asm") }
func indexAVX2(x *float32, n int, v float32) int                      { panic("no asm") }

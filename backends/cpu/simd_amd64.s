//go:build amd64 && !purego

#include "textflag.h"

// AVX2+FMA loops for the elementwise hot spots (see simd_amd64.go). Each processes n
// elements, n a multiple of 8; the Go wrappers do the tails. Constants are 8-lane vectors so
// they can be memory operands (VEX encodings cannot broadcast from memory).

DATA log2e<>+0(SB)/4, $0x3fb8aa3b
DATA log2e<>+4(SB)/4, $0x3fb8aa3b
DATA log2e<>+8(SB)/4, $0x3fb8aa3b
DATA log2e<>+12(SB)/4, $0x3fb8aa3b
DATA log2e<>+16(SB)/4, $0x3fb8aa3b
DATA log2e<>+20(SB)/4, $0x3fb8aa3b
DATA log2e<>+24(SB)/4, $0x3fb8aa3b
DATA log2e<>+28(SB)/4, $0x3fb8aa3b
GLOBL log2e<>(SB), RODATA|NOPTR, $32

DATA ln2hi<>+0(SB)/4, $0x3f318000
DATA ln2hi<>+4(SB)/4, $0x3f318000
DATA ln2hi<>+8(SB)/4, $0x3f318000
DATA ln2hi<>+12(SB)/4, $0x3f318000
DATA ln2hi<>+16(SB)/4, $0x3f318000
DATA ln2hi<>+20(SB)/4, $0x3f318000
DATA ln2hi<>+24(SB)/4, $0x3f318000
DATA ln2hi<>+28(SB)/4, $0x3f318000
GLOBL ln2hi<>(SB), RODATA|NOPTR, $32

DATA ln2lo<>+0(SB)/4, $0xb95e8083
DATA ln2lo<>+4(SB)/4, $0xb95e8083
DATA ln2lo<>+8(SB)/4, $0xb95e8083
DATA ln2lo<>+12(SB)/4, $0xb95e8083
DATA ln2lo<>+16(SB)/4, $0xb95e8083
DATA ln2lo<>+20(SB)/4, $0xb95e8083
DATA ln2lo<>+24(SB)/4, $0xb95e8083
DATA ln2lo<>+28(SB)/4, $0xb95e8083
GLOBL ln2lo<>(SB), RODATA|NOPTR, $32

DATA expmax<>+0(SB)/4, $0x42b00000
DATA expmax<>+4(SB)/4, $0x42b00000
DATA expmax<>+8(SB)/4, $0x42b00000
DATA expmax<>+12(SB)/4, $0x42b00000
DATA expmax<>+16(SB)/4, $0x42b00000
DATA expmax<>+20(SB)/4, $0x42b00000
DATA expmax<>+24(SB)/4, $0x42b00000
DATA expmax<>+28(SB)/4, $0x42b00000
GLOBL expmax<>(SB), RODATA|NOPTR, $32

DATA expmin<>+0(SB)/4, $0xc2ae0000
DATA expmin<>+4(SB)/4, $0xc2ae0000
DATA expmin<>+8(SB)/4, $0xc2ae0000
DATA expmin<>+12(SB)/4, $0xc2ae0000
DATA expmin<>+16(SB)/4, $0xc2ae0000
DATA expmin<>+20(SB)/4, $0xc2ae0000
DATA expmin<>+24(SB)/4, $0xc2ae0000
DATA expmin<>+28(SB)/4, $0xc2ae0000
GLOBL expmin<>(SB), RODATA|NOPTR, $32

DATA c6<>+0(SB)/4, $0x3ab60b61
DATA c6<>+4(SB)/4, $0x3ab60b61
DATA c6<>+8(SB)/4, $0x3ab60b61
DATA c6<>+12(SB)/4, $0x3ab60b61
DATA c6<>+16(SB)/4, $0x3ab60b61
DATA c6<>+20(SB)/4, $0x3ab60b61
DATA c6<>+24(SB)/4, $0x3ab60b61
DATA c6<>+28(SB)/4, $0x3ab60b61
GLOBL c6<>(SB), RODATA|NOPTR, $32

DATA c5<>+0(SB)/4, $0x3c088889
DATA c5<>+4(SB)/4, $0x3c088889
DATA c5<>+8(SB)/4, $0x3c088889
DATA c5<>+12(SB)/4, $0x3c088889
DATA c5<>+16(SB)/4, $0x3c088889
DATA c5<>+20(SB)/4, $0x3c088889
DATA c5<>+24(SB)/4, $0x3c088889
DATA c5<>+28(SB)/4, $0x3c088889
GLOBL c5<>(SB), RODATA|NOPTR, $32

DATA c4<>+0(SB)/4, $0x3d2aaaab
DATA c4<>+4(SB)/4, $0x3d2aaaab
DATA c4<>+8(SB)/4, $0x3d2aaaab
DATA c4<>+12(SB)/4, $0x3d2aaaab
DATA c4<>+16(SB)/4, $0x3d2aaaab
DATA c4<>+20(SB)/4, $0x3d2aaaab
DATA c4<>+24(SB)/4, $0x3d2aaaab
DATA c4<>+28(SB)/4, $0x3d2aaaab
GLOBL c4<>(SB), RODATA|NOPTR, $32

DATA c3<>+0(SB)/4, $0x3e2aaaab
DATA c3<>+4(SB)/4, $0x3e2aaaab
DATA c3<>+8(SB)/4, $0x3e2aaaab
DATA c3<>+12(SB)/4, $0x3e2aaaab
DATA c3<>+16(SB)/4, $0x3e2aaaab
DATA c3<>+20(SB)/4, $0x3e2aaaab
DATA c3<>+24(SB)/4, $0x3e2aaaab
DATA c3<>+28(SB)/4, $0x3e2aaaab
GLOBL c3<>(SB), RODATA|NOPTR, $32

DATA half<>+0(SB)/4, $0x3f000000
DATA half<>+4(SB)/4, $0x3f000000
DATA half<>+8(SB)/4, $0x3f000000
DATA half<>+12(SB)/4, $0x3f000000
DATA half<>+16(SB)/4, $0x3f000000
DATA half<>+20(SB)/4, $0x3f000000
DATA half<>+24(SB)/4, $0x3f000000
DATA half<>+28(SB)/4, $0x3f000000
GLOBL half<>(SB), RODATA|NOPTR, $32

DATA one<>+0(SB)/4, $0x3f800000
DATA one<>+4(SB)/4, $0x3f800000
DATA one<>+8(SB)/4, $0x3f800000
DATA one<>+12(SB)/4, $0x3f800000
DATA one<>+16(SB)/4, $0x3f800000
DATA one<>+20(SB)/4, $0x3f800000
DATA one<>+24(SB)/4, $0x3f800000
DATA one<>+28(SB)/4, $0x3f800000
GLOBL one<>(SB), RODATA|NOPTR, $32

DATA bias127<>+0(SB)/4, $0x0000007f
DATA bias127<>+4(SB)/4, $0x0000007f
DATA bias127<>+8(SB)/4, $0x0000007f
DATA bias127<>+12(SB)/4, $0x0000007f
DATA bias127<>+16(SB)/4, $0x0000007f
DATA bias127<>+20(SB)/4, $0x0000007f
DATA bias127<>+24(SB)/4, $0x0000007f
DATA bias127<>+28(SB)/4, $0x0000007f
GLOBL bias127<>(SB), RODATA|NOPTR, $32

DATA erfp<>+0(SB)/4, $0x3ea7ba05
DATA erfp<>+4(SB)/4, $0x3ea7ba05
DATA erfp<>+8(SB)/4, $0x3ea7ba05
DATA erfp<>+12(SB)/4, $0x3ea7ba05
DATA erfp<>+16(SB)/4, $0x3ea7ba05
DATA erfp<>+20(SB)/4, $0x3ea7ba05
DATA erfp<>+24(SB)/4, $0x3ea7ba05
DATA erfp<>+28(SB)/4, $0x3ea7ba05
GLOBL erfp<>(SB), RODATA|NOPTR, $32

DATA a1<>+0(SB)/4, $0x3e827906
DATA a1<>+4(SB)/4, $0x3e827906
DATA a1<>+8(SB)/4, $0x3e827906
DATA a1<>+12(SB)/4, $0x3e827906
DATA a1<>+16(SB)/4, $0x3e827906
DATA a1<>+20(SB)/4, $0x3e827906
DATA a1<>+24(SB)/4, $0x3e827906
DATA a1<>+28(SB)/4, $0x3e827906
GLOBL a1<>(SB), RODATA|NOPTR, $32

DATA a2<>+0(SB)/4, $0xbe91a98e
DATA a2<>+4(SB)/4, $0xbe91a98e
DATA a2<>+8(SB)/4, $0xbe91a98e
DATA a2<>+12(SB)/4, $0xbe91a98e
DATA a2<>+16(SB)/4, $0xbe91a98e
DATA a2<>+20(SB)/4, $0xbe91a98e
DATA a2<>+24(SB)/4, $0xbe91a98e
DATA a2<>+28(SB)/4, $0xbe91a98e
GLOBL a2<>(SB), RODATA|NOPTR, $32

DATA a3<>+0(SB)/4, $0x3fb5f0e3
DATA a3<>+4(SB)/4, $0x3fb5f0e3
DATA a3<>+8(SB)/4, $0x3fb5f0e3
DATA a3<>+12(SB)/4, $0x3fb5f0e3
DATA a3<>+16(SB)/4, $0x3fb5f0e3
DATA a3<>+20(SB)/4, $0x3fb5f0e3
DATA a3<>+24(SB)/4, $0x3fb5f0e3
DATA a3<>+28(SB)/4, $0x3fb5f0e3
GLOBL a3<>(SB), RODATA|NOPTR, $32

DATA a4<>+0(SB)/4, $0xbfba00e3
DATA a4<>+4(SB)/4, $0xbfba00e3
DATA a4<>+8(SB)/4, $0xbfba00e3
DATA a4<>+12(SB)/4, $0xbfba00e3
DATA a4<>+16(SB)/4, $0xbfba00e3
DATA a4<>+20(SB)/4, $0xbfba00e3
DATA a4<>+24(SB)/4, $0xbfba00e3
DATA a4<>+28(SB)/4, $0xbfba00e3
GLOBL a4<>(SB), RODATA|NOPTR, $32

DATA a5<>+0(SB)/4, $0x3f87dc22
DATA a5<>+4(SB)/4, $0x3f87dc22
DATA a5<>+8(SB)/4, $0x3f87dc22
DATA a5<>+12(SB)/4, $0x3f87dc22
DATA a5<>+16(SB)/4, $0x3f87dc22
DATA a5<>+20(SB)/4, $0x3f87dc22
DATA a5<>+24(SB)/4, $0x3f87dc22
DATA a5<>+28(SB)/4, $0x3f87dc22
GLOBL a5<>(SB), RODATA|NOPTR, $32

DATA isq2<>+0(SB)/4, $0x3f3504f3
DATA isq2<>+4(SB)/4, $0x3f3504f3
DATA isq2<>+8(SB)/4, $0x3f3504f3
DATA isq2<>+12(SB)/4, $0x3f3504f3
DATA isq2<>+16(SB)/4, $0x3f3504f3
DATA isq2<>+20(SB)/4, $0x3f3504f3
DATA isq2<>+24(SB)/4, $0x3f3504f3
DATA isq2<>+28(SB)/4, $0x3f3504f3
GLOBL isq2<>(SB), RODATA|NOPTR, $32

DATA isq2pi<>+0(SB)/4, $0x3ecc422a
DATA isq2pi<>+4(SB)/4, $0x3ecc422a
DATA isq2pi<>+8(SB)/4, $0x3ecc422a
DATA isq2pi<>+12(SB)/4, $0x3ecc422a
DATA isq2pi<>+16(SB)/4, $0x3ecc422a
DATA isq2pi<>+20(SB)/4, $0x3ecc422a
DATA isq2pi<>+24(SB)/4, $0x3ecc422a
DATA isq2pi<>+28(SB)/4, $0x3ecc422a
GLOBL isq2pi<>(SB), RODATA|NOPTR, $32

DATA mhalf<>+0(SB)/4, $0xbf000000
DATA mhalf<>+4(SB)/4, $0xbf000000
DATA mhalf<>+8(SB)/4, $0xbf000000
DATA mhalf<>+12(SB)/4, $0xbf000000
DATA mhalf<>+16(SB)/4, $0xbf000000
DATA mhalf<>+20(SB)/4, $0xbf000000
DATA mhalf<>+24(SB)/4, $0xbf000000
DATA mhalf<>+28(SB)/4, $0xbf000000
GLOBL mhalf<>(SB), RODATA|NOPTR, $32

DATA absmask<>+0(SB)/4, $0x7fffffff
DATA absmask<>+4(SB)/4, $0x7fffffff
DATA absmask<>+8(SB)/4, $0x7fffffff
DATA absmask<>+12(SB)/4, $0x7fffffff
DATA absmask<>+16(SB)/4, $0x7fffffff
DATA absmask<>+20(SB)/4, $0x7fffffff
DATA absmask<>+24(SB)/4, $0x7fffffff
DATA absmask<>+28(SB)/4, $0x7fffffff
GLOBL absmask<>(SB), RODATA|NOPTR, $32

DATA signmask<>+0(SB)/4, $0x80000000
DATA signmask<>+4(SB)/4, $0x80000000
DATA signmask<>+8(SB)/4, $0x80000000
DATA signmask<>+12(SB)/4, $0x80000000
DATA signmask<>+16(SB)/4, $0x80000000
DATA signmask<>+20(SB)/4, $0x80000000
DATA signmask<>+24(SB)/4, $0x80000000
DATA signmask<>+28(SB)/4, $0x80000000
GLOBL signmask<>(SB), RODATA|NOPTR, $32


// EXP(x, k, p): x ← e^x the way exp32 computes it: clamp to [−87, 88], x = k·ln2 + r,
// e^r by the degree-6 Taylor polynomial, times 2^k built in the exponent bits. k, p: scratch.
#define EXP(x, k, p) \
	VMAXPS       expmin<>(SB), x, x; \
	VMINPS       expmax<>(SB), x, x; \
	VMULPS       log2e<>(SB), x, k; \
	VROUNDPS     $0, k, k; \
	VFNMADD231PS ln2hi<>(SB), k, x; \
	VFNMADD231PS ln2lo<>(SB), k, x; \
	VCVTPS2DQ    k, k; \
	VPADDD       bias127<>(SB), k, k; \
	VPSLLD       $23, k, k; \
	VMOVUPS      c6<>(SB), p; \
	VFMADD213PS  c5<>(SB), x, p; \
	VFMADD213PS  c4<>(SB), x, p; \
	VFMADD213PS  c3<>(SB), x, p; \
	VFMADD213PS  half<>(SB), x, p; \
	VFMADD213PS  one<>(SB), x, p; \
	VFMADD213PS  one<>(SB), x, p; \
	VMULPS       k, p, x

// CDF(x, e, c, t): c ← Φ(x) = ½(1+erf(x/√2)) given e = exp(−x²/2) (erfFromExp's formula).
#define CDF(x, e, c, t) \
	VANDPS      absmask<>(SB), x, c; \
	VMULPS      isq2<>(SB), c, c; \
	VMULPS      erfp<>(SB), c, c; \
	VADDPS      one<>(SB), c, c; \
	VMOVUPS     one<>(SB), t; \
	VDIVPS      c, t, c; \
	VMOVUPS     a5<>(SB), t; \
	VFMADD213PS a4<>(SB), c, t; \
	VFMADD213PS a3<>(SB), c, t; \
	VFMADD213PS a2<>(SB), c, t; \
	VFMADD213PS a1<>(SB), c, t; \
	VMULPS      c, t, t; \
	VMULPS      e, t, t; \
	VMOVUPS     one<>(SB), c; \
	VSUBPS      t, c, c; \
	VANDPS      signmask<>(SB), x, t; \
	VXORPS      t, c, c; \
	VADDPS      one<>(SB), c, c; \
	VMULPS      half<>(SB), c, c

// func expShiftSumAVX2(dst, src *float32, n int, shift float32) float32
// dst[i] = e^(src[i]−shift) (dst may be src; nil: only sum); returns Σ.
TEXT ·expShiftSumAVX2(SB), NOSPLIT, $0-36
	MOVQ         dst+0(FP), DI
	MOVQ         src+8(FP), SI
	MOVQ         n+16(FP), CX
	VBROADCASTSS shift+24(FP), Y5
	VXORPS       Y0, Y0, Y0
	VXORPS       Y4, Y4, Y4
	TESTQ        DI, DI
	JZ           sumonly

store:
	CMPQ    CX, $8
	JL      done
	VMOVUPS (SI), Y1
	VSUBPS  Y5, Y1, Y1
	EXP(Y1, Y2, Y3)
	VADDPS  Y1, Y0, Y0
	VMOVUPS Y1, (DI)
	ADDQ    $32, SI
	ADDQ    $32, DI
	SUBQ    $8, CX
	JMP     store

sumonly:
	CMPQ    CX, $8
	JL      done
	VMOVUPS (SI), Y1
	VSUBPS  Y5, Y1, Y1
	EXP(Y1, Y2, Y3)
	VADDPS  Y1, Y0, Y0
	ADDQ    $32, SI
	SUBQ    $8, CX
	JMP     sumonly

done:
	VEXTRACTF128 $1, Y0, X1
	VADDPS       X1, X0, X0
	VHADDPS      X0, X0, X0
	VHADDPS      X0, X0, X0
	VZEROUPPER
	MOVSS        X0, ret+32(FP)
	RET

// func geluFwdAVX2(out, in *float32, n int)
TEXT ·geluFwdAVX2(SB), NOSPLIT, $0-24
	MOVQ out+0(FP), DI
	MOVQ in+8(FP), SI
	MOVQ n+16(FP), CX

gfloop:
	CMPQ    CX, $8
	JL      gfdone
	VMOVUPS (SI), Y1
	VMULPS  Y1, Y1, Y2
	VMULPS  mhalf<>(SB), Y2, Y2
	EXP(Y2, Y3, Y4)
	CDF(Y1, Y2, Y3, Y4)
	VMULPS  Y1, Y3, Y3
	VMOVUPS Y3, (DI)
	ADDQ    $32, SI
	ADDQ    $32, DI
	SUBQ    $8, CX
	JMP     gfloop

gfdone:
	VZEROUPPER
	RET

// func geluBwdAVX2(din, dout, in *float32, n int)
// din = dout·(Φ(x) + x·φ(x))
TEXT ·geluBwdAVX2(SB), NOSPLIT, $0-32
	MOVQ din+0(FP), DI
	MOVQ dout+8(FP), DX
	MOVQ in+16(FP), SI
	MOVQ n+24(FP), CX

gbloop:
	CMPQ    CX, $8
	JL      gbdone
	VMOVUPS (SI), Y1
	VMULPS  Y1, Y1, Y2
	VMULPS  mhalf<>(SB), Y2, Y2
	EXP(Y2, Y3, Y4)
	CDF(Y1, Y2, Y3, Y4)
	VMULPS  Y1, Y2, Y2
	VMULPS  isq2pi<>(SB), Y2, Y2
	VADDPS  Y3, Y2, Y2
	VMULPS  (DX), Y2, Y2
	VMOVUPS Y2, (DI)
	ADDQ    $32, SI
	ADDQ    $32, DI
	ADDQ    $32, DX
	SUBQ    $8, CX
	JMP     gbloop

gbdone:
	VZEROUPPER
	RET

// func maxAVX2(x *float32, n int) float32 (n ≥ 8)
TEXT ·maxAVX2(SB), NOSPLIT, $0-20
	MOVQ    x+0(FP), SI
	MOVQ    n+8(FP), CX
	VMOVUPS (SI), Y0
	ADDQ    $32, SI
	SUBQ    $8, CX

mxloop:
	CMPQ   CX, $8
	JL     mxdone
	VMAXPS (SI), Y0, Y0
	ADDQ   $32, SI
	SUBQ   $8, CX
	JMP    mxloop

mxdone:
	VEXTRACTF128 $1, Y0, X1
	VMAXPS       X1, X0, X0
	VMOVHLPS     X0, X0, X1
	VMAXPS       X1, X0, X0
	VPSHUFD      $1, X0, X1
	VMAXPS       X1, X0, X0
	VZEROUPPER
	MOVSS        X0, ret+16(FP)
	RET

// func scaleAVX2(x *float32, n int, f float32): x[i] *= f
TEXT ·scaleAVX2(SB), NOSPLIT, $0-20
	MOVQ         x+0(FP), SI
	MOVQ         n+8(FP), CX
	VBROADCASTSS f+16(FP), Y1

scloop:
	CMPQ    CX, $8
	JL      scdone
	VMULPS  (SI), Y1, Y0
	VMOVUPS Y0, (SI)
	ADDQ    $32, SI
	SUBQ    $8, CX
	JMP     scloop

scdone:
	VZEROUPPER
	RET

// func addAVX2(dst, src *float32, n int): dst[i] += src[i]
TEXT ·addAVX2(SB), NOSPLIT, $0-24
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ n+16(FP), CX

adloop:
	CMPQ    CX, $8
	JL      addone
	VMOVUPS (DI), Y0
	VADDPS  (SI), Y0, Y0
	VMOVUPS Y0, (DI)
	ADDQ    $32, SI
	ADDQ    $32, DI
	SUBQ    $8, CX
	JMP     adloop

addone:
	VZEROUPPER
	RET

// func adamwAVX2(param, grad, m, v *float32, n int, c *adamConsts)
// One AdamW step as adamwGo computes it (see adamw.go), zeroing g.
TEXT ·adamwAVX2(SB), NOSPLIT, $0-48
	MOVQ         param+0(FP), AX
	MOVQ         grad+8(FP), BX
	MOVQ         m+16(FP), CX
	MOVQ         v+24(FP), DX
	MOVQ         n+32(FP), SI
	MOVQ         c+40(FP), R8
	VBROADCASTSS 0(R8), Y8   // gscale
	VBROADCASTSS 4(R8), Y9   // b1
	VBROADCASTSS 8(R8), Y10  // 1−b1
	VBROADCASTSS 12(R8), Y11 // b2
	VBROADCASTSS 16(R8), Y12 // 1−b2
	VBROADCASTSS 20(R8), Y13 // √bc2
	VBROADCASTSS 24(R8), Y14 // eps
	VBROADCASTSS 28(R8), Y15 // decay
	VBROADCASTSS 32(R8), Y7  // step size
	VXORPS       Y5, Y5, Y5

awloop:
	CMPQ        SI, $8
	JL          awdone
	VMULPS      (BX), Y8, Y0
	VMULPS      Y0, Y10, Y6
	VMULPS      (CX), Y9, Y1
	VADDPS      Y6, Y1, Y1
	VMOVUPS     Y1, (CX)
	VMULPS      Y0, Y12, Y2
	VMULPS      Y0, Y2, Y2
	VMULPS      (DX), Y11, Y6
	VADDPS      Y2, Y6, Y2
	VMOVUPS     Y2, (DX)
	VSQRTPS     Y2, Y3
	VDIVPS      Y13, Y3, Y3
	VADDPS      Y14, Y3, Y3
	VMULPS      Y7, Y1, Y1
	VDIVPS      Y3, Y1, Y1
	VMULPS      (AX), Y15, Y4
	VSUBPS      Y1, Y4, Y4
	VMOVUPS     Y4, (AX)
	VMOVUPS     Y5, (BX)
	ADDQ        $32, AX
	ADDQ        $32, BX
	ADDQ        $32, CX
	ADDQ        $32, DX
	SUBQ        $8, SI
	JMP         awloop

awdone:
	VZEROUPPER
	RET

// func sumSquaresAVX2(x *float32, n int) float64: Σ x[i]², accumulated in float64.
TEXT ·sumSquaresAVX2(SB), NOSPLIT, $0-24
	MOVQ   x+0(FP), SI
	MOVQ   n+8(FP), CX
	VXORPD Y0, Y0, Y0
	VXORPD Y1, Y1, Y1

ssloop:
	CMPQ        CX, $8
	JL          ssdone
	VCVTPS2PD   (SI), Y2
	VCVTPS2PD   16(SI), Y3
	VFMADD231PD Y2, Y2, Y0
	VFMADD231PD Y3, Y3, Y1
	ADDQ        $32, SI
	SUBQ        $8, CX
	JMP         ssloop

ssdone:
	VADDPD       Y1, Y0, Y0
	VEXTRACTF128 $1, Y0, X1
	VADDPD       X1, X0, X0
	VHADDPD      X0, X0, X0
	VZEROUPPER
	MOVSD        X0, ret+16(FP)
	RET

// func indexAVX2(x *float32, n int, v float32) int: the first i with x[i] == v, or n.
TEXT ·indexAVX2(SB), NOSPLIT, $0-32
	MOVQ         x+0(FP), SI
	MOVQ         n+8(FP), CX
	VBROADCASTSS v+16(FP), Y1
	XORQ         AX, AX

ixloop:
	CMPQ      AX, CX
	JGE       ixnone
	VCMPPS    $0, (SI)(AX*4), Y1, Y2
	VMOVMSKPS Y2, DX
	TESTL     DX, DX
	JNZ       ixfound
	ADDQ      $8, AX
	JMP       ixloop

ixfound:
	BSFL DX, DX
	ADDQ DX, AX
	VZEROUPPER
	MOVQ AX, ret+24(FP)
	RET

ixnone:
	VZEROUPPER
	MOVQ CX, ret+24(FP)
	RET

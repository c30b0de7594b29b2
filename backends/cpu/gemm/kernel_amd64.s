//go:build !purego

#include "textflag.h"

// Micro-kernels: acc = Σ_p a[p·MR+i]·b[p·NR+j] over k steps of packed panels, then
// C[i,j] = alpha·acc + beta·C[i,j] (C is not read when beta is ±0).
// Each step loads one NR-wide row of B into registers and broadcasts the MR values of A.

// ---------------------------------------------------------------------------------------------
// AVX-512: 14×32 tile. Accumulators Z0..Z27 (row i in Z(2i), Z(2i+1)); B row in Z28,Z29;
// broadcast A value in Z30. A advances 14·4 = 56 bytes per step, B 32·4 = 128 bytes.

#define ROW512(aoff, r0, r1) VBROADCASTSS aoff(AX), Z30; VFMADD231PS Z28, Z30, r0; VFMADD231PS Z29, Z30, r1

#define STEP512(aoff, boff) \
	VMOVUPS boff(BX), Z28; \
	VMOVUPS boff+64(BX), Z29; \
	ROW512(aoff+0, Z0, Z1); \
	ROW512(aoff+4, Z2, Z3); \
	ROW512(aoff+8, Z4, Z5); \
	ROW512(aoff+12, Z6, Z7); \
	ROW512(aoff+16, Z8, Z9); \
	ROW512(aoff+20, Z10, Z11); \
	ROW512(aoff+24, Z12, Z13); \
	ROW512(aoff+28, Z14, Z15); \
	ROW512(aoff+32, Z16, Z17); \
	ROW512(aoff+36, Z18, Z19); \
	ROW512(aoff+40, Z20, Z21); \
	ROW512(aoff+44, Z22, Z23); \
	ROW512(aoff+48, Z24, Z25); \
	ROW512(aoff+52, Z26, Z27)

// Z30 = alpha, Z31 = beta, DI = C row, DX = ldc in bytes.
#define SET512(r0, r1) VMULPS Z30, r0, r0; VMULPS Z30, r1, r1; VMOVUPS r0, (DI); VMOVUPS r1, 64(DI); ADDQ DX, DI
#define ACC512(r0, r1) VMULPS Z30, r0, r0; VMULPS Z30, r1, r1; VFMADD231PS (DI), Z31, r0; VFMADD231PS 64(DI), Z31, r1; VMOVUPS r0, (DI); VMOVUPS r1, 64(DI); ADDQ DX, DI

// func kernel14x32(k int, a, b, c *float32, ldc int, alpha, beta float32)
TEXT ·kernel14x32(SB), NOSPLIT, $0-48
	MOVQ k+0(FP), CX
	MOVQ a+8(FP), AX
	MOVQ b+16(FP), BX
	MOVQ c+24(FP), DI
	MOVQ ldc+32(FP), DX
	SHLQ $2, DX

	VPXORD Z0, Z0, Z0
	VPXORD Z1, Z1, Z1
	VPXORD Z2, Z2, Z2
	VPXORD Z3, Z3, Z3
	VPXORD Z4, Z4, Z4
	VPXORD Z5, Z5, Z5
	VPXORD Z6, Z6, Z6
	VPXORD Z7, Z7, Z7
	VPXORD Z8, Z8, Z8
	VPXORD Z9, Z9, Z9
	VPXORD Z10, Z10, Z10
	VPXORD Z11, Z11, Z11
	VPXORD Z12, Z12, Z12
	VPXORD Z13, Z13, Z13
	VPXORD Z14, Z14, Z14
	VPXORD Z15, Z15, Z15
	VPXORD Z16, Z16, Z16
	VPXORD Z17, Z17, Z17
	VPXORD Z18, Z18, Z18
	VPXORD Z19, Z19, Z19
	VPXORD Z20, Z20, Z20
	VPXORD Z21, Z21, Z21
	VPXORD Z22, Z22, Z22
	VPXORD Z23, Z23, Z23
	VPXORD Z24, Z24, Z24
	VPXORD Z25, Z25, Z25
	VPXORD Z26, Z26, Z26
	VPXORD Z27, Z27, Z27

loop4_512:
	CMPQ CX, $4
	JLT  tail_512
	STEP512(0, 0)
	STEP512(56, 128)
	STEP512(112, 256)
	STEP512(168, 384)
	ADDQ $224, AX
	ADDQ $512, BX
	SUBQ $4, CX
	JMP  loop4_512

tail_512:
	TESTQ CX, CX
	JEQ   store_512
	STEP512(0, 0)
	ADDQ  $56, AX
	ADDQ  $128, BX
	DECQ  CX
	JMP   tail_512

store_512:
	VBROADCASTSS alpha+40(FP), Z30
	MOVL         beta+44(FP), R8
	SHLL         $1, R8 // drop the sign bit: -0 counts as 0
	JEQ          set_512
	VBROADCASTSS beta+44(FP), Z31
	ACC512(Z0, Z1)
	ACC512(Z2, Z3)
	ACC512(Z4, Z5)
	ACC512(Z6, Z7)
	ACC512(Z8, Z9)
	ACC512(Z10, Z11)
	ACC512(Z12, Z13)
	ACC512(Z14, Z15)
	ACC512(Z16, Z17)
	ACC512(Z18, Z19)
	ACC512(Z20, Z21)
	ACC512(Z22, Z23)
	ACC512(Z24, Z25)
	ACC512(Z26, Z27)
	VZEROUPPER
	RET

set_512:
	SET512(Z0, Z1)
	SET512(Z2, Z3)
	SET512(Z4, Z5)
	SET512(Z6, Z7)
	SET512(Z8, Z9)
	SET512(Z10, Z11)
	SET512(Z12, Z13)
	SET512(Z14, Z15)
	SET512(Z16, Z17)
	SET512(Z18, Z19)
	SET512(Z20, Z21)
	SET512(Z22, Z23)
	SET512(Z24, Z25)
	SET512(Z26, Z27)
	VZEROUPPER
	RET

// ---------------------------------------------------------------------------------------------
// AVX2 + FMA: 6×16 tile. Accumulators Y0..Y11; B row in Y12,Y13; broadcast A in Y14.
// A advances 6·4 = 24 bytes per step, B 16·4 = 64 bytes.

#define ROW256(aoff, r0, r1) VBROADCASTSS aoff(AX), Y14; VFMADD231PS Y12, Y14, r0; VFMADD231PS Y13, Y14, r1

#define STEP256(aoff, boff) \
	VMOVUPS boff(BX), Y12; \
	VMOVUPS boff+32(BX), Y13; \
	ROW256(aoff+0, Y0, Y1); \
	ROW256(aoff+4, Y2, Y3); \
	ROW256(aoff+8, Y4, Y5); \
	ROW256(aoff+12, Y6, Y7); \
	ROW256(aoff+16, Y8, Y9); \
	ROW256(aoff+20, Y10, Y11)

// Y14 = alpha, Y15 = beta, DI = C row, DX = ldc in bytes.
#define SET256(r0, r1) VMULPS Y14, r0, r0; VMULPS Y14, r1, r1; VMOVUPS r0, (DI); VMOVUPS r1, 32(DI); ADDQ DX, DI
#define ACC256(r0, r1) VMULPS Y14, r0, r0; VMULPS Y14, r1, r1; VFMADD231PS (DI), Y15, r0; VFMADD231PS 32(DI), Y15, r1; VMOVUPS r0, (DI); VMOVUPS r1, 32(DI); ADDQ DX, DI

// func kernel6x16(k int, a, b, c *float32, ldc int, alpha, beta float32)
TEXT ·kernel6x16(SB), NOSPLIT, $0-48
	MOVQ k+0(FP), CX
	MOVQ a+8(FP), AX
	MOVQ b+16(FP), BX
	MOVQ c+24(FP), DI
	MOVQ ldc+32(FP), DX
	SHLQ $2, DX

	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	VXORPS Y2, Y2, Y2
	VXORPS Y3, Y3, Y3
	VXORPS Y4, Y4, Y4
	VXORPS Y5, Y5, Y5
	VXORPS Y6, Y6, Y6
	VXORPS Y7, Y7, Y7
	VXORPS Y8, Y8, Y8
	VXORPS Y9, Y9, Y9
	VXORPS Y10, Y10, Y10
	VXORPS Y11, Y11, Y11

loop4_256:
	CMPQ CX, $4
	JLT  tail_256
	STEP256(0, 0)
	STEP256(24, 64)
	STEP256(48, 128)
	STEP256(72, 192)
	ADDQ $96, AX
	ADDQ $256, BX
	SUBQ $4, CX
	JMP  loop4_256

tail_256:
	TESTQ CX, CX
	JEQ   store_256
	STEP256(0, 0)
	ADDQ  $24, AX
	ADDQ  $64, BX
	DECQ  CX
	JMP   tail_256

store_256:
	VBROADCASTSS alpha+40(FP), Y14
	MOVL         beta+44(FP), R8
	SHLL         $1, R8
	JEQ          set_256
	VBROADCASTSS beta+44(FP), Y15
	ACC256(Y0, Y1)
	ACC256(Y2, Y3)
	ACC256(Y4, Y5)
	ACC256(Y6, Y7)
	ACC256(Y8, Y9)
	ACC256(Y10, Y11)
	VZEROUPPER
	RET

set_256:
	SET256(Y0, Y1)
	SET256(Y2, Y3)
	SET256(Y4, Y5)
	SET256(Y6, Y7)
	SET256(Y8, Y9)
	SET256(Y10, Y11)
	VZEROUPPER
	RET

// ---------------------------------------------------------------------------------------------
// Packing with AVX-512 masked moves. A panel row is up to 32 floats in two halves; the load
// masks select the source's valid lanes and zero the rest, the store masks cover the panel
// width, so edge panels come out zero-padded.

// func copyPanel512(dst, src *float32, ld, kc int, masks *[4]uint16)
// dst[p*panelW+i] = src[p*ld+i] for p < kc.
TEXT ·copyPanel512(SB), NOSPLIT, $0-40
	MOVQ   dst+0(FP), DI
	MOVQ   src+8(FP), SI
	MOVQ   ld+16(FP), DX
	SHLQ   $2, DX
	MOVQ   kc+24(FP), CX
	MOVQ   masks+32(FP), AX
	KMOVW  0(AX), K1
	KMOVW  2(AX), K2
	KMOVW  4(AX), K3
	KMOVW  6(AX), K4
	KMOVW  K3, R9
	POPCNTL R9, R9
	KMOVW  K4, R10
	POPCNTL R10, R10
	ADDL   R10, R9
	SHLQ   $2, R9 // panel row bytes
copy_loop:
	TESTQ CX, CX
	JEQ   copy_done
	VMOVUPS.Z (SI), K1, Z0
	VMOVUPS.Z 64(SI), K2, Z1
	VMOVUPS   Z0, K3, (DI)
	VMOVUPS   Z1, K4, 64(DI)
	ADDQ  DX, SI
	ADDQ  R9, DI
	DECQ  CX
	JMP   copy_loop
copy_done:
	VZEROUPPER
	RET

// func gatherPanel512(dst, src *float32, ld, kc int, masks *[4]uint16, idx *[16]int32)
// dst[p*panelW+i] = src[i*ld+p] for p < kc; idx holds i*ld for i < 16.
TEXT ·gatherPanel512(SB), NOSPLIT, $0-48
	MOVQ   dst+0(FP), DI
	MOVQ   src+8(FP), SI
	MOVQ   ld+16(FP), R13
	SHLQ   $6, R13 // 16 rows of ld floats, in bytes
	ADDQ   SI, R13 // second half's rows
	MOVQ   kc+24(FP), CX
	MOVQ   masks+32(FP), AX
	MOVWLZX 0(AX), R11
	MOVWLZX 2(AX), R12
	KMOVW  4(AX), K3
	KMOVW  6(AX), K4
	MOVQ   idx+40(FP), BX
	VMOVDQU32 (BX), Z2
	KMOVW  K3, R9
	POPCNTL R9, R9
	KMOVW  K4, R10
	POPCNTL R10, R10
	ADDL   R10, R9
	SHLQ   $2, R9
	VPXORD Z1, Z1, Z1
	TESTQ  R12, R12
	JNE    gather2_loop
gather1_loop: // at most 16 source rows: the upper half of the panel row is zero

	TESTQ CX, CX
	JEQ   gather_done
	KMOVW R11, K1
	VPXORD Z0, Z0, Z0
	VGATHERDPS (SI)(Z2*4), K1, Z0
	VMOVUPS Z0, K3, (DI)
	VMOVUPS Z1, K4, 64(DI)
	ADDQ  $4, SI
	ADDQ  R9, DI
	DECQ  CX
	JMP   gather1_loop
gather2_loop:
	TESTQ CX, CX
	JEQ   gather_done
	KMOVW R11, K1
	KMOVW R12, K2
	VPXORD Z0, Z0, Z0
	VPXORD Z1, Z1, Z1
	VGATHERDPS (SI)(Z2*4), K1, Z0
	VGATHERDPS (R13)(Z2*4), K2, Z1
	VMOVUPS Z0, K3, (DI)
	VMOVUPS Z1, K4, 64(DI)
	ADDQ  $4, SI
	ADDQ  $4, R13
	ADDQ  R9, DI
	DECQ  CX
	JMP   gather2_loop
gather_done:
	VZEROUPPER
	RET

// func transpose16(dst, src *float32, ld, dstStride, blocks, rows int)
// For each of blocks 16-column blocks: dst[q*dstStride+r] = src[r*ld+q] for q < 16 and
// r < rows (rows is 14 or 16), by a 16×16 in-register transpose: rows in Z0..Z15,
// 2×2 interleave (unpack), 4×4 within 128-bit lanes (shufps), then two lane shuffles.
#define UNPACK(a, b, lo, hi) VUNPCKLPS b, a, lo; VUNPCKHPS b, a, hi
#define SHUF2(a, b, c0, c1) VSHUFPS $0x44, b, a, c0; VSHUFPS $0xEE, b, a, c1
#define LANES(a, b, lo, hi) VSHUFF32X4 $0x88, b, a, lo; VSHUFF32X4 $0xDD, b, a, hi
#define LOADROW(z) VMOVUPS (R10), z; ADDQ R8, R10
#define STOREROW(z) VMOVUPS z, K1, (R11); ADDQ R12, R11

TEXT ·transpose16(SB), NOSPLIT, $0-48
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ ld+16(FP), R8
	SHLQ $2, R8
	MOVQ dstStride+24(FP), R12
	SHLQ $2, R12
	MOVQ blocks+32(FP), CX
	MOVQ rows+40(FP), DX
	MOVQ $0xffff, AX
	CMPQ DX, $16
	JEQ  mask_ok
	MOVQ $0x3fff, AX
mask_ok:
	KMOVW AX, K1
	MOVQ R12, R13
	SHLQ $4, R13 // 16 dst rows

tr_loop:
	TESTQ CX, CX
	JEQ   tr_done
	MOVQ  SI, R10
	LOADROW(Z0)
	LOADROW(Z1)
	LOADROW(Z2)
	LOADROW(Z3)
	LOADROW(Z4)
	LOADROW(Z5)
	LOADROW(Z6)
	LOADROW(Z7)
	LOADROW(Z8)
	LOADROW(Z9)
	LOADROW(Z10)
	LOADROW(Z11)
	LOADROW(Z12)
	LOADROW(Z13)
	CMPQ  DX, $16
	JEQ   tr_load16
	VPXORD Z14, Z14, Z14
	VPXORD Z15, Z15, Z15
	JMP   tr_shuffle
tr_load16:
	LOADROW(Z14)
	LOADROW(Z15)
tr_shuffle:
	// t = Z16..Z31
	UNPACK(Z0, Z1, Z16, Z17)
	UNPACK(Z2, Z3, Z18, Z19)
	UNPACK(Z4, Z5, Z20, Z21)
	UNPACK(Z6, Z7, Z22, Z23)
	UNPACK(Z8, Z9, Z24, Z25)
	UNPACK(Z10, Z11, Z26, Z27)
	UNPACK(Z12, Z13, Z28, Z29)
	UNPACK(Z14, Z15, Z30, Z31)
	// u[i+c] = Z(i+c): column 4L+c of rows i..i+3 in lane L
	SHUF2(Z16, Z18, Z0, Z1)
	SHUF2(Z17, Z19, Z2, Z3)
	SHUF2(Z20, Z22, Z4, Z5)
	SHUF2(Z21, Z23, Z6, Z7)
	SHUF2(Z24, Z26, Z8, Z9)
	SHUF2(Z25, Z27, Z10, Z11)
	SHUF2(Z28, Z30, Z12, Z13)
	SHUF2(Z29, Z31, Z14, Z15)
	// v[c] = Z16+c, v[4+c] = Z20+c, v[8+c] = Z24+c, v[12+c] = Z28+c
	LANES(Z0, Z4, Z16, Z20)
	LANES(Z1, Z5, Z17, Z21)
	LANES(Z2, Z6, Z18, Z22)
	LANES(Z3, Z7, Z19, Z23)
	LANES(Z8, Z12, Z24, Z28)
	LANES(Z9, Z13, Z25, Z29)
	LANES(Z10, Z14, Z26, Z30)
	LANES(Z11, Z15, Z27, Z31)
	// column q = 4L+c: L=0,2 from (v[c], v[8+c]); L=1,3 from (v[4+c], v[12+c])
	LANES(Z16, Z24, Z0, Z8)
	LANES(Z17, Z25, Z1, Z9)
	LANES(Z18, Z26, Z2, Z10)
	LANES(Z19, Z27, Z3, Z11)
	LANES(Z20, Z28, Z4, Z12)
	LANES(Z21, Z29, Z5, Z13)
	LANES(Z22, Z30, Z6, Z14)
	LANES(Z23, Z31, Z7, Z15)
	MOVQ  DI, R11
	STOREROW(Z0)
	STOREROW(Z1)
	STOREROW(Z2)
	STOREROW(Z3)
	STOREROW(Z4)
	STOREROW(Z5)
	STOREROW(Z6)
	STOREROW(Z7)
	STOREROW(Z8)
	STOREROW(Z9)
	STOREROW(Z10)
	STOREROW(Z11)
	STOREROW(Z12)
	STOREROW(Z13)
	STOREROW(Z14)
	STOREROW(Z15)
	ADDQ  $64, SI
	ADDQ  R13, DI
	DECQ  CX
	JMP   tr_loop
tr_done:
	VZEROUPPER
	RET

// Package kernels holds the CUDA C source of the backend's kernels (kernels.cu, embedded)
// and the table of their signatures, which both devices check every launch against: the
// GPU device marshals arguments by it, the fake device (backends/cuda/device) hands them to
// the kernel's Go twin.
package kernels

import (
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
)

// Source is kernels.cu.
//
//go:embed kernels.cu
var Source string

// Hash is the hex SHA-256 of Source (part of the compiled-module cache key).
func Hash() string {
	h := sha256.Sum256([]byte(Source))
	return hex.EncodeToString(h[:])
}

// Compile-time constants of kernels.cu.
const (
	MaxHeadDim = 128 // MAXHD
	AttBQ      = 32  // ATT_BQ: queries (threads) per attention block
	AttBK      = 32  // ATT_BK: keys per tile
	NormBlock  = 256 // threads per row for norm_* and xent (a power of two ≤ 1024)
	EltBlock   = 256 // threads per block of the element-wise kernels
	SumsqGrid  = 256 // blocks of sumsq (its partial sums)
)

// Specs maps every kernel to its argument kinds, in kernels.cu's parameter order: p pointer
// (a device address, 0 = null), i int32, l int64, f float32, d float64, u uint64.
var Specs = map[string]string{
	"embed_fwd":    "pppppii",
	"neftune":      "plud",
	"embed_bwd":    "pppppi",
	"norm_fwd":     "ppppppiifi",
	"norm_bwd_dx":  "ppppppiii",
	"norm_bwd_dw":  "ppppppiii",
	"fill_rows":    "ppli",
	"col_sum_add":  "ppii",
	"cast_bf16":    "ppl",
	"residual_add": "ppluuuf",
	"mask_mul":     "ppluuuf",
	"gelu_fwd":     "ppl",
	"gelu_bwd":     "pppl",
	"swiglu_fwd":   "pppl",
	"swiglu_bwd":   "pppppl",
	"rope":         "ppppiiii",
	"attn_fwd":     "pppppp" + "iiiiiiii" + "uuuf",
	"attn_bwd_pre": "ppp" + "iiiii",
	"attn_bwd_dq":  "ppppppp" + "p" + "iiiii" + "uuuf",
	"attn_bwd_dkv": "pppppppp" + "p" + "iiiii" + "uuuf",
	"kv_append":    "pppiii",
	"xent":         "ppppp" + "ii" + "di",
	"adamw":        "ppppl" + "fffffffff",
	"sumsq":        "ppl",
}

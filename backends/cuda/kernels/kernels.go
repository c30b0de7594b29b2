// Package kernels holds the CUDA C source of the backend's kernels (kernels.cu, embedded)
// and their signatures read from it, which both devices check every launch against: the
// GPU device loads and marshals by them, the fake device (backends/cuda/device) hands the
// arguments to the kernel's Go twin.
package kernels

import (
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"fmt"
	"regexp"
	"strings"
	"sync"
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

// Signatures maps every kernel of kernels.cu to its parameters' kinds, in order, read
// from the source itself so that the table cannot drift from the kernels: p pointer (a
// device address, 0 = null), i int, l long long, f float, d double, u u64. Both devices
// check every launch against it; the GPU device also loads exactly these kernels.
var Signatures = sync.OnceValue(func() map[string]string {
	sigs, err := parseSignatures(Source)
	if err != nil {
		panic("kernels.cu: " + err.Error()) // the embedded source is fixed: a test covers it
	}
	return sigs
})

// kernelDecl matches `extern "C" __global__ void name(params)`.
var kernelDecl = regexp.MustCompile(`extern "C" __global__ void (\w+)\(([^)]*)\)`)

// parseSignatures reads the kernel declarations of a CUDA source.
func parseSignatures(src string) (map[string]string, error) {
	sigs := map[string]string{}
	for _, m := range kernelDecl.FindAllStringSubmatch(src, -1) {
		var kinds strings.Builder
		for _, param := range strings.Split(m[2], ",") {
			k, err := paramKind(strings.Fields(param))
			if err != nil {
				return nil, fmt.Errorf("kernel %s: %w", m[1], err)
			}
			kinds.WriteByte(k)
		}
		if _, dup := sigs[m[1]]; dup {
			return nil, fmt.Errorf("kernel %s declared twice", m[1])
		}
		sigs[m[1]] = kinds.String()
	}
	if len(sigs) == 0 {
		return nil, fmt.Errorf("no kernels")
	}
	return sigs, nil
}

// paramKind is the kind of one declared parameter ("const float* x", "long long n", …).
func paramKind(words []string) (byte, error) {
	if len(words) < 2 {
		return 0, fmt.Errorf("parameter %q has no name", strings.Join(words, " "))
	}
	decl := strings.Join(words, " ")
	typ := strings.TrimPrefix(strings.Join(words[:len(words)-1], " "), "const ")
	switch {
	case strings.Contains(decl, "*"):
		return 'p', nil
	case typ == "int":
		return 'i', nil
	case typ == "long long":
		return 'l', nil
	case typ == "float":
		return 'f', nil
	case typ == "double":
		return 'd', nil
	case typ == "u64":
		return 'u', nil
	}
	return 0, fmt.Errorf("parameter %q: unsupported type %q", decl, typ)
}

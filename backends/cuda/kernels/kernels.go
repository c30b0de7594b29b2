// Package kernels holds the CUDA C source of the backend's kernels (kernels.cu, embedded)
// and their signatures read from it, which both devices check every launch against: the
// GPU device marshals launches by them, the emulated device (backends/cuda/device) also
// generates its table of kernel trampolines from them.
package kernels

import (
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"fmt"
	"regexp"
	"strconv"
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
	sigs, err := ParseSignatures(Source)
	if err != nil {
		panic("kernels.cu: " + err.Error()) // the embedded source is fixed: a test covers it
	}
	return sigs
})

// kernelDecl matches `extern "C" __global__ void name(params)`.
var kernelDecl = regexp.MustCompile(`extern "C" __global__ void (\w+)\(([^)]*)\)`)

// ParseSignatures reads the kernel declarations of a CUDA source (Signatures is kernels.cu's).
func ParseSignatures(src string) (map[string]string, error) {
	params, err := ParseParams(src)
	if err != nil {
		return nil, err
	}
	sigs := map[string]string{}
	for name, ps := range params {
		var kinds strings.Builder
		for _, p := range ps {
			kinds.WriteByte(p.Kind)
		}
		sigs[name] = kinds.String()
	}
	return sigs, nil
}

// Param is one declared parameter of a kernel.
type Param struct {
	Name string
	// Kind is the parameter's kind in Signatures (p, i, l, f, d or u).
	Kind byte
	// Elem is a pointer's element type as declared, without const ("float", "double",
	// "int", "unsigned short"); empty for a value. It tells what the memory a kernel writes
	// holds, which a comparison of two devices' results needs (device.Compare).
	Elem string
}

// Params maps every kernel of kernels.cu to its declared parameters, in order.
var Params = sync.OnceValue(func() map[string][]Param {
	params, err := ParseParams(Source)
	if err != nil {
		panic("kernels.cu: " + err.Error()) // the embedded source is fixed: a test covers it
	}
	return params
})

// ParseParams reads the kernel declarations of a CUDA source: each kernel's parameters.
func ParseParams(src string) (map[string][]Param, error) {
	out := map[string][]Param{}
	for _, m := range kernelDecl.FindAllStringSubmatch(src, -1) {
		var ps []Param
		for _, param := range strings.Split(m[2], ",") {
			p, err := parseParam(strings.Fields(param))
			if err != nil {
				return nil, fmt.Errorf("kernel %s: %w", m[1], err)
			}
			ps = append(ps, p)
		}
		if _, dup := out[m[1]]; dup {
			return nil, fmt.Errorf("kernel %s declared twice", m[1])
		}
		out[m[1]] = ps
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no kernels")
	}
	return out, nil
}

// parseParam reads one declared parameter ("const float* x", "long long n", …).
func parseParam(words []string) (Param, error) {
	if len(words) < 2 {
		return Param{}, fmt.Errorf("parameter %q has no name", strings.Join(words, " "))
	}
	decl := strings.Join(words, " ")
	typ := strings.TrimPrefix(strings.Join(words[:len(words)-1], " "), "const ")
	p := Param{Name: strings.TrimLeft(words[len(words)-1], "*")}
	switch {
	case strings.Contains(decl, "*"):
		p.Kind = 'p'
		p.Elem = strings.TrimSpace(strings.ReplaceAll(typ, "*", ""))
	case typ == "int":
		p.Kind = 'i'
	case typ == "long long":
		p.Kind = 'l'
	case typ == "float":
		p.Kind = 'f'
	case typ == "double":
		p.Kind = 'd'
	case typ == "u64":
		p.Kind = 'u'
	default:
		return Param{}, fmt.Errorf("parameter %q: unsupported type %q", decl, typ)
	}
	return p, nil
}

// StaticShared maps every kernel of kernels.cu to the bytes of __shared__ memory it declares
// (the static shared memory of one block), read from the source: the emulated device checks
// it against the GPU's 48 KiB limit at every launch.
var StaticShared = sync.OnceValue(func() map[string]int {
	sizes, err := ParseStaticShared(Source)
	if err != nil {
		panic("kernels.cu: " + err.Error()) // the embedded source is fixed: a test covers it
	}
	return sizes
})

var (
	defineRe = regexp.MustCompile(`(?m)^#define (\w+) (\d+)\b`)
	sharedRe = regexp.MustCompile(`__shared__ (\w+(?: \w+)?) ([^;]+);`)
	declRe   = regexp.MustCompile(`^(\w+)((?:\[\w+\])*)$`)
	dimRe    = regexp.MustCompile(`\[(\w+)\]`)
)

// elemBytes are the sizes of the element types shared arrays use.
var elemBytes = map[string]int{"float": 4, "int": 4, "unsigned int": 4, "unsigned": 4, "double": 8,
	"u64": 8, "long long": 8, "unsigned short": 2, "char": 1}

// ParseStaticShared sums each kernel's __shared__ declarations in a CUDA source (array
// sizes are integer literals or #define'd integers); StaticShared is kernels.cu's.
func ParseStaticShared(src string) (map[string]int, error) {
	consts := map[string]int{}
	for _, m := range defineRe.FindAllStringSubmatch(src, -1) {
		consts[m[1]], _ = strconv.Atoi(m[2])
	}
	dim := func(s string) (int, error) {
		if n, err := strconv.Atoi(s); err == nil {
			return n, nil
		}
		if n, ok := consts[s]; ok {
			return n, nil
		}
		return 0, fmt.Errorf("array size %q is neither a literal nor a #define", s)
	}
	out := map[string]int{}
	decls := kernelDecl.FindAllStringSubmatchIndex(src, -1)
	for i, d := range decls {
		name := src[d[2]:d[3]]
		end := len(src)
		if i+1 < len(decls) {
			end = decls[i+1][0]
		}
		total := 0
		for _, m := range sharedRe.FindAllStringSubmatch(src[d[1]:end], -1) {
			size, ok := elemBytes[m[1]]
			if !ok {
				return nil, fmt.Errorf("kernel %s: __shared__ element type %q", name, m[1])
			}
			for _, v := range strings.Split(m[2], ",") {
				dm := declRe.FindStringSubmatch(strings.TrimSpace(v))
				if dm == nil {
					return nil, fmt.Errorf("kernel %s: __shared__ declaration %q", name, v)
				}
				n := size
				for _, s := range dimRe.FindAllStringSubmatch(dm[2], -1) {
					k, err := dim(s[1])
					if err != nil {
						return nil, fmt.Errorf("kernel %s: %w", name, err)
					}
					n *= k
				}
				total += n
			}
		}
		out[name] = total
	}
	return out, nil
}

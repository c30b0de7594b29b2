package mtrand

import "math/bits"

// PyRandom reproduces CPython's random.Random for seeding with an integer and
// the integer draws used by random.shuffle.
type PyRandom struct {
	mt *MT19937
}

// NewPyRandom is random.Random(seed) / random.seed(seed) for an int seed:
// CPython feeds the 32-bit words of |seed| (least significant first; [0]
// for zero) to init_by_array.
func NewPyRandom(seed int64) *PyRandom {
	u := uint64(seed)
	if seed < 0 {
		u = uint64(-seed) // math.MinInt64 wraps to itself, which is 2^63: still right
	}
	key := []uint32{uint32(u)}
	if hi := uint32(u >> 32); hi != 0 {
		key = append(key, hi)
	}
	return &PyRandom{mt: NewByArray(key)}
}

// GetRandBits is random.getrandbits(k) for 0 < k <= 32.
func (p *PyRandom) GetRandBits(k int) uint32 {
	if k <= 0 || k > 32 {
		panic("mtrand: GetRandBits supports 1..32 bits")
	}
	return p.mt.Uint32() >> (32 - k)
}

// RandBelow is random._randbelow(n) for 0 < n <= 2^32: draw bit_length(n)
// bits until the value is below n.
func (p *PyRandom) RandBelow(n int) int {
	if n <= 0 || uint64(n) > 1<<32 {
		panic("mtrand: RandBelow needs 0 < n <= 2^32")
	}
	k := bits.Len64(uint64(n))
	if k > 32 { // n == 2^32: 33 bits would need two words; CPython does that, we never need it
		panic("mtrand: RandBelow(2^32) is not supported")
	}
	for {
		r := int(p.GetRandBits(k))
		if r < n {
			return r
		}
	}
}

// Shuffle is random.shuffle(x) for a sequence of length n, with swap
// exchanging elements i and j (like sort.Slice's contract).
func (p *PyRandom) Shuffle(n int, swap func(i, j int)) {
	for i := n - 1; i >= 1; i-- {
		j := p.RandBelow(i + 1)
		swap(i, j)
	}
}

// Random is random.random(): a 53-bit float in [0, 1) from two draws.
func (p *PyRandom) Random() float64 {
	a, b := p.mt.Uint32()>>5, p.mt.Uint32()>>6
	return (float64(a)*67108864 + float64(b)) / 9007199254740992
}

// RandInt is random.randint(a, b): uniform in [a, b].
func (p *PyRandom) RandInt(a, b int) int {
	return a + p.RandBelow(b-a+1)
}

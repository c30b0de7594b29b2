// Package mtrand reproduces, bit for bit, the two Mersenne Twister based
// random streams MyPT's data pipeline depends on: numpy's legacy
// RandomState (val split, epoch order, random batch sampling) and CPython's
// random module (pack shuffle). Both share the MT19937 core but seed and
// draw bounded integers differently, so each has its own type. The
// algorithms and reference vectors are in docs/MYPT.md §19.
package mtrand

const (
	stateSize  = 624
	shiftSize  = 397
	matrixA    = 0x9908b0df
	upperMask  = 0x80000000
	lowerMask  = 0x7fffffff
	genrandMul = 1812433253
)

// MT19937 is the 32-bit Mersenne Twister generator (Matsumoto & Nishimura).
// The zero value is not usable; construct it with NewGenrand or NewByArray.
type MT19937 struct {
	mt    [stateSize]uint32
	index int
}

// NewGenrand seeds the generator with the reference init_genrand(seed),
// which is what numpy's RandomState(seed) does for an integer seed.
func NewGenrand(seed uint32) *MT19937 {
	m := &MT19937{}
	m.initGenrand(seed)
	return m
}

func (m *MT19937) initGenrand(seed uint32) {
	m.mt[0] = seed
	for i := 1; i < stateSize; i++ {
		prev := m.mt[i-1]
		m.mt[i] = genrandMul*(prev^(prev>>30)) + uint32(i)
	}
	m.index = stateSize
}

// NewByArray seeds the generator with the reference init_by_array(key),
// which is what CPython's random.seed(int) does with the integer's 32-bit
// words.
func NewByArray(key []uint32) *MT19937 {
	m := &MT19937{}
	m.initGenrand(19650218)
	i, j := 1, 0
	k := max(stateSize, len(key))
	for ; k > 0; k-- {
		prev := m.mt[i-1]
		m.mt[i] = (m.mt[i] ^ ((prev ^ (prev >> 30)) * 1664525)) + key[j] + uint32(j)
		i++
		j++
		if i >= stateSize {
			m.mt[0] = m.mt[stateSize-1]
			i = 1
		}
		if j >= len(key) {
			j = 0
		}
	}
	for k = stateSize - 1; k > 0; k-- {
		prev := m.mt[i-1]
		m.mt[i] = (m.mt[i] ^ ((prev ^ (prev >> 30)) * 1566083941)) - uint32(i)
		i++
		if i >= stateSize {
			m.mt[0] = m.mt[stateSize-1]
			i = 1
		}
	}
	m.mt[0] = 0x80000000 // guarantees a non-zero initial state
	m.index = stateSize
	return m
}

// Uint32 returns the next 32-bit output (genrand_int32).
func (m *MT19937) Uint32() uint32 {
	if m.index >= stateSize {
		m.twist()
	}
	y := m.mt[m.index]
	m.index++
	y ^= y >> 11
	y ^= (y << 7) & 0x9d2c5680
	y ^= (y << 15) & 0xefc60000
	y ^= y >> 18
	return y
}

func (m *MT19937) twist() {
	for i := 0; i < stateSize; i++ {
		y := (m.mt[i] & upperMask) | (m.mt[(i+1)%stateSize] & lowerMask)
		v := m.mt[(i+shiftSize)%stateSize] ^ (y >> 1)
		if y&1 != 0 {
			v ^= matrixA
		}
		m.mt[i] = v
	}
	m.index = 0
}

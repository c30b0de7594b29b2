package mtrand

import "fmt"

// RandomState reproduces numpy.random.RandomState (the legacy generator)
// for the draws MyPT uses: permutation and randint. It counts the 32-bit
// words it has consumed so that a position can be saved as one integer and
// restored exactly with Skip.
type RandomState struct {
	mt    *MT19937
	drawn uint64
}

// NewRandomState is numpy.random.RandomState(seed) for an integer seed in
// [0, 2^32): numpy seeds MT19937 with init_genrand(seed).
func NewRandomState(seed uint32) *RandomState {
	return &RandomState{mt: NewGenrand(seed)}
}

// SeedFromInt validates a seed the way numpy does (0 <= seed < 2^32) and
// returns it as the uint32 numpy would use.
func SeedFromInt(seed int64) (uint32, error) {
	if seed < 0 || seed > 0xffffffff {
		return 0, fmt.Errorf("seed %d out of range: numpy RandomState seeds must be between 0 and 2**32 - 1", seed)
	}
	return uint32(seed), nil
}

func (r *RandomState) next() uint32 {
	r.drawn++
	return r.mt.Uint32()
}

// Drawn is the number of 32-bit words consumed since seeding.
func (r *RandomState) Drawn() uint64 { return r.drawn }

// Skip discards n 32-bit words, so that NewRandomState(s) followed by
// Skip(d) is in the same state as a generator that has drawn d words.
func (r *RandomState) Skip(n uint64) {
	for range n {
		r.next()
	}
}

// Interval returns a uniform integer in [0, max] with numpy's legacy
// masked rejection sampling (random_interval / bounded_masked_uint32):
// draw a word, keep the bits of the smallest all-ones mask covering max,
// retry while the result exceeds max.
func (r *RandomState) Interval(max uint32) uint32 {
	if max == 0 {
		return 0
	}
	mask := max
	mask |= mask >> 1
	mask |= mask >> 2
	mask |= mask >> 4
	mask |= mask >> 8
	mask |= mask >> 16
	for {
		v := r.next() & mask
		if v <= max {
			return v
		}
	}
}

// Permutation is RandomState.permutation(n): a Fisher-Yates shuffle of
// 0..n-1 from the last element down, j = Interval(i).
func (r *RandomState) Permutation(n int) []int {
	p := make([]int, n)
	for i := range p {
		p[i] = i
	}
	for i := n - 1; i >= 1; i-- {
		j := int(r.Interval(uint32(i)))
		p[i], p[j] = p[j], p[i]
	}
	return p
}

// Intn is one draw of RandomState.randint(0, n): uniform in [0, n).
// n must be in [1, 2^32].
func (r *RandomState) Intn(n int) int {
	if n <= 0 || uint64(n) > 1<<32 {
		panic(fmt.Sprintf("mtrand: Intn(%d) out of range", n))
	}
	if uint64(n) == 1<<32 {
		return int(r.next()) // numpy takes the raw word when the range is full
	}
	return int(r.Interval(uint32(n - 1)))
}

// RandInt is RandomState.randint(low, high, size): size uniform draws in
// [low, high). high-low must be in [1, 2^32].
func (r *RandomState) RandInt(low, high int64, size int) []int64 {
	out := make([]int64, size)
	for i := range out {
		out[i] = low + int64(r.Intn(int(high-low)))
	}
	return out
}

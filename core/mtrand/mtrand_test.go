package mtrand

import (
	"encoding/json"
	"os"
	"slices"
	"testing"
)

// Sequences quoted in docs/MYPT.md §19 (MT19937, numpy, Python random; checked
// against numpy 1.24.2 and CPython).
func TestKnownSequences(t *testing.T) {
	perms := []struct {
		seed uint32
		n    int
		want []int
	}{
		{1337, 10, []int{6, 3, 0, 4, 5, 2, 1, 9, 8, 7}},
		{1338, 10, []int{6, 3, 8, 1, 9, 5, 7, 4, 2, 0}},
		{42, 10, []int{8, 1, 5, 0, 7, 2, 9, 4, 3, 6}},
		{99, 10, []int{8, 5, 4, 2, 6, 7, 0, 9, 3, 1}},
		{3301, 10, []int{5, 3, 4, 7, 9, 0, 6, 2, 8, 1}},
		{1337, 20, []int{5, 3, 4, 0, 15, 11, 2, 12, 13, 1, 16, 17, 10, 14, 6, 9, 19, 18, 7, 8}},
		{1337, 3, []int{2, 0, 1}},
	}
	for _, p := range perms {
		if got := NewRandomState(p.seed).Permutation(p.n); !slices.Equal(got, p.want) {
			t.Errorf("RandomState(%d).permutation(%d) = %v, want %v", p.seed, p.n, got, p.want)
		}
	}

	rs := NewRandomState(1337)
	if got := rs.RandInt(0, 10, 4); !slices.Equal(got, []int64{7, 8, 7, 9}) {
		t.Errorf("first randint(0,10,4) = %v", got)
	}
	if got := rs.RandInt(0, 10, 4); !slices.Equal(got, []int64{7, 2, 2, 4}) {
		t.Errorf("second randint(0,10,4) = %v", got)
	}

	xs := []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}
	NewPyRandom(42).Shuffle(len(xs), func(i, j int) { xs[i], xs[j] = xs[j], xs[i] })
	if want := []int{7, 3, 2, 8, 5, 6, 9, 4, 0, 1}; !slices.Equal(xs, want) {
		t.Errorf("random.Random(42).shuffle = %v, want %v", xs, want)
	}
}

// The reference MT19937 output for init_genrand(5489) (mt19937ar.c's default seed).
func TestReferenceGenrand(t *testing.T) {
	m := NewGenrand(5489)
	want := []uint32{3499211612, 581869302, 3890346734, 3586334585, 545404204}
	for i, w := range want {
		if got := m.Uint32(); got != w {
			t.Fatalf("word %d = %d, want %d", i, got, w)
		}
	}
	// mt19937ar.c's test program: init_by_array({0x123, 0x234, 0x345, 0x456}).
	a := NewByArray([]uint32{0x123, 0x234, 0x345, 0x456})
	wantA := []uint32{1067595299, 955945823, 477289528, 4107218783, 4228976476}
	for i, w := range wantA {
		if got := a.Uint32(); got != w {
			t.Fatalf("init_by_array word %d = %d, want %d", i, got, w)
		}
	}
}

type vectors struct {
	Permutation []struct {
		Seed uint32
		N    int
		Perm []int
	}
	RandInt []struct {
		Seed          uint32
		N             int64
		First, Second []int64
	} `json:"randint"`
	RawUint32 []struct {
		Seed  uint32
		Words []uint32
	} `json:"raw_uint32"`
	PyShuffle []struct {
		Seed     int64
		N        int
		Shuffled []int
	} `json:"py_shuffle"`
	PyGetRandBits []struct {
		Seed   int64
		K      int
		Values []uint32
	} `json:"py_getrandbits"`
}

// vectors.json is written by gen_vectors.py with numpy and CPython.
func loadVectors(t *testing.T) vectors {
	t.Helper()
	b, err := os.ReadFile("testdata/vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	var v vectors
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	if len(v.Permutation) == 0 || len(v.PyShuffle) == 0 {
		t.Fatal("vectors.json has no cases")
	}
	return v
}

func TestNumpyVectors(t *testing.T) {
	v := loadVectors(t)
	for _, c := range v.Permutation {
		if got := NewRandomState(c.Seed).Permutation(c.N); !slices.Equal(got, c.Perm) {
			t.Errorf("permutation seed %d n %d differs from numpy", c.Seed, c.N)
		}
	}
	for _, c := range v.RandInt {
		rs := NewRandomState(c.Seed)
		if got := rs.RandInt(0, c.N, len(c.First)); !slices.Equal(got, c.First) {
			t.Errorf("randint seed %d n %d first = %v, want %v", c.Seed, c.N, got, c.First)
		}
		if got := rs.RandInt(0, c.N, len(c.Second)); !slices.Equal(got, c.Second) {
			t.Errorf("randint seed %d n %d second = %v, want %v", c.Seed, c.N, got, c.Second)
		}
	}
	for _, c := range v.RawUint32 {
		rs := NewRandomState(c.Seed)
		for i, w := range c.Words {
			if got := uint32(rs.Intn(1 << 32)); got != w {
				t.Fatalf("seed %d word %d = %d, want %d", c.Seed, i, got, w)
			}
		}
	}
}

func TestPythonVectors(t *testing.T) {
	v := loadVectors(t)
	for _, c := range v.PyShuffle {
		xs := make([]int, c.N)
		for i := range xs {
			xs[i] = i
		}
		NewPyRandom(c.Seed).Shuffle(len(xs), func(i, j int) { xs[i], xs[j] = xs[j], xs[i] })
		if !slices.Equal(xs, c.Shuffled) {
			t.Errorf("shuffle seed %d n %d = %v, want %v", c.Seed, c.N, xs, c.Shuffled)
		}
	}
	for _, c := range v.PyGetRandBits {
		r := NewPyRandom(c.Seed)
		for i, w := range c.Values {
			if got := r.GetRandBits(c.K); got != w {
				t.Fatalf("seed %d getrandbits #%d = %d, want %d", c.Seed, i, got, w)
			}
		}
	}
}

func TestSkipRestoresPosition(t *testing.T) {
	a := NewRandomState(3301)
	a.Permutation(57)
	a.RandInt(0, 1000, 33)
	b := NewRandomState(3301)
	b.Skip(a.Drawn())
	if !slices.Equal(a.Permutation(100), b.Permutation(100)) {
		t.Fatal("generator restored with Skip(Drawn()) diverges")
	}
}

func TestSeedFromInt(t *testing.T) {
	if _, err := SeedFromInt(-1); err == nil {
		t.Error("negative seed accepted")
	}
	if _, err := SeedFromInt(1 << 32); err == nil {
		t.Error("seed 2^32 accepted")
	}
	if s, err := SeedFromInt(1<<32 - 1); err != nil || s != 0xffffffff {
		t.Errorf("SeedFromInt(2^32-1) = %d, %v", s, err)
	}
}

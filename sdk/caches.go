package sdk

import (
	"iter"
	"maps"
)

// CacheTable holds a backend's KV caches under the handles Prefill hands out and Decode
// and ReleaseCache name. The zero value is an empty table. It is not safe for
// concurrent use (backends serialise their calls).
type CacheTable[C any] struct {
	last   uint64
	caches map[uint64]C
}

// Add stores c under a new handle (1, 2, …, never reused) and returns the handle.
func (t *CacheTable[C]) Add(c C) uint64 {
	if t.caches == nil {
		t.caches = map[uint64]C{}
	}
	t.last++
	t.caches[t.last] = c
	return t.last
}

// Get returns the cache under handle h, or a NotFound error.
func (t *CacheTable[C]) Get(h uint64) (C, error) {
	c, ok := t.caches[h]
	if !ok {
		return c, NotFound("cache handle %d is unknown or released", h)
	}
	return c, nil
}

// Remove takes the cache under handle h out of the table and returns it, or a NotFound
// error.
func (t *CacheTable[C]) Remove(h uint64) (C, error) {
	c, err := t.Get(h)
	if err == nil {
		delete(t.caches, h)
	}
	return c, err
}

// All yields the caches in the table, in no particular order.
func (t *CacheTable[C]) All() iter.Seq[C] { return maps.Values(t.caches) }

package cpu

import (
	"math"
	"sync"
)

// erf is the error function used by GELU.
func erf(x float64) float64 { return math.Erf(x) }

// pool runs a loop body over index ranges on a fixed set of worker goroutines (the caller
// is worker 0). Not safe for concurrent use: one model drives it.
type pool struct {
	workers int
	tasks   []chan poolTask // one per extra worker
	wg      sync.WaitGroup
}

type poolTask struct {
	fn     func(worker, lo, hi int)
	lo, hi int
}

func newPool(workers int) *pool {
	if workers < 1 {
		workers = 1
	}
	p := &pool{workers: workers}
	for w := 1; w < workers; w++ {
		ch := make(chan poolTask, 1)
		p.tasks = append(p.tasks, ch)
		go func(w int) {
			for t := range ch {
				t.fn(w, t.lo, t.hi)
				p.wg.Done()
			}
		}(w)
	}
	return p
}

// close stops the worker goroutines.
func (p *pool) close() {
	for _, ch := range p.tasks {
		close(ch)
	}
	p.tasks = nil
	p.workers = 1
}

// run calls fn(worker, lo, hi) over contiguous chunks covering [0,n), using at most as many
// workers as there are chunks of at least minChunk items.
func (p *pool) run(n, minChunk int, fn func(worker, lo, hi int)) {
	if n <= 0 {
		return
	}
	w := p.workers
	if minChunk < 1 {
		minChunk = 1
	}
	w = min(w, (n+minChunk-1)/minChunk)
	if w <= 1 {
		fn(0, 0, n)
		return
	}
	chunk := (n + w - 1) / w
	p.wg.Add(w - 1)
	for i := 1; i < w; i++ {
		lo := i * chunk
		hi := min(n, lo+chunk)
		if lo >= hi {
			p.wg.Done()
			continue
		}
		p.tasks[i-1] <- poolTask{fn: fn, lo: lo, hi: hi}
	}
	fn(0, 0, min(n, chunk))
	p.wg.Wait()
}

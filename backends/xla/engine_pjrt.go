//go:build cgo && !nopjrt

package xla

import (
	"fmt"

	"github.com/gomlx/gomlx/backends"
	"github.com/gomlx/gomlx/backends/stablehlo"
	"github.com/gomlx/gopjrt/pjrt"
)

// newPJRT opens the PJRT plugin at the absolute path abs through gopjrt (GoMLX's stablehlo
// backend, which GoMLX v0.25.0 also registers as "xla"). On GPU plugins the client allocates
// device memory on demand (XLA's "preallocate" client option) rather than reserving most of it.
func newPJRT(abs string, gpu bool) (be backends.Backend, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%v", r)
		}
	}()
	var options pjrt.NamedValuesMap
	if gpu {
		options = pjrt.NamedValuesMap{"preallocate": false}
	}
	return stablehlo.NewWithOptions(abs, options)
}

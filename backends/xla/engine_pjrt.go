//go:build cgo && !nopjrt

package xla

import (
	"fmt"

	"github.com/gomlx/gomlx/backends"
	"github.com/gomlx/gomlx/backends/stablehlo"
)

// newPJRT opens the PJRT plugin at the absolute path abs through gopjrt (GoMLX's stablehlo
// backend, which GoMLX v0.25.0 also registers as "xla").
func newPJRT(abs string) (be backends.Backend, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%v", r)
		}
	}()
	return stablehlo.New(abs)
}

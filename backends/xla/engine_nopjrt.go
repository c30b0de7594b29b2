//go:build !cgo || nopjrt

package xla

import (
	"errors"

	"github.com/gomlx/gomlx/backends"
)

// newPJRT is unavailable in builds without cgo (or with the nopjrt tag): gopjrt loads
// plugins through the C API.
func newPJRT(string, bool) (backends.Backend, error) {
	return nil, errors.New("this build of mypt-backend-xla has no PJRT support (built without cgo or with -tags nopjrt); rebuild with CGO_ENABLED=1")
}

//go:build !linux

package checkpoint

import "errors"

var errExchangeUnsupported = errors.New("atomic directory exchange not supported")

// exchange is unavailable here; the caller falls back to two renames.
func exchange(a, b string) error { return errExchangeUnsupported }

package checkpoint

import (
	"errors"

	"golang.org/x/sys/unix"
)

var errExchangeUnsupported = errors.New("atomic directory exchange not supported")

// exchange atomically swaps the directories at a and b.
func exchange(a, b string) error {
	err := unix.Renameat2(unix.AT_FDCWD, a, unix.AT_FDCWD, b, unix.RENAME_EXCHANGE)
	if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.ENOTSUP) {
		return errExchangeUnsupported
	}
	return err
}

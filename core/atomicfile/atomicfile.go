// Package atomicfile writes files and directories so that a crash leaves
// either the old version or the new one, never a mix: data goes to a
// temporary name in the same directory, is fsynced, and is renamed into
// place, and the directory itself is fsynced so the rename is durable.
package atomicfile

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// WriteFile replaces path with data atomically.
func WriteFile(path string, data []byte, perm os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	err = writeSyncClose(f, data)
	if err == nil {
		err = os.Chmod(tmp, perm)
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return SyncDir(filepath.Dir(path))
}

// WriteNew creates path, which must not exist, with data and fsyncs it. It
// is for files inside a staging directory that is later moved into place
// as a whole.
func WriteNew(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	if err := writeSyncClose(f, data); err != nil {
		return fmt.Errorf("write %s: %w", filepath.Base(path), err)
	}
	return nil
}

func writeSyncClose(f *os.File, data []byte) error {
	_, err := f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// SyncDir fsyncs a directory, making renames and creations in it durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}

// ReplaceDir moves the finished directory stage to target (both in the same
// parent directory). An existing target is first renamed aside and removed
// once stage is in place; if the move fails, it is put back.
func ReplaceDir(stage, target string) error {
	if err := SyncDir(stage); err != nil {
		return err
	}
	var old string
	if _, err := os.Lstat(target); err == nil {
		suffix := make([]byte, 4)
		rand.Read(suffix)
		old = filepath.Join(filepath.Dir(target), "."+filepath.Base(target)+".old-"+hex.EncodeToString(suffix))
		if err := os.Rename(target, old); err != nil {
			return fmt.Errorf("move %s aside: %w", target, err)
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if err := os.Rename(stage, target); err != nil {
		if old != "" {
			_ = os.Rename(old, target)
		}
		return fmt.Errorf("move %s into place: %w", target, err)
	}
	if err := SyncDir(filepath.Dir(target)); err != nil {
		return err
	}
	if old != "" {
		return os.RemoveAll(old)
	}
	return nil
}

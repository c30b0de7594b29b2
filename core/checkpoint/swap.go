package checkpoint

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/mypt/mypt/core/atomicfile"
)

// Names of the sibling directories a write uses: ".<base>.tmp-*" holds a
// checkpoint being written (or, after an exchange, the one it replaced);
// ".<base>.old-*" holds the previous checkpoint during a two-rename swap.
const (
	tmpInfix = ".tmp-"
	oldInfix = ".old-"
)

// swapIntoPlace makes w.tmp appear at w.target. Where the kernel can swap
// two directories atomically (Linux renameat2 RENAME_EXCHANGE) the target is
// never absent; elsewhere the old checkpoint is first renamed aside, and a
// crash between the two renames leaves it complete under ".<base>.old-*",
// where Open finds it and the next NewWriter restores it.
func (w *Writer) swapIntoPlace() error {
	parent := filepath.Dir(w.target)
	_, err := os.Lstat(w.target)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := os.Rename(w.tmp, w.target); err != nil {
			return fmt.Errorf("move into place: %w", err)
		}
		w.tmp = ""
		return atomicfile.SyncDir(parent)
	case err != nil:
		return err
	}
	if !w.noExchange {
		err := exchange(w.tmp, w.target)
		if err == nil {
			// w.tmp now holds the previous checkpoint. The new one is in
			// place, so a fault here can only be a simulated crash.
			_ = w.fault("exchanged")
			if err := atomicfile.SyncDir(parent); err != nil {
				return err
			}
			w.removeOld(w.tmp)
			w.tmp = ""
			return nil
		}
		if !errors.Is(err, errExchangeUnsupported) {
			return fmt.Errorf("exchange with previous checkpoint: %w", err)
		}
	}
	old, err := reserveName(parent, "."+filepath.Base(w.target)+oldInfix)
	if err != nil {
		return err
	}
	if err := os.Rename(w.target, old); err != nil {
		return fmt.Errorf("move previous checkpoint aside: %w", err)
	}
	if err := w.fault("old-moved-aside"); err != nil {
		_ = os.Rename(old, w.target)
		return err
	}
	if err := os.Rename(w.tmp, w.target); err != nil {
		if rerr := os.Rename(old, w.target); rerr != nil {
			return fmt.Errorf("move into place: %w (and restoring the previous checkpoint from %s failed: %v)", err, old, rerr)
		}
		return fmt.Errorf("move into place: %w", err)
	}
	w.tmp = ""
	if err := atomicfile.SyncDir(parent); err != nil {
		return err
	}
	w.removeOld(old)
	return nil
}

func (w *Writer) removeOld(dir string) {
	if err := os.RemoveAll(dir); err != nil {
		// The new checkpoint is in place; a leftover is removed next time.
		w.log.Warn("checkpoint: could not remove previous checkpoint", "dir", dir, "err", err)
	}
}

// reserveName returns an unused path in parent starting with prefix.
func reserveName(parent, prefix string) (string, error) {
	d, err := os.MkdirTemp(parent, prefix)
	if err != nil {
		return "", err
	}
	if err := os.Remove(d); err != nil {
		return "", err
	}
	return d, nil
}

// siblings lists parent's entries named ".<base><infix>*".
func siblings(target, infix string) ([]string, error) {
	parent, base := filepath.Dir(target), filepath.Base(target)
	entries, err := os.ReadDir(parent)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range entries {
		if e.IsDir() && strings.HasPrefix(e.Name(), "."+base+infix) {
			out = append(out, filepath.Join(parent, e.Name()))
		}
	}
	return out, nil
}

// backupOf returns the complete previous checkpoint left aside by a crash in
// the middle of a two-rename swap, if target itself is missing.
func backupOf(target string) (string, bool) {
	if _, err := os.Lstat(target); !errors.Is(err, fs.ErrNotExist) {
		return "", false
	}
	olds, err := siblings(target, oldInfix)
	if err != nil {
		return "", false
	}
	for _, o := range olds {
		if _, err := os.Stat(filepath.Join(o, ManifestFile)); err == nil {
			return o, true
		}
	}
	return "", false
}

// recoverTarget tidies up after a crashed write to target: it restores a
// previous checkpoint left aside, and removes temporary and superseded
// directories.
func recoverTarget(target string, log *slog.Logger) error {
	if old, ok := backupOf(target); ok {
		log.Warn("checkpoint: restoring previous checkpoint left aside by an interrupted write", "from", old, "to", target)
		if err := os.Rename(old, target); err != nil {
			return fmt.Errorf("checkpoint %s: restore previous checkpoint from %s: %w", target, old, err)
		}
	}
	for _, infix := range []string{tmpInfix, oldInfix} {
		dirs, err := siblings(target, infix)
		if err != nil {
			return fmt.Errorf("checkpoint %s: look for leftovers: %w", target, err)
		}
		for _, d := range dirs {
			log.Info("checkpoint: removing leftover of an interrupted write", "dir", d)
			if err := os.RemoveAll(d); err != nil {
				return fmt.Errorf("checkpoint %s: remove leftover %s: %w", target, d, err)
			}
		}
	}
	return nil
}

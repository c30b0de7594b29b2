package atomicfile

import (
	"os"
	"path/filepath"
	"testing"
)

func TestWriteFileReplacesAndLeavesNoTemp(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "f.json")
	for _, body := range []string{"one", "two"} {
		if err := WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		if b, _ := os.ReadFile(p); string(b) != body {
			t.Fatalf("content %q, want %q", b, body)
		}
	}
	if st, _ := os.Stat(p); st.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v", st.Mode().Perm())
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Fatalf("leftovers: %v", entries)
	}
	if err := WriteFile(filepath.Join(dir, "missing", "f"), nil, 0o644); err == nil {
		t.Fatal("write into a missing directory succeeded")
	}
}

func TestWriteNewRefusesExisting(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	if err := WriteNew(p, []byte("x")); err != nil {
		t.Fatal(err)
	}
	if err := WriteNew(p, []byte("y")); err == nil {
		t.Fatal("overwrote an existing file")
	}
}

func TestReplaceDir(t *testing.T) {
	parent := t.TempDir()
	target := filepath.Join(parent, "out")
	for i, body := range []string{"first", "second"} {
		stage, err := os.MkdirTemp(parent, ".out.tmp-")
		if err != nil {
			t.Fatal(err)
		}
		if err := WriteNew(filepath.Join(stage, "f"), []byte(body)); err != nil {
			t.Fatal(err)
		}
		if err := ReplaceDir(stage, target); err != nil {
			t.Fatalf("round %d: %v", i, err)
		}
		if b, _ := os.ReadFile(filepath.Join(target, "f")); string(b) != body {
			t.Fatalf("round %d: %q", i, b)
		}
	}
	if entries, _ := os.ReadDir(parent); len(entries) != 1 {
		t.Fatalf("leftovers: %v", entries)
	}
	// A failed move puts the old directory back.
	if err := ReplaceDir(filepath.Join(parent, "no-such-stage"), target); err == nil {
		t.Fatal("replacing with a missing stage succeeded")
	}
	if b, _ := os.ReadFile(filepath.Join(target, "f")); string(b) != "second" {
		t.Fatalf("old target not restored: %q", b)
	}
}

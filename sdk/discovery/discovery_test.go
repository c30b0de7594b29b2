package discovery

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func writeFile(t *testing.T, p string, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"), mode); err != nil {
		t.Fatal(err)
	}
}

func TestResolveOrder(t *testing.T) {
	root := t.TempDir()
	exe, p1, p2 := filepath.Join(root, "bin"), filepath.Join(root, "p1"), filepath.Join(root, "p2")
	writeFile(t, filepath.Join(exe, "mypt-backend-cpu"), 0o755)
	writeFile(t, filepath.Join(p1, "mypt-backend-cpu"), 0o755)
	writeFile(t, filepath.Join(p1, "mypt-backend-xla"), 0o755)
	writeFile(t, filepath.Join(p2, "mypt-backend-xla"), 0o755)
	writeFile(t, filepath.Join(p2, "mypt-backend-cuda"), 0o644) // not executable
	f := New(exe, p1+string(os.PathListSeparator)+p2)

	for backend, want := range map[string]string{
		"cpu": filepath.Join(exe, "mypt-backend-cpu"),
		"xla": filepath.Join(p1, "mypt-backend-xla"),
	} {
		got, err := f.Resolve(backend)
		if err != nil || got != want {
			t.Errorf("Resolve(%q) = %q, %v; want %q", backend, got, err, want)
		}
	}
	if _, err := f.Resolve("cuda"); err == nil || !strings.Contains(err.Error(), "not executable") {
		t.Errorf("Resolve(cuda) error = %v, want 'not executable'", err)
	}
	_, err := f.Resolve("tpu")
	if err == nil || !strings.Contains(err.Error(), "mypt-backend-tpu") || !strings.Contains(err.Error(), p2) {
		t.Errorf("Resolve(tpu) error = %v, want it to name the file and the directories searched", err)
	}
	explicit := filepath.Join(p2, "mypt-backend-xla")
	if got, err := f.Resolve(explicit); err != nil || got != explicit {
		t.Errorf("Resolve(explicit path) = %q, %v", got, err)
	}
	if _, err := f.Resolve(filepath.Join(root, "nope")); err == nil {
		t.Error("Resolve(missing explicit path) succeeded")
	}
}

func TestList(t *testing.T) {
	root := t.TempDir()
	a, b := filepath.Join(root, "a"), filepath.Join(root, "b")
	writeFile(t, filepath.Join(a, "mypt-backend-cpu"), 0o755)
	writeFile(t, filepath.Join(a, "mypt"), 0o755)
	writeFile(t, filepath.Join(b, "mypt-backend-cpu"), 0o755)
	writeFile(t, filepath.Join(b, "mypt-backend-bigram"), 0o755)
	got, err := New(a, b+string(os.PathListSeparator)+filepath.Join(root, "missing")).List()
	if err != nil {
		t.Fatal(err)
	}
	want := []Plugin{
		{Name: "cpu", Path: filepath.Join(a, "mypt-backend-cpu")},
		{Name: "bigram", Path: filepath.Join(b, "mypt-backend-bigram")},
		{Name: "cpu", Path: filepath.Join(b, "mypt-backend-cpu"), Shadowed: true},
	}
	if len(got) != len(want) {
		t.Fatalf("List = %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("List[%d] = %+v, want %+v", i, got[i], want[i])
		}
	}
}

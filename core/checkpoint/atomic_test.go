package checkpoint

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// Failures at every stage of a commit leave the previous checkpoint intact
// and loadable, and no temporary directories behind.
func TestFailedCommitKeepsPreviousCheckpoint(t *testing.T) {
	l := tinyGPT(true, true, f32)
	oldTensors, newTensors := fillTensors(t, l, 10), fillTensors(t, l, 20)
	for _, tc := range []struct {
		stage      string
		noExchange bool
	}{
		{"tensors-written", false},
		{"json-written", false},
		{"before-swap", false},
		{"old-moved-aside", true},
	} {
		t.Run(tc.stage, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "latest")
			writeCheckpoint(t, dir, l, oldTensors, 1)
			w, err := NewWriter(dir, l)
			if err != nil {
				t.Fatal(err)
			}
			w.noExchange = tc.noExchange
			injected := errors.New("injected failure")
			w.faultHook = func(stage string) error {
				if stage == tc.stage {
					return injected
				}
				return nil
			}
			feed(t, w, newTensors, 2)
			if err := w.Commit(testMeta(2)); !errors.Is(err, injected) {
				t.Fatalf("commit error %v, want the injected failure", err)
			}
			assertContents(t, dir, l, oldTensors, 1)
			if left := leftovers(t, dir); len(left) != 0 {
				t.Fatalf("left behind %v", left)
			}
		})
	}
	t.Run("abort mid-stream", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "latest")
		writeCheckpoint(t, dir, l, oldTensors, 1)
		w, err := NewWriter(dir, l)
		if err != nil {
			t.Fatal(err)
		}
		for _, tt := range newTensors[:5] {
			if err := w.WriteTensor(tt); err != nil {
				t.Fatal(err)
			}
		}
		w.Abort()
		w.Abort()
		assertContents(t, dir, l, oldTensors, 1)
		if left := leftovers(t, dir); len(left) != 0 {
			t.Fatalf("left behind %v", left)
		}
		if err := w.WriteTensor(newTensors[5]); err == nil {
			t.Fatal("WriteTensor after Abort succeeded")
		}
	})
	for _, noExchange := range []bool{false, true} {
		t.Run(fmt.Sprintf("replace noExchange=%v", noExchange), func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "latest")
			writeCheckpoint(t, dir, l, oldTensors, 1)
			w, err := NewWriter(dir, l)
			if err != nil {
				t.Fatal(err)
			}
			w.noExchange = noExchange
			feed(t, w, newTensors, 2)
			if err := w.Commit(testMeta(2)); err != nil {
				t.Fatal(err)
			}
			assertContents(t, dir, l, newTensors, 2)
			if left := leftovers(t, dir); len(left) != 0 {
				t.Fatalf("left behind %v", left)
			}
		})
	}
}

// crashEnv tells the test binary, re-run as a child, to commit a second
// checkpoint and exit abruptly (no deferred clean-up) at a stage.
const crashEnv = "MYPT_CHECKPOINT_CRASH"

func TestCrashHelper(t *testing.T) {
	spec := os.Getenv(crashEnv)
	if spec == "" {
		t.Skip("run by TestCrashAtEveryStage")
	}
	var dir, stage string
	var noExchange bool
	if _, err := fmt.Sscanf(spec, "%s %s %t", &dir, &stage, &noExchange); err != nil {
		t.Fatal(err)
	}
	l := tinyGPT(true, true, f32)
	w, err := NewWriter(dir, l)
	if err != nil {
		t.Fatal(err)
	}
	w.noExchange = noExchange
	w.faultHook = func(s string) error {
		if s == stage {
			os.Exit(3) // like SIGKILL: nothing is cleaned up
		}
		return nil
	}
	feed(t, w, fillTensors(t, l, 20), 2)
	if err := w.Commit(testMeta(2)); err != nil {
		t.Fatal(err)
	}
	t.Fatal("stage never reached")
}

// A process dying at any stage of a commit leaves a complete checkpoint:
// the old one before the swap, the new one after. The next writer cleans
// up what the dead one left.
func TestCrashAtEveryStage(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns processes")
	}
	l := tinyGPT(true, true, f32)
	oldTensors, newTensors := fillTensors(t, l, 10), fillTensors(t, l, 20)
	for _, tc := range []struct {
		stage      string
		noExchange bool
		wantNew    bool
	}{
		{"tensors-written", false, false},
		{"json-written", false, false},
		{"before-swap", false, false},
		{"exchanged", false, true},
		{"old-moved-aside", true, false},
	} {
		t.Run(tc.stage, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "latest")
			writeCheckpoint(t, dir, l, oldTensors, 1)
			cmd := exec.Command(os.Args[0], "-test.run=^TestCrashHelper$")
			cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s %s %t", crashEnv, dir, tc.stage, tc.noExchange))
			out, err := cmd.CombinedOutput()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 3 {
				t.Fatalf("child did not crash at %s: %v\n%s", tc.stage, err, out)
			}
			if len(leftovers(t, dir)) == 0 {
				t.Fatalf("crash at %s left nothing behind; the stage was not mid-write", tc.stage)
			}
			if tc.wantNew {
				assertContents(t, dir, l, newTensors, 2)
			} else {
				assertContents(t, dir, l, oldTensors, 1) // via the backup for old-moved-aside
			}
			// The next write recovers, replaces and leaves nothing behind.
			writeCheckpoint(t, dir, l, newTensors, 3)
			assertContents(t, dir, l, newTensors, 3)
			if left := leftovers(t, dir); len(left) != 0 {
				t.Fatalf("left behind %v", left)
			}
		})
	}
}

// A relative target without a directory part writes its temporary directory
// beside it (not in the system temp dir) and creates missing parents.
func TestRelativeAndNestedTargets(t *testing.T) {
	root := t.TempDir()
	t.Chdir(root)
	l := tinyGPT(true, false, f32)
	tensors := fillTensors(t, l, 8)
	for _, dir := range []string{"plain", filepath.Join("runs", "a", "latest")} {
		w, err := NewWriter(dir, l)
		if err != nil {
			t.Fatal(err)
		}
		if filepath.Dir(w.tmp) != filepath.Dir(dir) {
			t.Fatalf("temporary directory %s is not beside %s", w.tmp, dir)
		}
		feed(t, w, tensors, 1)
		if err := w.Commit(testMeta(1)); err != nil {
			t.Fatal(err)
		}
		assertContents(t, dir, l, tensors, 1)
	}
	if _, err := NewWriter(".", l); err == nil {
		t.Fatal("NewWriter(\".\") succeeded")
	}
}

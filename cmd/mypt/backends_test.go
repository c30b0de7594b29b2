package main

import (
	"bytes"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestBackendsListsPluginsWithInfo builds the example plugin into a
// directory on MYPT_PLUGIN_PATH and checks `mypt backends` starts it and
// reports its GetInfo.
func TestBackendsListsPluginsWithInfo(t *testing.T) {
	dir := t.TempDir()
	build := exec.Command("go", "build", "-o", filepath.Join(dir, "mypt-backend-bigram"), "github.com/mypt/mypt/sdk/examples/bigram/cmd/mypt-backend-bigram")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build plugin: %v\n%s", err, out)
	}
	t.Setenv("MYPT_PLUGIN_PATH", dir)

	var out bytes.Buffer
	root := newRootCmd()
	root.SetOut(&out)
	root.SetArgs([]string{"backends", "--json", "--log-level", "warn"})
	if err := root.Execute(); err != nil {
		t.Fatal(err)
	}
	var reports []struct {
		Name  string
		Path  string
		Error string
		Info  struct {
			Name            string
			ProtocolVersion int
			Capabilities    struct{ Features []string }
		}
	}
	if err := json.Unmarshal(out.Bytes(), &reports); err != nil {
		t.Fatalf("decode %s: %v", out.String(), err)
	}
	var found bool
	for _, r := range reports {
		if r.Name != "bigram" {
			continue
		}
		found = true
		if r.Error != "" || r.Info.Name != "bigram" || r.Info.ProtocolVersion != 1 ||
			!strings.Contains(strings.Join(r.Info.Capabilities.Features, ","), "FEATURE_TRAINING") {
			t.Errorf("report = %+v", r)
		}
	}
	if !found {
		t.Fatalf("bigram plugin not listed: %s", out.String())
	}
}

package conformance_test

import (
	"os/exec"
	"strings"
	"testing"
)

// coreOnly are import-path prefixes that only mypt's trainer (core, cmd) and
// its backends pull in. A module that imports the conformance suite to
// certify its own backend must get none of them.
var coreOnly = []string{
	"github.com/mypt/mypt/core",
	"github.com/mypt/mypt/backends",
	"github.com/mypt/mypt/cmd",
	"github.com/knadh/koanf",
	"github.com/spf13/cobra",
	"github.com/spf13/pflag",
	"gonum.org/",
	"github.com/schollz/progressbar",
	"github.com/tiktoken-go/",
	"github.com/dlclark/regexp2",
	"github.com/edsrzf/mmap-go",
	"github.com/gomlx/",
	"github.com/ebitengine/purego",
}

// TestStandsAlone: the conformance suite depends on the SDK and its golden
// vectors only.
func TestStandsAlone(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "github.com/mypt/mypt/conformance").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	var mine []string
	for _, pkg := range strings.Fields(string(out)) {
		for _, prefix := range coreOnly {
			if pkg == prefix || strings.HasPrefix(pkg, strings.TrimSuffix(prefix, "/")+"/") {
				t.Errorf("conformance depends on %s", pkg)
			}
		}
		if strings.HasPrefix(pkg, "github.com/mypt/mypt/") {
			mine = append(mine, pkg)
		}
	}
	for _, pkg := range mine {
		if !strings.HasPrefix(pkg, "github.com/mypt/mypt/sdk") && !strings.HasPrefix(pkg, "github.com/mypt/mypt/conformance") {
			t.Errorf("conformance depends on %s, outside sdk/ and conformance/", pkg)
		}
	}
	t.Logf("mypt packages conformance depends on: %s", strings.Join(mine, ", "))
}

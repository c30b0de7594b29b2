// Package discovery finds backend plugin binaries: "--backend NAME" means the
// executable mypt-backend-NAME next to the mypt binary, else in each
// directory of MYPT_PLUGIN_PATH in order; a value containing a path
// separator is used as an explicit path.
package discovery

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// Prefix starts the file name of every backend plugin binary.
const Prefix = "mypt-backend-"

// PathEnv is the environment variable listing extra plugin directories.
const PathEnv = "MYPT_PLUGIN_PATH"

// Finder holds the places plugins are looked up, in priority order.
type Finder struct {
	// Dirs are searched in order; the first holds the mypt binary.
	Dirs []string
}

// New returns a Finder searching exeDir first, then the directories of
// pluginPath (an os.PathListSeparator-separated list, typically the value of
// MYPT_PLUGIN_PATH). Empty entries are skipped.
func New(exeDir, pluginPath string) Finder {
	var dirs []string
	if exeDir != "" {
		dirs = append(dirs, exeDir)
	}
	for _, d := range filepath.SplitList(pluginPath) {
		if d != "" {
			dirs = append(dirs, d)
		}
	}
	return Finder{Dirs: dirs}
}

// FromEnvironment returns the Finder for this process: the directory of the
// running executable, then MYPT_PLUGIN_PATH.
func FromEnvironment() Finder {
	exeDir := ""
	if exe, err := os.Executable(); err == nil {
		if resolved, err := filepath.EvalSymlinks(exe); err == nil {
			exe = resolved
		}
		exeDir = filepath.Dir(exe)
	}
	return New(exeDir, os.Getenv(PathEnv))
}

// Resolve turns a backend name or explicit path into the path of an
// executable plugin binary.
func (f Finder) Resolve(backend string) (string, error) {
	if backend == "" {
		return "", errors.New("no backend given")
	}
	if strings.ContainsRune(backend, os.PathSeparator) || strings.ContainsRune(backend, '/') {
		if err := checkExecutable(backend); err != nil {
			return "", fmt.Errorf("backend %q: %w", backend, err)
		}
		return backend, nil
	}
	file := Prefix + backend
	var tried []string
	for _, dir := range f.Dirs {
		p := filepath.Join(dir, file)
		err := checkExecutable(p)
		if err == nil {
			return p, nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("backend %q: %w", backend, err)
		}
		tried = append(tried, dir)
	}
	return "", fmt.Errorf("backend %q not found: no executable %s in %s (set %s or pass a path)",
		backend, file, strings.Join(tried, ", "), PathEnv)
}

// Plugin is one plugin binary found on the search path.
type Plugin struct {
	Name     string // the NAME in mypt-backend-NAME
	Path     string
	Shadowed bool // an earlier directory has a plugin of the same name, which wins
}

// List returns every plugin binary in the search directories, in search
// order, names sorted within a directory.
func (f Finder) List() ([]Plugin, error) {
	seen := map[string]bool{}
	var out []Plugin
	for _, dir := range f.Dirs {
		entries, err := os.ReadDir(dir)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("list plugins in %s: %w", dir, err)
		}
		sort.Slice(entries, func(i, j int) bool { return entries[i].Name() < entries[j].Name() })
		for _, e := range entries {
			name, ok := strings.CutPrefix(e.Name(), Prefix)
			if !ok || name == "" || e.IsDir() {
				continue
			}
			p := filepath.Join(dir, e.Name())
			if checkExecutable(p) != nil {
				continue
			}
			out = append(out, Plugin{Name: name, Path: p, Shadowed: seen[name]})
			seen[name] = true
		}
	}
	return out, nil
}

func checkExecutable(p string) error {
	st, err := os.Stat(p)
	if err != nil {
		return err
	}
	if st.IsDir() {
		return fmt.Errorf("%s is a directory", p)
	}
	if st.Mode().Perm()&0o111 == 0 {
		return fmt.Errorf("%s is not executable", p)
	}
	return nil
}

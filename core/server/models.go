package server

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"github.com/mypt/mypt/core/generate"
	"github.com/mypt/mypt/sdk"
)

// maxDepth is how deep below the models root checkpoints and runs are
// looked for (root/run, root/group/run, root/group/run/ckpt).
const maxDepth = 3

// errBadName is returned for model or run names that are not listed under
// the root.
var errBadName = errors.New("no such model or run under the models root")

// listDirs returns the slash-separated names, relative to root, of the
// directories up to maxDepth deep for which keep returns true. It does not
// descend into a kept directory, nor into hidden ones, and does not follow
// symbolic links.
func listDirs(root string, keep func(dir string) bool) ([]string, error) {
	var out []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if p == root {
				return err
			}
			return nil // unreadable subdirectory: skip
		}
		if p == root || !d.IsDir() {
			return nil
		}
		if strings.HasPrefix(d.Name(), ".") {
			return filepath.SkipDir
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return nil
		}
		if keep(p) {
			out = append(out, filepath.ToSlash(rel))
			return filepath.SkipDir
		}
		if strings.Count(filepath.ToSlash(rel), "/")+1 >= maxDepth {
			return filepath.SkipDir
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", root, err)
	}
	sort.Strings(out)
	return out, nil
}

func isModelDir(dir string) bool {
	_, err := generate.ResolveCheckpoint(dir)
	return err == nil
}

// resolveName maps a listed name to its directory under root. The name must
// be a clean, relative, slash-separated path naming a directory that keep
// accepts, and after resolving symbolic links it must still lie inside root.
func resolveName(root, name string, keep func(string) bool) (string, error) {
	if name == "" || len(name) > 512 || strings.ContainsAny(name, "\\\x00") ||
		path.Clean(name) != name || !filepath.IsLocal(filepath.FromSlash(name)) || strings.HasPrefix(name, ".") {
		return "", fmt.Errorf("%w: %q", errBadName, name)
	}
	for _, part := range strings.Split(name, "/") {
		if strings.HasPrefix(part, ".") {
			return "", fmt.Errorf("%w: %q", errBadName, name)
		}
	}
	absRoot, err := filepath.EvalSymlinks(root)
	if err != nil {
		return "", fmt.Errorf("models root: %w", err)
	}
	dir, err := filepath.EvalSymlinks(filepath.Join(absRoot, filepath.FromSlash(name)))
	if err != nil {
		return "", fmt.Errorf("%w: %q", errBadName, name)
	}
	if rel, err := filepath.Rel(absRoot, dir); err != nil || !filepath.IsLocal(rel) {
		return "", fmt.Errorf("%w: %q", errBadName, name)
	}
	if st, err := os.Stat(dir); err != nil || !st.IsDir() || !keep(dir) {
		return "", fmt.Errorf("%w: %q", errBadName, name)
	}
	return dir, nil
}

// loaded is a model loaded into its own backend plugin process. mu
// serialises requests to it.
type loaded struct {
	mu     sync.Mutex
	client *sdk.Client
	model  *generate.Model
	err    error
	ready  chan struct{}
}

// modelCache starts one plugin per model on first use and keeps it.
type modelCache struct {
	backend string // plugin path
	log     *slog.Logger

	mu     sync.Mutex
	models map[string]*loaded // by directory
	closed bool
}

// get returns the loaded model for dir, starting its plugin if needed. A
// failed load is not cached.
func (c *modelCache) get(ctx context.Context, dir string) (*loaded, error) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, errors.New("server is shutting down")
	}
	l, ok := c.models[dir]
	if !ok {
		l = &loaded{ready: make(chan struct{})}
		c.models[dir] = l
		c.mu.Unlock()
		l.client, l.model, l.err = c.load(context.WithoutCancel(ctx), dir)
		close(l.ready)
		if l.err != nil {
			c.mu.Lock()
			delete(c.models, dir)
			c.mu.Unlock()
		}
		return l, l.err
	}
	c.mu.Unlock()
	select {
	case <-l.ready:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return l, l.err
}

func (c *modelCache) load(ctx context.Context, dir string) (*sdk.Client, *generate.Model, error) {
	c.log.Info("starting backend for model", "dir", dir, "backend", c.backend)
	client, err := sdk.Start(ctx, c.backend, sdk.StartOptions{Logger: c.log})
	if err != nil {
		return nil, nil, fmt.Errorf("start backend: %w", err)
	}
	m, err := generate.Load(ctx, dir, client)
	if err != nil {
		client.Close()
		return nil, nil, fmt.Errorf("load model: %w", err)
	}
	return client, m, nil
}

// close stops every plugin.
func (c *modelCache) close() {
	c.mu.Lock()
	c.closed = true
	ms := c.models
	c.models = nil
	c.mu.Unlock()
	for _, l := range ms {
		<-l.ready
		if l.client != nil {
			l.mu.Lock()
			l.client.Close()
			l.mu.Unlock()
		}
	}
}

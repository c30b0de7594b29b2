// Package xla is mypt's XLA backend: the GPT-2 / LLaMA style transformer of backends/cpu
// written as a GoMLX (v0.25.0) graph, differentiated by GoMLX's reverse-mode autodiff and
// compiled by XLA through PJRT (github.com/gomlx/gopjrt). With a PJRT plugin (a .so such as
// JAX's CUDA plugin) it runs on that device; without one it runs the very same graphs on
// GoMLX's pure-Go simplego engine, which is how CI tests it.
//
// Parameters, gradients and AdamW moments live as engine tensors (device memory under
// PJRT). Every call is one compiled program: forward+backward with in-graph gradient
// accumulation, evaluation, clipping+AdamW, KV-cache prefill and decode; each compiles once
// per input shape (batch, seq_len, cache capacity) and is cached. The RPC shell
// (validation, state streams, step count, cache table) is sdk/backendkit's; this package
// holds the engine and the maths. See docs/XLA.md.
package xla

import (
	"log/slog"
	"os"

	"github.com/mypt/mypt/sdk/backendkit"
)

// Version is the backend's own semantic version.
const Version = "0.2.0"

// Options configure the backend.
type Options struct {
	// PJRTPlugin is the path of a PJRT plugin .so to run on; empty runs GoMLX's pure-Go
	// simplego engine.
	PJRTPlugin string
	// Logger receives diagnostics; nil means slog.Default().
	Logger *slog.Logger
}

// OptionsFromEnv reads the plugin path from $PJRT_PLUGIN_LIBRARY_PATH.
func OptionsFromEnv() Options {
	return Options{PJRTPlugin: os.Getenv(PluginEnv)}
}

// New returns an XLA backend; the engine starts on first use.
func New(opts Options) *backendkit.Backend {
	l := opts.Logger
	if l == nil {
		l = slog.Default()
	}
	return backendkit.New(&engine{opts: opts, log: l})
}

// Package conformance certifies a mypt backend: the protocol contract
// (handshake, GetInfo, call order, status codes naming the field, state
// streams, Shutdown), numerics against the committed PyTorch golden vectors
// (golden/), loss-mask semantics, packing, gradient accumulation,
// determinism and dropout, the KV cache, state portability to and from the
// CPU reference backend, and robustness when the plugin process dies.
//
// Every check is named ("numerics/f32/llama_tied/gradients") and passes,
// fails, or is skipped because the backend does not declare the capability
// it needs in GetInfo; numerical tolerances depend on the compute dtype
// (DefaultTolerances). Every check belongs to a Profile (core, training,
// kv-cache, packed, dropout, deterministic, frozen, portability, bf16, f16);
// the report certifies each declared profile none of whose checks failed,
// and fails a backend that certifies no profile mypt can use (core).
//
// Run runs the suite as subtests of a Go test against a plugin binary
// started as real processes through sdk.Start; Certify runs it and returns a
// Report, which is what `mypt conformance --backend NAME` prints.
// RunBackend and CertifyBackend do the same for a backend in process (the
// checks that need a separate process are skipped, saying so).
//
// The package depends on the SDK (sdk/...) and its golden vectors only, so
// a third-party backend's module can import it without mypt's trainer.
// docs/CONFORMANCE.md lists every check, its tolerance and what it protects
// against.
package conformance

// Package conformance certifies a mypt backend plugin: the protocol contract
// (handshake, GetInfo, call order, status codes naming the field, state
// streams, Shutdown), numerics against the committed PyTorch golden vectors
// (golden/), loss-mask semantics, packing, gradient accumulation,
// determinism and dropout, the KV cache, checkpoint portability to and from
// the CPU reference backend, and robustness when the plugin process dies.
//
// Every check is named ("numerics/f32/llama_tied/gradients") and passes,
// fails, or is skipped because the backend does not declare the capability
// it needs in GetInfo; numerical tolerances depend on the compute dtype
// (DefaultTolerances).
//
// Run runs the suite as subtests of a Go test; Certify runs it and returns a
// Report, which is what `mypt conformance --backend NAME` prints. Both start
// the plugin binary as a real process through sdk.Start. docs/CONFORMANCE.md
// lists every check, its tolerance and what it protects against.
package conformance

package conformance

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/mypt/mypt/conformance/golden"
	"github.com/mypt/mypt/sdk"
	"github.com/mypt/mypt/sdk/discovery"
	pb "github.com/mypt/mypt/sdk/proto/backendv1"
)

func (s *suite) protocolChecks() []check {
	return []check{
		{"protocol/handshake", ProfileCore, checkHandshake},
		{"protocol/getinfo", ProfileCore, checkGetInfo},
		{"protocol/out-of-order/before-configure", ProfileCore, checkBeforeConfigure},
		{"protocol/out-of-order/after-shutdown", ProfileCore, checkAfterShutdown},
		{"protocol/out-of-order/kv-cache", ProfileKVCache, checkCacheLifecycle},
		{"protocol/invalid-argument/configure", ProfileCore, checkInvalidConfigure},
		{"protocol/invalid-argument/batch", ProfileCore, checkInvalidBatch},
		{"protocol/invalid-argument/optimizer-step", ProfileTraining, checkInvalidStep},
		{"protocol/invalid-argument/kv-cache", ProfileKVCache, checkInvalidCache},
		{"protocol/invalid-argument/state", ProfileCore, checkInvalidState},
		{"protocol/state/round-trip", ProfileCore, checkStateRoundTrip},
		{"protocol/state/partial-update", ProfileCore, checkStatePartial},
		{"protocol/state/convert-bf16", ProfileCore, checkStateConvert},
		{"protocol/state/large", ProfileCore, checkStateLarge},
		{"protocol/undeclared-features", ProfileCore, checkUndeclared},
		{"protocol/configure-resets", ProfileCore, checkConfigureResets},
		{"protocol/shutdown", ProfileCore, checkShutdown},
	}
}

// expectErr checks that err carries one of the codes and, when field is set,
// that the status message starts with that field path (the protocol's
// "batch.tokens[17]: ..." convention).
func (c *chk) expectErr(what string, err error, field string, want ...codes.Code) bool {
	c.Helper()
	if err == nil {
		c.Errorf("%s: succeeded, want %v", what, want)
		return false
	}
	code, msg := statusOf(err)
	if !slices.Contains(want, code) {
		c.Errorf("%s: got %v (%s), want %v", what, code, firstLineOf(msg), want)
		return false
	}
	if field != "" && !namesField(msg, field) {
		c.Errorf("%s: %v message %q does not start with the field path %q", what, code, firstLineOf(msg), field)
		return false
	}
	c.refusals++
	return true
}

// namesField reports whether msg starts with field followed by a non-name
// character (so "batch.tokens[5]" does not match "batch.tokens[51]").
func namesField(msg, field string) bool {
	rest, ok := strings.CutPrefix(msg, field)
	if !ok {
		return false
	}
	if rest == "" || strings.HasSuffix(field, ".") {
		return true
	}
	r := rest[0]
	return !(r == '_' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9')
}

func firstLineOf(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

// ---- handshake and GetInfo

func checkHandshake(c *chk) {
	plugin := c.needProcess("the go-plugin handshake")
	start := time.Now()
	cl, err := plugin.start(c.ctx)
	if err != nil {
		c.Fatalf("handshake: %v", err)
	}
	c.cleanup(func() { _ = cl.Close() })
	took := time.Since(start)
	info, err := cl.GetInfo(c.ctx, nil)
	c.must(err, "GetInfo right after the handshake")
	if info.GetProtocolVersion() != sdk.ProtocolVersion {
		c.Errorf("GetInfo.protocol_version = %d, but the handshake negotiated v%d", info.GetProtocolVersion(), sdk.ProtocolVersion)
	}
	if cl.Pid() <= 0 {
		c.Errorf("no plugin process id after the handshake")
	}
	c.summarize("started and handshaken in %s (pid %d)", took.Round(time.Millisecond), cl.Pid())
}

var (
	nameRE   = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]*$`)
	semverRE = regexp.MustCompile(`^v?(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)([-+][0-9A-Za-z.+-]+)?$`)
)

func checkGetInfo(c *chk) {
	b := c.backend()
	info, err := b.GetInfo(c.ctx, nil)
	c.must(err, "GetInfo")
	if !nameRE.MatchString(info.GetName()) {
		c.Errorf("name %q: want a short lower-case name (the NAME of mypt-backend-NAME)", info.GetName())
	}
	if file, ok := strings.CutPrefix(c.s.file, discovery.Prefix); c.s.file != "" && ok && file != info.GetName() {
		c.Errorf("name %q, but the plugin binary is %s: `--backend %s` would find it under another name", info.GetName(), c.s.file, file)
	}
	if !semverRE.MatchString(info.GetVersion()) {
		c.Errorf("version %q is not a semantic version (MAJOR.MINOR.PATCH)", info.GetVersion())
	}
	if info.GetProtocolVersion() != sdk.ProtocolVersion {
		c.Errorf("protocol_version = %d, want %d", info.GetProtocolVersion(), sdk.ProtocolVersion)
	}
	if strings.TrimSpace(info.GetEngine()) == "" {
		c.Errorf("engine is empty: say what executes the math (e.g. \"pure-go avx2\", \"xla-pjrt cuda\")")
	}
	if len(info.GetDevices()) == 0 {
		c.Errorf("devices is empty: list at least the device computing by default")
	}
	for i, d := range info.GetDevices() {
		if d.GetKind() == "" {
			c.Errorf("devices[%d].kind is empty", i)
		}
	}
	cp := info.GetCapabilities()
	if cp == nil {
		c.Fatalf("capabilities missing")
	}
	checkEnums(c, "pos_encodings", cp.GetPosEncodings())
	checkEnums(c, "mlp_types", cp.GetMlpTypes())
	checkEnums(c, "norm_types", cp.GetNormTypes())
	checkEnums(c, "param_dtypes", cp.GetParamDtypes())
	checkEnums(c, "compute_dtypes", cp.GetComputeDtypes())
	checkEnums(c, "features", cp.GetFeatures())
	if len(cp.GetPosEncodings()) == 0 || len(cp.GetMlpTypes()) == 0 || len(cp.GetNormTypes()) == 0 {
		c.Errorf("capabilities declare no architecture (pos_encodings %v, mlp_types %v, norm_types %v): no mypt model can run",
			cp.GetPosEncodings(), cp.GetMlpTypes(), cp.GetNormTypes())
	}
	if !slices.Contains(cp.GetParamDtypes(), pb.DType_DTYPE_F32) {
		c.Errorf("param_dtypes %v lacks F32: the core sends F32 master weights", cp.GetParamDtypes())
	}
	if len(cp.GetComputeDtypes()) == 0 {
		c.Errorf("compute_dtypes is empty")
	}
	if n := cp.GetMaxStateChunkBytes(); n != 0 && n < 64<<10 {
		c.Errorf("max_state_chunk_bytes = %d: the protocol asks for 0 (4 MiB) or at least 64 KiB", n)
	}
	for _, f := range []pb.Feature{pb.Feature_FEATURE_DROPOUT, pb.Feature_FEATURE_NEFTUNE, pb.Feature_FEATURE_GRADIENT_STATE} {
		if slices.Contains(cp.GetFeatures(), f) && !slices.Contains(cp.GetFeatures(), pb.Feature_FEATURE_TRAINING) {
			c.Errorf("declares %v without FEATURE_TRAINING", f)
		}
	}
	again, err := b.GetInfo(c.ctx, nil)
	c.must(err, "second GetInfo")
	if !proto.Equal(info, again) {
		c.Errorf("GetInfo changed between two calls")
	}
	var feats, dts []string
	for _, f := range cp.GetFeatures() {
		feats = append(feats, strings.ToLower(strings.TrimPrefix(f.String(), "FEATURE_")))
	}
	for _, d := range cp.GetComputeDtypes() {
		dts = append(dts, dtypeLabel(d))
	}
	summary := fmt.Sprintf("compute %s; features %s", strings.Join(dts, ","), strings.Join(feats, ","))
	if len(c.s.notes) > 0 {
		summary += fmt.Sprintf("; %d capability lists hold values unknown to this suite (ignored, see the notes)", len(c.s.notes))
	}
	c.summarize("%s", summary)
}

// checkEnums fails a capability list that holds the UNSPECIFIED value or a
// value twice. Values this suite does not know are a newer protocol's
// (enums only ever gain values): unknownEnumNotes reports them as notes.
func checkEnums[E protoEnum](c *chk, field string, vals []E) {
	c.Helper()
	seen := map[E]bool{}
	for _, v := range vals {
		if v == 0 {
			c.Errorf("capabilities.%s lists the UNSPECIFIED value", field)
		}
		if seen[v] {
			c.Errorf("capabilities.%s lists %v twice", field, v)
		}
		seen[v] = true
	}
}

// protoEnum is a generated protobuf enum type.
type protoEnum interface {
	~int32
	Descriptor() protoreflect.EnumDescriptor
}

// unknownEnumNotes lists the capability values this suite's protocol does not
// know: a newer backend's additions, which a host treats as absent.
func unknownEnumNotes(cp *pb.Capabilities) []string {
	var notes []string
	notes = appendUnknown(notes, "pos_encodings", cp.GetPosEncodings())
	notes = appendUnknown(notes, "mlp_types", cp.GetMlpTypes())
	notes = appendUnknown(notes, "norm_types", cp.GetNormTypes())
	notes = appendUnknown(notes, "param_dtypes", cp.GetParamDtypes())
	notes = appendUnknown(notes, "compute_dtypes", cp.GetComputeDtypes())
	notes = appendUnknown(notes, "features", cp.GetFeatures())
	notes = appendUnknown(notes, "optimizer_kinds", cp.GetOptimizerKinds())
	return notes
}

func appendUnknown[E protoEnum](notes []string, field string, vals []E) []string {
	var unknown []string
	for _, v := range vals {
		if v.Descriptor().Values().ByNumber(protoreflect.EnumNumber(v)) == nil {
			unknown = append(unknown, strconv.Itoa(int(v)))
		}
	}
	if len(unknown) == 0 {
		return notes
	}
	return append(notes, fmt.Sprintf("capabilities.%s lists %s, unknown to protocol v%d as this suite knows it (ignored: a newer backend's addition)",
		field, strings.Join(unknown, ", "), sdk.ProtocolVersion))
}

// ---- calls out of order

// outOfOrder issues every call that needs a configured session and expects
// FAILED_PRECONDITION (UNIMPLEMENTED is also accepted for calls whose
// feature the backend does not declare).
func outOfOrder(c *chk, b sdk.Backend, when string, handle uint64) {
	c.Helper()
	training := []codes.Code{codes.FailedPrecondition}
	if !c.has(pb.Feature_FEATURE_TRAINING) {
		training = append(training, codes.Unimplemented)
	}
	kv := []codes.Code{codes.FailedPrecondition}
	if !c.has(pb.Feature_FEATURE_KV_CACHE) {
		kv = append(kv, codes.Unimplemented)
	}
	batch := &pb.Batch{BatchSize: 1, SeqLen: 1, Tokens: []int32{0}, Targets: []int32{0}, LossWeights: []float32{1}}
	_, err := b.SetState(c.ctx, sdk.NewTensorList(0,
		sdk.F32Tensor("token_embedding_table.weight", pb.TensorRole_TENSOR_ROLE_PARAM, []int64{1, 1}, []float32{0})))
	c.expectErr("SetState "+when, err, "", codes.FailedPrecondition)
	err = b.GetState(c.ctx, &pb.GetStateRequest{}, &sdk.StateCollector{})
	c.expectErr("GetState "+when, err, "", codes.FailedPrecondition)
	_, err = b.ForwardBackward(c.ctx, &pb.ForwardBackwardRequest{Batch: batch, GradScale: 1})
	c.expectErr("ForwardBackward "+when, err, "", training...)
	_, err = b.OptimizerStep(c.ctx, &pb.OptimizerStepRequest{LearningRate: 1e-3})
	c.expectErr("OptimizerStep "+when, err, "", training...)
	_, err = b.Evaluate(c.ctx, &pb.EvaluateRequest{Batch: batch})
	c.expectErr("Evaluate "+when, err, "", codes.FailedPrecondition)
	_, err = b.Prefill(c.ctx, &pb.PrefillRequest{Tokens: []int32{0}})
	c.expectErr("Prefill "+when, err, "", kv...)
	// a handle cannot exist outside a session: it is both out of order and
	// unknown, so NOT_FOUND is accepted too
	handleCodes := append(slices.Clone(kv), codes.NotFound)
	_, err = b.Decode(c.ctx, &pb.DecodeRequest{CacheHandle: handle, Token: 0})
	c.expectErr("Decode "+when, err, "", handleCodes...)
	_, err = b.ReleaseCache(c.ctx, &pb.ReleaseCacheRequest{CacheHandle: handle})
	c.expectErr("ReleaseCache "+when, err, "", handleCodes...)
	if _, err := b.GetInfo(c.ctx, nil); err != nil {
		c.Errorf("GetInfo %s: %v (it is valid at any time)", when, err)
	}
}

func checkBeforeConfigure(c *chk) {
	b := c.fresh()
	outOfOrder(c, b, "before Configure", 1)
}

func checkAfterShutdown(c *chk) {
	g := c.anyCase("", nil)
	b := c.fresh() // a backend may refuse a second session after Shutdown
	c.openCase(b, g, c.s.primary)
	var handle uint64 = 1
	if c.has(pb.Feature_FEATURE_TRAINING) {
		c.forwardBackward(b, g.NewBatch(), g.GradScale(), 1)
	}
	if c.has(pb.Feature_FEATURE_KV_CACHE) {
		resp, err := b.Prefill(c.ctx, &pb.PrefillRequest{Tokens: g.NewBatch().Tokens[:2]})
		c.must(err, "Prefill")
		handle = resp.CacheHandle
	}
	c.must(b.Shutdown(c.ctx), "Shutdown")
	outOfOrder(c, b, "after Shutdown", handle)
}

func checkCacheLifecycle(c *chk) {
	c.need(pb.Feature_FEATURE_KV_CACHE)
	g := c.anyCase("", nil)
	b := c.backend()
	c.openCase(b, g, c.s.primary)
	V := int(g.Model.VocabSize)
	toks := g.NewBatch().Tokens
	p, err := b.Prefill(c.ctx, &pb.PrefillRequest{Tokens: toks[:2], Capacity: 3})
	c.must(err, "Prefill of 2 tokens, capacity 3")
	if p.CacheHandle == 0 {
		c.Errorf("Prefill returned cache handle 0 (handles are non-zero)")
	}
	if len(p.Logits) != V {
		c.Errorf("Prefill returned %d logits, want V = %d (last position only)", len(p.Logits), V)
	}
	d, err := b.Decode(c.ctx, &pb.DecodeRequest{CacheHandle: p.CacheHandle, Token: toks[2]})
	c.must(err, "Decode into the last free slot")
	if d.Length != 3 {
		c.Errorf("Decode length = %d, want 3", d.Length)
	}
	_, err = b.Decode(c.ctx, &pb.DecodeRequest{CacheHandle: p.CacheHandle, Token: toks[3]})
	c.expectErr("Decode into a full cache", err, "", codes.FailedPrecondition)
	p2, err := b.Prefill(c.ctx, &pb.PrefillRequest{Tokens: toks[:1]})
	c.must(err, "second Prefill")
	if p2.CacheHandle == p.CacheHandle {
		c.Errorf("two live caches share handle %d", p.CacheHandle)
	}
	_, err = b.ReleaseCache(c.ctx, &pb.ReleaseCacheRequest{CacheHandle: p.CacheHandle})
	c.must(err, "ReleaseCache")
	_, err = b.Decode(c.ctx, &pb.DecodeRequest{CacheHandle: p.CacheHandle, Token: toks[0]})
	c.expectErr("Decode on a released cache", err, "", codes.NotFound, codes.FailedPrecondition)
	_, err = b.ReleaseCache(c.ctx, &pb.ReleaseCacheRequest{CacheHandle: p.CacheHandle})
	c.expectErr("ReleaseCache of a released cache", err, "", codes.NotFound)
	unknown := p.CacheHandle + p2.CacheHandle + 1000
	_, err = b.Decode(c.ctx, &pb.DecodeRequest{CacheHandle: unknown, Token: toks[0]})
	c.expectErr("Decode on an unknown handle", err, "", codes.NotFound)
	_, err = b.ReleaseCache(c.ctx, &pb.ReleaseCacheRequest{CacheHandle: unknown})
	c.expectErr("ReleaseCache of an unknown handle", err, "", codes.NotFound)
	// the other cache is untouched
	d2, err := b.Decode(c.ctx, &pb.DecodeRequest{CacheHandle: p2.CacheHandle, Token: toks[1]})
	c.must(err, "Decode on the other cache after a release")
	if d2.Length != 2 {
		c.Errorf("the other cache's length = %d after one Decode, want 2", d2.Length)
	}
	_, err = b.ReleaseCache(c.ctx, &pb.ReleaseCacheRequest{CacheHandle: p2.CacheHandle})
	c.must(err, "ReleaseCache")
}

// ---- invalid arguments

func checkInvalidConfigure(c *chk) {
	g := c.anyCase("", nil)
	b := c.backend()
	try := func(what, field string, mod func(r *pb.ConfigureRequest), want ...codes.Code) {
		c.Helper()
		req := &pb.ConfigureRequest{Model: g.Spec(), Optimizer: g.OptimizerSpec(),
			Precision: &pb.Precision{ParamDtype: pb.DType_DTYPE_F32, ComputeDtype: c.s.primary}}
		mod(req)
		if len(want) == 0 {
			want = []codes.Code{codes.InvalidArgument}
		}
		_, err := b.Configure(c.ctx, req)
		c.expectErr("Configure with "+what, err, field, want...)
	}
	try("no model", "model", func(r *pb.ConfigureRequest) { r.Model = nil })
	try("vocab_size 0", "model.vocab_size", func(r *pb.ConfigureRequest) { r.Model.VocabSize = 0 })
	try("a parameter of the wrong shape", "model.params[1]", func(r *pb.ConfigureRequest) {
		r.Model.Params[1].Shape = append(slices.Clone(r.Model.Params[1].Shape[:len(r.Model.Params[1].Shape)-1]), 7)
	})
	try("a parameter name the architecture lacks", "model.params[2]", func(r *pb.ConfigureRequest) {
		r.Model.Params[2].Name = "blocks.0.no_such.weight"
	})
	try("a parameter missing", "model.params", func(r *pb.ConfigureRequest) {
		r.Model.Params = r.Model.Params[:len(r.Model.Params)-1]
	})
	try("a parameter listed twice", "model.params", func(r *pb.ConfigureRequest) {
		r.Model.Params = append(r.Model.Params, r.Model.Params[0])
	})
	try("n_embd not divisible by n_head", "model.", func(r *pb.ConfigureRequest) { r.Model.NHead = r.Model.NEmbd + 1 })
	for _, d := range []pb.DType{pb.DType_DTYPE_F64, pb.DType_DTYPE_F16, pb.DType_DTYPE_BF16} {
		if !slices.Contains(c.caps().GetComputeDtypes(), d) {
			try(fmt.Sprintf("an undeclared compute dtype (%v)", d), "precision.compute_dtype", func(r *pb.ConfigureRequest) {
				r.Precision.ComputeDtype = d
			}, codes.InvalidArgument, codes.Unimplemented)
			break
		}
	}
	// a valid Configure still works afterwards
	c.openCase(b, g, c.s.primary)
	ev := c.evaluate(b, g.NewBatch(), false)
	c.relClose("Evaluate loss_sum after rejected Configures", ev.LossSum, g.LossSum, c.s.opts.tolerances(c.s.primary).Loss, 1e-12)
}

// batchMutation is one malformed batch and the field it must be reported as.
type batchMutation struct {
	what, field string
	mod         func(b *pb.Batch)
}

func batchMutations(g *golden.Case, packed bool) []batchMutation {
	V := int32(g.Model.VocabSize)
	block := g.Model.BlockSize
	ms := []batchMutation{
		{"batch_size 0", "batch.batch_size", func(b *pb.Batch) { b.BatchSize = 0 }},
		{"seq_len 0", "batch.seq_len", func(b *pb.Batch) { b.SeqLen = 0 }},
		{"seq_len > block_size", "batch.seq_len", func(b *pb.Batch) {
			b.SeqLen = block + 1
			n := int(b.BatchSize) * int(b.SeqLen)
			b.Tokens, b.Targets, b.LossWeights = make([]int32, n), make([]int32, n), make([]float32, n)
			b.SegmentIds = nil
		}},
		{"tokens one short", "batch.tokens", func(b *pb.Batch) { b.Tokens = b.Tokens[:len(b.Tokens)-1] }},
		{"targets one short", "batch.targets", func(b *pb.Batch) { b.Targets = b.Targets[:len(b.Targets)-1] }},
		{"loss_weights one short", "batch.loss_weights", func(b *pb.Batch) { b.LossWeights = b.LossWeights[:len(b.LossWeights)-1] }},
		{"a token id = vocab_size", "batch.tokens[5]", func(b *pb.Batch) { b.Tokens[5] = V }},
		{"a token id ≫ vocab_size", "batch.tokens[6]", func(b *pb.Batch) { b.Tokens[6] = V + 100000 }},
		{"a negative token id", "batch.tokens[7]", func(b *pb.Batch) { b.Tokens[7] = -1 }},
		{"a target id = vocab_size under weight 1", "batch.targets[3]", func(b *pb.Batch) { b.Targets[3], b.LossWeights[3] = V, 1 }},
		{"a negative target id under weight 1", "batch.targets[4]", func(b *pb.Batch) { b.Targets[4], b.LossWeights[4] = -2, 1 }},
		{"a negative loss weight", "batch.loss_weights[6]", func(b *pb.Batch) { b.LossWeights[6] = -1 }},
		{"a NaN loss weight", "batch.loss_weights[6]", func(b *pb.Batch) { b.LossWeights[6] = float32(math.NaN()) }},
		{"an infinite loss weight", "batch.loss_weights[6]", func(b *pb.Batch) { b.LossWeights[6] = float32(math.Inf(1)) }},
	}
	if packed {
		ms = append(ms, batchMutation{"segment_ids one short", "batch.segment_ids", func(b *pb.Batch) {
			b.SegmentIds = make([]int32, len(b.Tokens)-1)
		}})
	}
	return ms
}

func checkInvalidBatch(c *chk) {
	g := c.anyCase("", nil)
	b := c.backend()
	c.openCase(b, g, c.s.primary)
	training := c.has(pb.Feature_FEATURE_TRAINING)
	for _, m := range batchMutations(g, c.has(pb.Feature_FEATURE_PACKED_SEGMENTS)) {
		batch := g.NewBatch()
		m.mod(batch)
		_, err := b.Evaluate(c.ctx, &pb.EvaluateRequest{Batch: batch})
		c.expectErr("Evaluate with "+m.what, err, m.field, codes.InvalidArgument)
		if training {
			_, err = b.ForwardBackward(c.ctx, &pb.ForwardBackwardRequest{Batch: batch, GradScale: 1})
			c.expectErr("ForwardBackward with "+m.what, err, m.field, codes.InvalidArgument)
		}
	}
	_, err := b.Evaluate(c.ctx, &pb.EvaluateRequest{})
	c.expectErr("Evaluate without a batch", err, "batch", codes.InvalidArgument)
	if training {
		_, err = b.ForwardBackward(c.ctx, &pb.ForwardBackwardRequest{GradScale: 1})
		c.expectErr("ForwardBackward without a batch", err, "batch", codes.InvalidArgument)
		for _, v := range []float64{math.NaN(), math.Inf(1)} {
			_, err = b.ForwardBackward(c.ctx, &pb.ForwardBackwardRequest{Batch: g.NewBatch(), GradScale: float32(v)})
			c.expectErr(fmt.Sprintf("ForwardBackward with grad_scale %v", v), err, "grad_scale", codes.InvalidArgument)
		}
	}
	// Rejected requests must leave nothing behind: the next valid call
	// computes the golden numbers, and nothing was accumulated.
	tol := c.s.opts.tolerances(c.s.primary)
	ev := c.evaluate(b, g.NewBatch(), false)
	c.relClose("Evaluate loss_sum after the rejected calls", ev.LossSum, g.LossSum, tol.Loss, 1e-12)
	if training && c.has(pb.Feature_FEATURE_GRADIENT_STATE) {
		st := c.grads(b)
		for _, k := range st.order {
			if i := firstNonZero(st.values[k]); i >= 0 {
				c.Errorf("rejected ForwardBackward calls left gradients behind: %s[%d] = %v", k.name, i, st.values[k][i])
				break
			}
		}
	}
}

func checkInvalidStep(c *chk) {
	c.need(pb.Feature_FEATURE_TRAINING)
	g := c.anyCase("", nil)
	b := c.backend()
	c.openCase(b, g, c.s.primary)
	c.forwardBackward(b, g.NewBatch(), g.GradScale(), 0)
	for _, m := range []struct {
		what, field string
		req         *pb.OptimizerStepRequest
	}{
		{"a NaN learning rate", "learning_rate", &pb.OptimizerStepRequest{LearningRate: math.NaN()}},
		{"a negative learning rate", "learning_rate", &pb.OptimizerStepRequest{LearningRate: -1e-3}},
		{"an infinite learning rate", "learning_rate", &pb.OptimizerStepRequest{LearningRate: math.Inf(1)}},
		{"a negative weight decay", "weight_decay", &pb.OptimizerStepRequest{LearningRate: 1e-3, WeightDecay: -0.1}},
		{"a NaN clip norm", "clip_norm", &pb.OptimizerStepRequest{LearningRate: 1e-3, ClipNorm: math.NaN()}},
	} {
		_, err := b.OptimizerStep(c.ctx, m.req)
		c.expectErr("OptimizerStep with "+m.what, err, m.field, codes.InvalidArgument)
	}
	// the rejected steps neither stepped nor dropped the gradients
	st := c.step(b, g.AdamW.LearningRate, g.AdamW.WeightDecay, g.AdamW.ClipNorm)
	if st.OptimizerSteps != 1 {
		c.Errorf("optimizer_steps = %d after rejected steps and one valid one, want 1", st.OptimizerSteps)
	}
	c.relClose("grad_norm after the rejected steps", st.GradNorm, g.AdamW.GradNorms[0], c.s.opts.tolerances(c.s.primary).StepLoss, 1e-12)
}

func checkInvalidCache(c *chk) {
	c.need(pb.Feature_FEATURE_KV_CACHE)
	g := c.anyCase("", nil)
	b := c.backend()
	c.openCase(b, g, c.s.primary)
	V := int32(g.Model.VocabSize)
	try := func(what, field string, req *pb.PrefillRequest, fields ...string) {
		c.Helper()
		_, err := b.Prefill(c.ctx, req)
		if len(fields) == 0 || err == nil {
			c.expectErr("Prefill with "+what, err, field, codes.InvalidArgument)
			return
		}
		_, msg := statusOf(err)
		for _, f := range append(fields, field) {
			if namesField(msg, f) {
				c.expectErr("Prefill with "+what, err, f, codes.InvalidArgument)
				return
			}
		}
		c.expectErr("Prefill with "+what, err, field, codes.InvalidArgument)
	}
	try("a token id = vocab_size", "tokens[1]", &pb.PrefillRequest{Tokens: []int32{0, V}})
	try("a negative token id", "tokens[0]", &pb.PrefillRequest{Tokens: []int32{-1, 0}})
	try("no tokens", "tokens", &pb.PrefillRequest{})
	try("capacity > block_size", "capacity", &pb.PrefillRequest{Tokens: []int32{0}, Capacity: g.Model.BlockSize + 1})
	try("a prompt longer than its capacity", "tokens", &pb.PrefillRequest{Tokens: []int32{0, 1, 2}, Capacity: 2}, "capacity")
	p, err := b.Prefill(c.ctx, &pb.PrefillRequest{Tokens: []int32{1, 2}})
	c.must(err, "Prefill")
	for _, tok := range []int32{V, -1} {
		_, err = b.Decode(c.ctx, &pb.DecodeRequest{CacheHandle: p.CacheHandle, Token: tok})
		c.expectErr(fmt.Sprintf("Decode of token %d", tok), err, "token", codes.InvalidArgument)
	}
	d, err := b.Decode(c.ctx, &pb.DecodeRequest{CacheHandle: p.CacheHandle, Token: 3})
	c.must(err, "Decode after rejected Decodes")
	if d.Length != 3 {
		c.Errorf("cache length = %d after a 2-token prompt, two rejected Decodes and one valid one, want 3", d.Length)
	}
	_, err = b.ReleaseCache(c.ctx, &pb.ReleaseCacheRequest{CacheHandle: p.CacheHandle})
	c.must(err, "ReleaseCache")
}

func checkInvalidState(c *chk) {
	g := c.anyCase("", nil)
	b := c.backend()
	c.openCase(b, g, c.s.primary)
	p0 := g.Model.Params[0]
	n0 := 1
	for _, d := range p0.Shape {
		n0 *= int(d)
	}
	wrongShape := []int64{p0.Shape[0] + 1}
	wrongShape = append(wrongShape, p0.Shape[1:]...)
	nw := n0 / int(p0.Shape[0]) * int(wrongShape[0])
	try := func(what string, t *sdk.Tensor, mention string, want codes.Code) {
		c.Helper()
		_, err := b.SetState(c.ctx, sdk.NewTensorList(0, t))
		if c.expectErr("SetState with "+what, err, "", want) {
			if _, msg := statusOf(err); !strings.Contains(msg, mention) {
				c.Errorf("SetState with %s: message %q does not name %q", what, msg, mention)
			}
		}
	}
	try("a tensor of the wrong shape", sdk.F32Tensor(p0.Name, pb.TensorRole_TENSOR_ROLE_PARAM, wrongShape, make([]float32, nw)),
		p0.Name, codes.InvalidArgument)
	try("a tensor name the model lacks", sdk.F32Tensor("blocks.99.no_such.weight", pb.TensorRole_TENSOR_ROLE_PARAM, p0.Shape, make([]float32, n0)),
		"blocks.99.no_such.weight", codes.NotFound)
	try("a gradient (read-only)", sdk.F32Tensor(p0.Name, pb.TensorRole_TENSOR_ROLE_GRAD, p0.Shape, make([]float32, n0)),
		p0.Name, codes.InvalidArgument)
	try("an unspecified role", sdk.F32Tensor(p0.Name, pb.TensorRole_TENSOR_ROLE_UNSPECIFIED, p0.Shape, make([]float32, n0)),
		p0.Name, codes.InvalidArgument)
	err := b.GetState(c.ctx, &pb.GetStateRequest{Names: []string{g.Model.Params[1].Name, "no.such.tensor"}}, &sdk.StateCollector{})
	if c.expectErr("GetState of an unknown name", err, "", codes.NotFound) {
		if _, msg := statusOf(err); !strings.Contains(msg, "no.such.tensor") {
			c.Errorf("GetState of an unknown name: message %q does not name it", msg)
		}
	}
	err = b.GetState(c.ctx, &pb.GetStateRequest{Roles: []pb.TensorRole{pb.TensorRole_TENSOR_ROLE_UNSPECIFIED}}, &sdk.StateCollector{})
	c.expectErr("GetState of the unspecified role", err, "roles[0]", codes.InvalidArgument)
}

// ---- state streams

// randomState fills every role of spec with reproducible values that include
// the awkward ones (signed zero, subnormals, extremes).
func randomState(spec *pb.ModelSpec, seed uint64, steps uint64, roles ...pb.TensorRole) *sdk.TensorList {
	rng := rand.New(rand.NewPCG(seed, 0x5eed))
	special := []float32{float32(math.Copysign(0, -1)), math.Float32frombits(1), 1e-40, -3.4e38, 3.4e38, 1e-30, 0.1}
	var ts []*sdk.Tensor
	for _, r := range roles {
		for _, p := range spec.Params {
			n := 1
			for _, d := range p.Shape {
				n *= int(d)
			}
			v := make([]float32, n)
			for i := range v {
				v[i] = float32(rng.NormFloat64())
				if r == pb.TensorRole_TENSOR_ROLE_ADAM_V {
					v[i] *= v[i]
				}
			}
			for i, x := range special {
				if i < n && (r != pb.TensorRole_TENSOR_ROLE_ADAM_V || x >= 0) {
					v[(i*7919)%n] = x
				}
			}
			ts = append(ts, sdk.F32Tensor(p.Name, r, slices.Clone(p.Shape), v))
		}
	}
	return sdk.NewTensorList(steps, ts...)
}

// replay returns a fresh reader over the tensors of l (a reader is consumed
// by the stream it feeds).
func replay(l *sdk.TensorList) *sdk.TensorList {
	return sdk.NewTensorList(l.Head.GetOptimizerSteps(), l.Tensors...)
}

// stateRoles are the roles of a GetState without roles: the parameters, and the Adam
// moments of a backend that trains.
func (c *chk) stateRoles() []pb.TensorRole {
	if !c.has(pb.Feature_FEATURE_TRAINING) {
		return []pb.TensorRole{pb.TensorRole_TENSOR_ROLE_PARAM}
	}
	return []pb.TensorRole{pb.TensorRole_TENSOR_ROLE_PARAM, pb.TensorRole_TENSOR_ROLE_ADAM_M, pb.TensorRole_TENSOR_ROLE_ADAM_V}
}

// lastStateRole is the role a check that updates or reads one role uses: the second
// Adam moment, or the parameters of a backend that does not train.
func (c *chk) lastStateRole() pb.TensorRole {
	roles := c.stateRoles()
	return roles[len(roles)-1]
}

// compareState checks that snap holds exactly want's tensors, bit for bit.
func (c *chk) compareState(what string, snap *stateSnapshot, want *sdk.TensorList) {
	c.Helper()
	if int(snap.header.GetTensorCount()) != len(snap.order) {
		c.Errorf("%s: header announced %d tensors, the stream carried %d", what, snap.header.GetTensorCount(), len(snap.order))
	}
	if len(snap.order) != len(want.Tensors) {
		c.Errorf("%s: %d tensors, want %d", what, len(snap.order), len(want.Tensors))
	}
	bad := 0
	for _, w := range want.Tensors {
		got, ok := snap.tensors[stateKey{w.Role, w.Name}]
		switch {
		case !ok:
			c.Errorf("%s: %v %s missing", what, w.Role, w.Name)
		case !slices.Equal(got.Shape, w.Shape):
			c.Errorf("%s: %v %s has shape %v, want %v", what, w.Role, w.Name, got.Shape, w.Shape)
		case got.DType != w.DType:
			c.Errorf("%s: %v %s has dtype %v, want %v", what, w.Role, w.Name, got.DType, w.DType)
		case !bytes.Equal(got.Data, w.Data):
			at := 0
			for at+4 <= len(w.Data) && bytes.Equal(got.Data[at:at+4], w.Data[at:at+4]) {
				at += 4
			}
			if bad++; bad <= 5 {
				c.Errorf("%s: %v %s differs from what was sent at element %d: %v, sent %v", what, w.Role, w.Name, at/4,
					f32At(got.Data, at), f32At(w.Data, at))
			}
		}
	}
}

func f32At(b []byte, off int) any {
	if off+4 > len(b) {
		return "(missing)"
	}
	return math.Float32frombits(binary.LittleEndian.Uint32(b[off:]))
}

func checkStateRoundTrip(c *chk) {
	g := c.anyCase("", nil)
	b := c.backend()
	spec := g.Spec()
	c.configure(b, spec, g.OptimizerSpec(), c.s.primary)
	want := randomState(spec, 1, 7, c.stateRoles()...)
	resp := c.setState(b, want)
	if int(resp.TensorsReceived) != len(want.Tensors) {
		c.Errorf("SetState: tensors_received = %d, want %d", resp.TensorsReceived, len(want.Tensors))
	}
	snap := c.getReq(b, &pb.GetStateRequest{})
	if snap.header.GetOptimizerSteps() != 7 {
		c.Errorf("GetState: optimizer_steps = %d, SetState sent 7", snap.header.GetOptimizerSteps())
	}
	c.compareState("GetState (default roles)", snap, want)
	// a subset, in any order
	names := []string{spec.Params[2].Name, spec.Params[0].Name}
	role := c.lastStateRole()
	sub := c.getReq(b, &pb.GetStateRequest{Roles: []pb.TensorRole{role}, Names: names})
	var subWant []*sdk.Tensor
	for _, t := range want.Tensors {
		if t.Role == role && slices.Contains(names, t.Name) {
			subWant = append(subWant, t)
		}
	}
	c.compareState(fmt.Sprintf("GetState(roles [%v], names %s)", role, strings.Join(names, ", ")), sub, sdk.NewTensorList(7, subWant...))
	c.summarize("%d tensors (with -0, subnormals and ±3.4e38) back bit-exact, optimizer_steps kept", len(want.Tensors))
}

func checkStatePartial(c *chk) {
	g := c.anyCase("", nil)
	b := c.backend()
	spec := g.Spec()
	c.configure(b, spec, g.OptimizerSpec(), c.s.primary)
	full := randomState(spec, 2, 3, c.stateRoles()...)
	c.setState(b, replay(full))
	if c.has(pb.Feature_FEATURE_TRAINING) && c.has(pb.Feature_FEATURE_GRADIENT_STATE) {
		c.setState(b, g.InitState())
		c.forwardBackward(b, g.NewBatch(), g.GradScale(), 0)
		c.setState(b, replay(full))
	}
	// one tensor of one role: everything else keeps its value
	p := spec.Params[1]
	role := c.lastStateRole()
	one := randomState(&pb.ModelSpec{Params: []*pb.ParamSpec{p}}, 3, 3, role)
	c.setState(b, one)
	var want []*sdk.Tensor
	for _, t := range full.Tensors {
		if t.Role == role && t.Name == p.Name {
			t = one.Tensors[0]
		}
		want = append(want, t)
	}
	c.compareState("GetState after updating one tensor", c.getReq(b, &pb.GetStateRequest{}), sdk.NewTensorList(3, want...))
	if c.has(pb.Feature_FEATURE_TRAINING) && c.has(pb.Feature_FEATURE_GRADIENT_STATE) {
		gs := c.grads(b)
		for _, k := range gs.order {
			if i := firstNonZero(gs.values[k]); i >= 0 {
				c.Errorf("SetState did not clear the accumulated gradients: %s[%d] = %v", k.name, i, gs.values[k][i])
				break
			}
		}
	}
	c.summarize("a one-tensor SetState changed that tensor only and cleared the gradients")
}

func checkStateConvert(c *chk) {
	g := c.anyCase("", nil)
	b := c.backend()
	spec := g.Spec()
	c.configure(b, spec, g.OptimizerSpec(), c.s.primary)
	want := randomState(spec, 4, 0, pb.TensorRole_TENSOR_ROLE_PARAM)
	c.setState(b, want)
	col := &sdk.StateCollector{}
	err := b.GetState(c.ctx, &pb.GetStateRequest{Roles: []pb.TensorRole{pb.TensorRole_TENSOR_ROLE_PARAM}, Dtype: pb.DType_DTYPE_BF16}, col)
	if code, _ := statusOf(err); code == codes.Unimplemented {
		c.Skipf("backend does not convert state to BF16: %v", err)
	}
	c.must(err, "GetState(dtype BF16)")
	got := map[string]*sdk.Tensor{}
	for _, t := range col.Tensors {
		got[t.Name] = t
	}
	for _, w := range want.Tensors {
		t, ok := got[w.Name]
		if !ok {
			c.Errorf("GetState(dtype BF16): %s missing", w.Name)
			continue
		}
		if t.DType != pb.DType_DTYPE_BF16 || len(t.Data) != len(w.Data)/2 {
			c.Errorf("GetState(dtype BF16): %s arrived as %v with %d bytes", w.Name, t.DType, len(t.Data))
			continue
		}
		for i := 0; i < len(w.Data)/4; i++ {
			f := math.Float32frombits(binary.LittleEndian.Uint32(w.Data[4*i:]))
			if h := binary.LittleEndian.Uint16(t.Data[2*i:]); h != sdk.F32ToBF16(f) {
				c.Errorf("GetState(dtype BF16): %s[%d] = %#04x, want %#04x (round to nearest even of %v)", w.Name, i, h, sdk.F32ToBF16(f), f)
				break
			}
		}
	}
	c.summarize("%d tensors converted to BF16 with round-to-nearest-even", len(want.Tensors))
}

// largeSize is a model whose tied embedding is a single tensor spanning
// three 4 MiB chunks.
var largeSize = modelSize{vocab: 40000, block: 16, layers: 1, heads: 2, embd: 64}

func checkStateLarge(c *chk) {
	g := c.anyCase("", nil)
	b := c.backend()
	spec := c.specLike(g, largeSize)
	c.configure(b, spec, nil, c.s.primary)
	want := randomState(spec, 5, 11, c.stateRoles()...)
	start := time.Now()
	c.setState(b, want)
	snap := c.getReq(b, &pb.GetStateRequest{})
	if snap.header.GetOptimizerSteps() != 11 {
		c.Errorf("GetState: optimizer_steps = %d, SetState sent 11", snap.header.GetOptimizerSteps())
	}
	c.compareState("large state round trip", snap, want)
	var total int
	for _, t := range want.Tensors {
		total += len(t.Data)
	}
	c.summarize("%.1f MB each way (largest tensor %.1f MB = %d chunks) in %s", float64(total)/1e6,
		float64(len(want.Tensors[0].Data))/1e6, (len(want.Tensors[0].Data)+sdk.MaxChunkBytes-1)/sdk.MaxChunkBytes,
		time.Since(start).Round(time.Millisecond))
	// free the memory before the next check
	c.configure(b, g.Spec(), g.OptimizerSpec(), c.s.primary)
}

// ---- undeclared features

// checkUndeclared asks for every optional behaviour the backend does not
// declare and expects a refusal (UNIMPLEMENTED, or INVALID_ARGUMENT), never
// silence: a backend that ignored segment ids or dropout would train a
// different model than the host asked for.
func checkUndeclared(c *chk) {
	g := c.anyCase("", nil)
	b := c.backend()
	refuse := []codes.Code{codes.Unimplemented, codes.InvalidArgument}
	var asked []string
	configure := func(what string, mod func(r *pb.ConfigureRequest)) {
		c.Helper()
		req := &pb.ConfigureRequest{Model: g.Spec(), Optimizer: g.OptimizerSpec(),
			Precision: &pb.Precision{ParamDtype: pb.DType_DTYPE_F32, ComputeDtype: c.s.primary}}
		mod(req)
		_, err := b.Configure(c.ctx, req)
		c.expectErr("Configure with "+what, err, "", refuse...)
		asked = append(asked, what)
	}
	if !c.has(pb.Feature_FEATURE_DETERMINISTIC) {
		configure("deterministic (FEATURE_DETERMINISTIC undeclared)", func(r *pb.ConfigureRequest) { r.Deterministic = true })
	}
	if !c.has(pb.Feature_FEATURE_DROPOUT) {
		configure("dropout 0.1 (FEATURE_DROPOUT undeclared)", func(r *pb.ConfigureRequest) { r.Model.Dropout = 0.1 })
	}
	if !c.has(pb.Feature_FEATURE_NEFTUNE) {
		configure("neftune_alpha 5 (FEATURE_NEFTUNE undeclared)", func(r *pb.ConfigureRequest) { r.Model.NeftuneAlpha = 5 })
	}
	if !c.has(pb.Feature_FEATURE_FROZEN_PARAMS) {
		req := &pb.ConfigureRequest{Model: g.Spec(), Optimizer: g.OptimizerSpec(),
			Precision: &pb.Precision{ParamDtype: pb.DType_DTYPE_F32, ComputeDtype: c.s.primary}}
		freezeMod(req)
		_, err := b.Configure(c.ctx, req)
		c.expectErr("Configure with frozen parameters (FEATURE_FROZEN_PARAMS undeclared)", err, "", codes.Unimplemented)
		asked = append(asked, "frozen parameters")
	}
	c.openCase(b, g, c.s.primary)
	if !c.has(pb.Feature_FEATURE_PACKED_SEGMENTS) {
		batch := g.NewBatch()
		batch.SegmentIds = make([]int32, len(batch.Tokens))
		for i := range batch.SegmentIds {
			batch.SegmentIds[i] = 1 + int32(i%int(batch.SeqLen))/4
		}
		_, err := b.Evaluate(c.ctx, &pb.EvaluateRequest{Batch: batch})
		c.expectErr("Evaluate with segment_ids (FEATURE_PACKED_SEGMENTS undeclared)", err, "", refuse...)
		if c.has(pb.Feature_FEATURE_TRAINING) {
			_, err = b.ForwardBackward(c.ctx, &pb.ForwardBackwardRequest{Batch: batch, GradScale: g.GradScale()})
			c.expectErr("ForwardBackward with segment_ids (FEATURE_PACKED_SEGMENTS undeclared)", err, "", refuse...)
		}
		asked = append(asked, "segment_ids")
	}
	if !c.has(pb.Feature_FEATURE_RETURN_LOGITS) {
		_, err := b.Evaluate(c.ctx, &pb.EvaluateRequest{Batch: g.NewBatch(), ReturnLogits: true})
		c.expectErr("Evaluate with return_logits (FEATURE_RETURN_LOGITS undeclared)", err, "", refuse...)
		asked = append(asked, "return_logits")
	}
	if !c.has(pb.Feature_FEATURE_GRADIENT_STATE) {
		err := b.GetState(c.ctx, &pb.GetStateRequest{Roles: []pb.TensorRole{pb.TensorRole_TENSOR_ROLE_GRAD}}, &sdk.StateCollector{})
		c.expectErr("GetState of gradients (FEATURE_GRADIENT_STATE undeclared)", err, "", refuse...)
		asked = append(asked, "gradient state")
	}
	if !c.has(pb.Feature_FEATURE_TRAINING) {
		_, err := b.ForwardBackward(c.ctx, &pb.ForwardBackwardRequest{Batch: g.NewBatch(), GradScale: g.GradScale()})
		c.expectErr("ForwardBackward (FEATURE_TRAINING undeclared)", err, "", codes.Unimplemented)
		_, err = b.OptimizerStep(c.ctx, &pb.OptimizerStepRequest{LearningRate: 1e-3})
		c.expectErr("OptimizerStep (FEATURE_TRAINING undeclared)", err, "", codes.Unimplemented)
		asked = append(asked, "training")
	}
	if !c.has(pb.Feature_FEATURE_KV_CACHE) {
		_, err := b.Prefill(c.ctx, &pb.PrefillRequest{Tokens: g.NewBatch().Tokens[:2]})
		c.expectErr("Prefill (FEATURE_KV_CACHE undeclared)", err, "", codes.Unimplemented)
		asked = append(asked, "KV cache")
	}
	if len(asked) == 0 {
		c.summarize("every optional feature is declared")
	} else {
		c.summarize("refused what it does not declare: %s", strings.Join(asked, ", "))
	}
}

// ---- session lifecycle

func checkConfigureResets(c *chk) {
	g := c.anyCase("", nil)
	b := c.backend()
	c.openCase(b, g, c.s.primary)
	var handle uint64
	if c.has(pb.Feature_FEATURE_TRAINING) {
		c.forwardBackward(b, g.NewBatch(), g.GradScale(), 0)
		c.step(b, g.AdamW.LearningRate, g.AdamW.WeightDecay, g.AdamW.ClipNorm)
		c.forwardBackward(b, g.NewBatch(), g.GradScale(), 0)
	}
	if c.has(pb.Feature_FEATURE_KV_CACHE) {
		p, err := b.Prefill(c.ctx, &pb.PrefillRequest{Tokens: g.NewBatch().Tokens[:2]})
		c.must(err, "Prefill")
		handle = p.CacheHandle
	}
	c.configure(b, g.Spec(), g.OptimizerSpec(), c.s.primary)
	roles := c.stateRoles()
	if c.has(pb.Feature_FEATURE_GRADIENT_STATE) {
		roles = append(roles, pb.TensorRole_TENSOR_ROLE_GRAD)
	}
	snap := c.get(b, roles...)
	if snap.header.GetOptimizerSteps() != 0 {
		c.Errorf("optimizer_steps = %d after a new Configure, want 0", snap.header.GetOptimizerSteps())
	}
	for _, k := range snap.order {
		if i := firstNonZero(snap.values[k]); i >= 0 {
			c.Errorf("%v %s[%d] = %v after a new Configure, want 0 (Configure discards the previous session; parameters are zero until SetState)",
				k.role, k.name, i, snap.values[k][i])
		}
	}
	if handle != 0 {
		_, err := b.Decode(c.ctx, &pb.DecodeRequest{CacheHandle: handle, Token: 0})
		c.expectErr("Decode on a cache of the previous session", err, "", codes.NotFound, codes.FailedPrecondition)
	}
}

func checkShutdown(c *chk) {
	g := c.anyCase("", nil)
	b := c.fresh()
	before, err := b.GetInfo(c.ctx, nil)
	c.must(err, "GetInfo")
	c.openCase(b, g, c.s.primary)
	c.must(b.Shutdown(c.ctx), "Shutdown")
	if err := b.Shutdown(c.ctx); err != nil {
		c.expectErr("a second Shutdown", err, "", codes.FailedPrecondition)
	}
	after, err := b.GetInfo(c.ctx, nil)
	c.must(err, "GetInfo after Shutdown")
	if !proto.Equal(before, after) {
		c.Errorf("GetInfo changed across Shutdown")
	}
	if c.s.src.exited(b) {
		c.Errorf("the plugin process exited on Shutdown; only the host's Close may stop it")
	}
	if c.s.inProcess() {
		c.summarize("Shutdown succeeds (twice); GetInfo still answers")
		return
	}
	c.summarize("Shutdown succeeds (twice); GetInfo still answers; the process stays up")
}

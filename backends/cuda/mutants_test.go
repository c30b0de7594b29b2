package cuda

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/mypt/mypt/backends/cpu"
	"github.com/mypt/mypt/backends/cuda/device"
	"github.com/mypt/mypt/backends/cuda/kernels"
	"github.com/mypt/mypt/conformance"
	"github.com/mypt/mypt/sdk"
	"github.com/mypt/mypt/sdk/backendkit"
	"github.com/mypt/mypt/sdk/modelspec"
	pb "github.com/mypt/mypt/sdk/proto/backendv1"
)

// Mutation testing of the emulated suite (issue 14): copies of kernels.cu with a planted
// bug each, run on the emulated device, must fail the checks below — a subset of the
// conformance suite, a cross-check against the CPU backend at sizes the golden cases do
// not reach, and a bf16 rounding check of the device's products. A mutant that no longer
// compiles counts as caught; one whose source equals kernels.cu's is reported as not
// applicable (kernels.cu lacks the code it mutates), never as caught.

// edit is one textual change to kernels.cu: old replaced by new wherever it occurs, n
// times (a count, atLeastOnce or anyNumber), so that a mutant cannot silently stop
// mutating when kernels.cu changes. apply, when set, replaces the literal replacement and
// returns the new source and the number of changes.
type edit struct {
	old, new string
	n        int
	apply    func(src string) (string, int)
}

// Counts of an edit other than an exact one.
const (
	atLeastOnce = -1
	anyNumber   = -2 // none included: code kernels.cu may not have yet
)

// mutant is a planted bug.
type mutant struct {
	name  string
	edits []edit
}

func once(old, new string) edit { return edit{old: old, new: new, n: 1} }

// mutants are the three and bugs of the kinds the golden cases' small shapes (T ≤ 16:
// one attention tile; V ≤ 96 and C ≤ 48: one pass of every strided loop; ≤ 60,240
// parameters: one pass of sumsq's grid stride) or loose tolerances could let through.
var mutants = []mutant{
	// the issue's
	{"every __syncthreads() removed", []edit{{old: "__syncthreads();", new: "", n: atLeastOnce}}},
	// kernels.cu has no warp shuffles yet: this mutant is identical to it (reported, not
	// counted) until kernels use them, and must be caught from then on.
	{"warp shuffles return the lane's own value", []edit{{n: anyNumber, apply: shufflesOwnValue}}},
	{"expf 0.1 % high", []edit{{old: "expf(", new: "1.001f * expf(", n: atLeastOnce}}},
	// attention
	{"causal mask drops the diagonal", []edit{once("return j <= r + qoff &&", "return j < r + qoff &&")}},
	{"attn_fwd skips the last key", []edit{once("jj < ATT_BK && j0 + jj < Tk; jj++", "jj < ATT_BK && j0 + jj < Tk - 1; jj++")}},
	{"attn_fwd loads key tile rows from tile 0", []edit{once(
		"const float* kp = k + (long long)(b * Tk + jt) * skv + h * hd;",
		"const float* kp = k + (long long)(b * Tk + (int)threadIdx.x) * skv + h * hd;")}},
	{"attn_bwd_dkv loads query tile rows from tile 0", []edit{once(
		"const float* qp = q + (long long)(b * T + it) * sq + h * hd;",
		"const float* qp = q + (long long)(b * T + (int)threadIdx.x) * sq + h * hd;")}},
	{"attn_bwd_dq skips a key tile starting at the block's last query", []edit{once(
		"for (int j0 = 0; j0 <= lastQ; j0 += ATT_BK)", "for (int j0 = 0; j0 < lastQ; j0 += ATT_BK)")}},
	{"kv_append writes keys from cache row 0", []edit{once(
		"kc[(long long)(pos0 + i) * C + c]", "kc[(long long)i * C + c]")}},
	// gradients that overwrite instead of accumulating, or go missing
	{"norm_bwd_dw drops the bias gradient", []edit{once("if (db) db[j] += sb;", "if (db) (void)sb;")}},
	{"col_sum_add overwrites the bias gradient", []edit{once("db[j] += s;", "db[j] = s;")}},
	{"embed_bwd overwrites the table gradient", []edit{once("dst[j] += s;", "dst[j] = s;")}},
	{"rope backward rotates forward", []edit{once("  if (inverse) s = -s;\n", "")}},
	// backward-only numerics, 0.1 % off
	{"xent gradient 0.1 % high", []edit{once("x[j] = live ? f * expf(x[j] - mx)", "x[j] = live ? f * 1.001f * expf(x[j] - mx)")}},
	{"gelu_bwd pdf 0.1 % high", []edit{once("float pdf = 0.39894228040143267794f * expf", "float pdf = 0.39894228040143267794f * 1.001f * expf")}},
	// randomness
	{"dropout hash: site and index swapped", []edit{once("splitmix(seed ^ splitmix((site << 48) ^ i))", "splitmix(seed ^ splitmix((i << 48) ^ site))")}},
	{"attn_bwd_dq dropout mask transposed", []edit{once(
		"if (thr) dpv *= dropScale(seed, site, ((u64)(bh * T + r)) * T + j, thr, keep);",
		"if (thr) dpv *= dropScale(seed, site, ((u64)(bh * T + j)) * T + r, thr, keep);")}},
	// optimizer
	{"adamw without the second-moment bias correction", []edit{once("float denom = sqrtf(vi) / bc2Sqrt + eps;", "float denom = sqrtf(vi) + eps;")}},
	{"sumsq strides by a block, not the grid", []edit{once("i += (long long)gridDim.x * blockDim.x", "i += blockDim.x")}},
	// bf16 products
	{"cast_bf16 rounds half up", []edit{once("else bits += 0x7FFFu + ((bits >> 16) & 1u);", "else bits += 0x8000u;")}},
}

// shuffleCall matches the start of a warp shuffle call.
var shuffleCall = regexp.MustCompile(`__shfl(?:_up|_down|_xor)?_sync\s*\(`)

// shufflesOwnValue replaces every warp shuffle __shfl[_up|_down|_xor]_sync(mask, v, …)
// in src by (v): each lane keeps its own value. It returns the new source and the number
// of calls replaced.
func shufflesOwnValue(src string) (string, int) {
	var b strings.Builder
	n := 0
	for {
		loc := shuffleCall.FindStringIndex(src)
		if loc == nil {
			break
		}
		args, end := callArgs(src, loc[1])
		if len(args) < 2 {
			b.WriteString(src[:loc[1]]) // not a call we understand: left alone
			src = src[loc[1]:]
			continue
		}
		b.WriteString(src[:loc[0]] + "(" + strings.TrimSpace(args[1]) + ")")
		src = src[end:]
		n++
	}
	b.WriteString(src)
	return b.String(), n
}

// callArgs splits the arguments of a call whose '(' ends at start, at the commas outside
// nested brackets, and returns them and the index past the closing ')' (nil if there is
// none).
func callArgs(src string, start int) ([]string, int) {
	var args []string
	depth, from := 0, start
	for i := start; i < len(src); i++ {
		switch src[i] {
		case '(', '[', '{':
			depth++
		case ')', ']', '}':
			if depth == 0 {
				return append(args, src[from:i]), i + 1
			}
			depth--
		case ',':
			if depth == 0 {
				args = append(args, src[from:i])
				from = i + 1
			}
		}
	}
	return nil, start
}

// mutate applies m's edits to src.
func (m mutant) mutate(src string) (string, error) {
	for _, e := range m.edits {
		var n int
		if e.apply != nil {
			src, n = e.apply(src)
		} else {
			n = strings.Count(src, e.old)
			src = strings.ReplaceAll(src, e.old, e.new)
		}
		if e.n >= 0 && n != e.n || e.n == atLeastOnce && n == 0 {
			want := fmt.Sprint(e.n)
			if e.n == atLeastOnce {
				want = "at least 1"
			}
			return "", fmt.Errorf("%q occurs %d times in kernels.cu, want %s: update the mutant to what the kernels say now", e.old, n, want)
		}
	}
	return src, nil
}

func TestShufflesOwnValue(t *testing.T) {
	src := "float a = __shfl_xor_sync(0xffffffffu, fmaxf(x, y[i]), 1, 16) + __shfl_sync(m, v, 0);\n" +
		"int b = __shfl_down_sync (full, (int)z, 2);"
	got, n := shufflesOwnValue(src)
	if want := "float a = (fmaxf(x, y[i])) + (v);\nint b = ((int)z);"; got != want || n != 3 {
		t.Errorf("shufflesOwnValue:\n%s (%d)\nwant\n%s (3)", got, n, want)
	}
	if got, n := shufflesOwnValue(kernels.Source); n != strings.Count(kernels.Source, "__shfl") || (n == 0) != (got == kernels.Source) {
		t.Errorf("kernels.cu: %d shuffles replaced, %d calls", n, strings.Count(kernels.Source, "__shfl"))
	}
}

// mutantCache is where the mutants' emulator libraries are cached (by source hash).
func mutantCache(t testing.TB) string {
	if d, err := os.UserCacheDir(); err == nil {
		return filepath.Join(d, "mypt", "cuda")
	}
	return t.TempDir()
}

// mutantBackend returns backends on emulated devices built from src (already compiled),
// each with a device of its own. A backend whose device was closed (Shutdown) cannot
// reopen one: its Device option names none, so it fails rather than fall back to kernels.cu.
func mutantBackend(src, cache string) func() sdk.Backend {
	return func() sdk.Backend {
		d, err := device.NewEmulated(device.EmulatedOptions{Source: src, CacheDir: cache})
		e := &engine{opts: Options{Device: "mutant (closed)", Logger: slog.New(slog.DiscardHandler)}}
		if err == nil {
			e.dev = d
		}
		return backendkit.New(e)
	}
}

// mutantChecks are the conformance checks each mutant runs (F32): the golden numerics of
// a packed GPT-2 case, the gradients of a packed LLaMA case (RoPE, SwiGLU, RMSNorm), a KV
// cache, and gradient accumulation.
var mutantChecks = []string{
	"numerics/f32/gpt2_packed/logits", "numerics/f32/gpt2_packed/gradients", "numerics/f32/gpt2_packed/adamw",
	"numerics/f32/llama_untied_bias_packed/gradients",
	"kvcache/f32/gpt2_packed",
	"accumulation/f32/gpt2_untied_bias",
}

// failure is a check a source failed, and the first thing it found wrong.
type failure struct{ check, detail string }

// catch runs every check on backends from newBackend and the device d (built from the
// same source), and returns the failures.
func catch(ctx context.Context, newBackend func() sdk.Backend, d *device.Emulated) []failure {
	var failed []failure
	rep, err := conformance.CertifyBackend(ctx, newBackend, conformance.Options{
		DTypes:       []pb.DType{pb.DType_DTYPE_F32},
		Filter:       func(name string) bool { return slices.Contains(mutantChecks, name) },
		NewReference: func() sdk.Backend { return cpu.New(cpu.Options{Threads: 2}) },
	})
	if err != nil {
		failed = append(failed, failure{"conformance", err.Error()})
	} else {
		for _, r := range rep.Results {
			if r.Status == conformance.StatusFail {
				failed = append(failed, failure{r.Name, firstLine(r.Reason)})
			}
		}
	}
	if f := crossCheck(ctx, newBackend); len(f) > 0 {
		failed = append(failed, failure{"cross-check vs CPU", strings.Join(f, "; ")})
	}
	if f := bf16Ties(d); f != "" {
		failed = append(failed, failure{"bf16 ties", f})
	}
	return failed
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return s
}

// The emulated suite catches every mutant of kernels.cu: kernels.cu itself passes every
// check, and each mutant fails at least one (or does not compile). The log says which
// checks caught which mutant.
func TestMutantsCaught(t *testing.T) {
	if _, err := device.EmulatorCompiler(""); err != nil {
		t.Fatalf("no emulated device (make test needs clang-19 or g++): %v", err)
	}
	if testing.Short() {
		t.Skip("compiles and runs one emulated device per mutant")
	}
	ctx := context.Background()
	cache := mutantCache(t)
	type built struct {
		src string
		dev *device.Emulated
		err error
		dur time.Duration
	}
	// Compile the next mutant while the current one runs.
	sources := []string{kernels.Source}
	for _, m := range mutants {
		src, err := m.mutate(kernels.Source)
		if err != nil {
			t.Fatalf("mutant %q: %v", m.name, err)
		}
		sources = append(sources, src)
	}
	results := make([]chan built, len(sources))
	for i := range results {
		results[i] = make(chan built, 1)
	}
	go func() {
		for i, src := range sources {
			if i > 0 && src == kernels.Source {
				results[i] <- built{src: src}
				continue
			}
			start := time.Now()
			d, err := device.NewEmulated(device.EmulatedOptions{Source: src, CacheDir: cache})
			results[i] <- built{src, d, err, time.Since(start)}
		}
	}()
	var caught, na int
	for i := range sources {
		b := <-results[i]
		name := "kernels.cu"
		if i > 0 {
			name = mutants[i-1].name
		}
		switch {
		case i > 0 && b.src == kernels.Source:
			t.Logf("%s: not applicable, identical to kernels.cu", name)
			na++
			continue
		case b.err != nil && i == 0:
			t.Fatalf("kernels.cu on the emulated device: %v", b.err)
		case b.err != nil:
			t.Logf("%s: caught, does not compile (%s)", name, firstLine(b.err.Error()))
			caught++
			continue
		}
		start := time.Now()
		failed := catch(ctx, mutantBackend(b.src, cache), b.dev)
		_ = b.dev.Close()
		took := fmt.Sprintf("(build %.1fs, checks %.1fs)", b.dur.Seconds(), time.Since(start).Seconds())
		var checks, details []string
		for _, f := range failed {
			checks = append(checks, f.check)
			details = append(details, f.check+": "+f.detail)
		}
		if i == 0 {
			if len(failed) > 0 {
				t.Fatalf("kernels.cu itself fails the mutants' checks %s:\n%s", took, strings.Join(details, "\n"))
			}
			t.Logf("%s passes every check %s", name, took)
			continue
		}
		if len(failed) == 0 {
			t.Errorf("mutant %q survives every check %s", name, took)
			continue
		}
		caught++
		t.Logf("%s: caught by %s %s\n\t%s", name, strings.Join(checks, ", "), took, strings.Join(details, "\n\t"))
	}
	t.Logf("%d of %d mutants caught, %d not applicable", caught, len(mutants)-na, na)
}

// ---- the cross-check against the CPU backend

// The emulated backend (kernels.cu, random schedule) equals the CPU backend's float32
// arithmetic at sizes past the golden cases' (crossSpec, crossBatch): logits, the KV
// cache, loss and gradients with dropout and NEFTune, gradient norm and Adam moments.
func TestEmulatedMatchesCPUPastGoldenSizes(t *testing.T) {
	if _, err := device.EmulatorCompiler(""); err != nil {
		t.Fatalf("no emulated device (make test needs clang-19 or g++): %v", err)
	}
	b := func() sdk.Backend { return New(Options{Device: "emulated", Schedule: "random:7"}) }
	if failed := crossCheck(context.Background(), b); len(failed) > 0 {
		t.Errorf("the emulated backend differs from the CPU backend:\n%s", strings.Join(failed, "\n"))
	}
}

// crossSpec is a GPT-2 model past the golden cases' sizes: vocabulary 300 and width 64
// (the strided loops of the row kernels run more than once), 144,940 parameters (sumsq's
// grid stride of 65,536 elements), untied head with bias, dropout and NEFTune.
func crossSpec() *pb.ModelSpec {
	a := modelspec.Arch{VocabSize: 300, BlockSize: 96, NLayer: 2, NHead: 2, NEmbd: 64, MLPHidden: 256,
		LearnedPos: true, LayerNorm: true, Bias: true, LMHeadBias: true, NormEps: 1e-5, Dropout: 0.1, NeftuneAlpha: 5}
	return a.Spec(func(t modelspec.Tensor) bool { return len(t.Shape) > 1 })
}

// crossInit is a fixed initialisation of spec: weights N(0, 0.05²), norm gains near 1,
// biases near 0 (non-zero, so their gradients and products matter).
func crossInit(spec *pb.ModelSpec) *sdk.TensorList {
	rng := rand.New(rand.NewPCG(14, 3))
	var ts []*sdk.Tensor
	for _, p := range spec.Params {
		n := 1
		for _, d := range p.Shape {
			n *= int(d)
		}
		v := make([]float32, n)
		for i := range v {
			v[i] = float32(rng.NormFloat64() * 0.05)
			if len(p.Shape) == 1 && strings.HasSuffix(p.Name, ".weight") {
				v[i]++
			}
		}
		ts = append(ts, sdk.F32Tensor(p.Name, pb.TensorRole_TENSOR_ROLE_PARAM, p.Shape, v))
	}
	return sdk.NewTensorList(0, ts...)
}

// crossBatch is one row of 65 tokens (three blocks of 32 queries, the last holding one:
// its key tile starts at its last query) packed into three segments, a few zero loss
// weights.
func crossBatch() *pb.Batch {
	const T = 65
	rng := rand.New(rand.NewPCG(14, 4))
	b := &pb.Batch{BatchSize: 1, SeqLen: T}
	for i := range T {
		b.Tokens = append(b.Tokens, int32(rng.IntN(300)))
		b.Targets = append(b.Targets, int32(rng.IntN(300)))
		w := float32(1)
		if i%11 == 3 {
			w = 0
		}
		b.LossWeights = append(b.LossWeights, w)
		b.SegmentIds = append(b.SegmentIds, int32(1+min(i/25, 2)))
	}
	return b
}

// crossRun is what the cross-check compares.
type crossRun struct {
	evalLoss, fbLoss, gradNorm float64
	logits, cached             []float32
	grads, adamM, adamV        map[string][]float32
}

// crossRunOn runs the cross-check's calls on b: Evaluate (logits); a KV cache prefilled
// with 64 tokens and 2 decodes (at positions 64 and 65: a key tile starting at the query);
// ForwardBackward with dropout and NEFTune (loss, gradients); an AdamW step with clipping
// (gradient norm, both moments — not the parameters, which Adam's first step moves by
// lr·sign(g), flipping with the rounding of tiny gradients).
func crossRunOn(ctx context.Context, b sdk.Backend) (r crossRun, err error) {
	spec, batch := crossSpec(), crossBatch()
	defer func() { _ = b.Shutdown(ctx) }()
	if _, err = b.Configure(ctx, &pb.ConfigureRequest{Model: spec, Optimizer: &pb.OptimizerSpec{Beta1: 0.9, Beta2: 0.95, Eps: 1e-8},
		MaxBatchSize: batch.BatchSize, MaxSeqLen: batch.SeqLen}); err != nil {
		return r, err
	}
	if _, err = b.SetState(ctx, crossInit(spec)); err != nil {
		return r, err
	}
	ev, err := b.Evaluate(ctx, &pb.EvaluateRequest{Batch: batch, ReturnLogits: true})
	if err != nil {
		return r, err
	}
	r.evalLoss, r.logits = ev.LossSum, ev.Logits
	pf, err := b.Prefill(ctx, &pb.PrefillRequest{Tokens: batch.Tokens[:64], Capacity: 66, AllLogits: true})
	if err != nil {
		return r, err
	}
	r.cached = pf.Logits
	for _, tok := range batch.Tokens[64:66] {
		d, err := b.Decode(ctx, &pb.DecodeRequest{CacheHandle: pf.CacheHandle, Token: tok})
		if err != nil {
			return r, err
		}
		r.cached = append(r.cached, d.Logits...)
	}
	var ws float64
	for _, w := range batch.LossWeights {
		ws += float64(w)
	}
	fb, err := b.ForwardBackward(ctx, &pb.ForwardBackwardRequest{Batch: batch, GradScale: float32(1 / ws), DropoutSeed: 77})
	if err != nil {
		return r, err
	}
	r.fbLoss = fb.LossSum
	if r.grads, err = stateOf(ctx, b, pb.TensorRole_TENSOR_ROLE_GRAD); err != nil {
		return r, err
	}
	st, err := b.OptimizerStep(ctx, &pb.OptimizerStepRequest{LearningRate: 1e-2, WeightDecay: 0.1, ClipNorm: 0.5})
	if err != nil {
		return r, err
	}
	r.gradNorm = st.GradNorm
	if r.adamM, err = stateOf(ctx, b, pb.TensorRole_TENSOR_ROLE_ADAM_M); err != nil {
		return r, err
	}
	r.adamV, err = stateOf(ctx, b, pb.TensorRole_TENSOR_ROLE_ADAM_V)
	return r, err
}

// stateOf returns b's tensors of one role by name.
func stateOf(ctx context.Context, b sdk.Backend, role pb.TensorRole) (map[string][]float32, error) {
	w := &sdk.StateCollector{}
	if err := b.GetState(ctx, &pb.GetStateRequest{Roles: []pb.TensorRole{role}}, w); err != nil {
		return nil, err
	}
	out := map[string][]float32{}
	for _, x := range w.Tensors {
		v, err := sdk.F32Values(x.Data)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", x.Name, err)
		}
		out[x.Name] = v
	}
	return out, nil
}

// crossTol bounds the cross-check's comparisons: both backends compute in float32 with the
// same dropout masks, so they agree to summation order — far tighter than the
// conformance tolerances against float64 PyTorch, tight enough for 0.1 % errors in a
// gradient. kernels.cu measured: logits 9e-7 (KV cache 8e-7), gradients and moments 1.3e-6
// of their tensor's largest element, losses 8e-10 and the gradient norm 2e-8 relative.
var crossTol = struct {
	logits, grads, adamV conformance.Tolerance
	scalar               float64
}{
	logits: conformance.Tolerance{Atol: 1e-5, Rtol: 1e-5},
	grads:  conformance.Tolerance{AtolOfMax: 1e-5, Rtol: 1e-4},
	adamV:  conformance.Tolerance{AtolOfMax: 2e-5, Rtol: 2e-4},
	scalar: 1e-6,
}

var cpuCross struct {
	run crossRun
	err error
	ok  bool
}

// crossCheck compares a run on newBackend with one on the CPU backend (computed once),
// and returns what differs.
func crossCheck(ctx context.Context, newBackend func() sdk.Backend) []string {
	if !cpuCross.ok {
		cpuCross.run, cpuCross.err = crossRunOn(ctx, cpu.New(cpu.Options{Threads: 2}))
		cpuCross.ok = true
	}
	if cpuCross.err != nil {
		return []string{"the CPU backend: " + cpuCross.err.Error()}
	}
	want := cpuCross.run
	got, err := crossRunOn(ctx, newBackend())
	if err != nil {
		return []string{err.Error()}
	}
	var failed []string
	scalar := func(what string, g, w float64) {
		if e := conformance.RelErr(g, w, 1e-12); !(e <= crossTol.scalar) {
			failed = append(failed, fmt.Sprintf("%s %v, CPU %v (rel. error %.2g)", what, g, w, e))
		}
	}
	near := func(what string, g, w []float32, tol conformance.Tolerance) {
		if f := compare(g, w, tol); f != "" {
			failed = append(failed, what+": "+f)
		}
	}
	scalar("Evaluate loss", got.evalLoss, want.evalLoss)
	scalar("ForwardBackward loss (dropout)", got.fbLoss, want.fbLoss)
	scalar("gradient norm", got.gradNorm, want.gradNorm)
	near("logits", got.logits, want.logits, crossTol.logits)
	near("KV-cache logits", got.cached, want.cached, crossTol.logits)
	for _, name := range slices.Sorted(maps.Keys(want.grads)) {
		near("gradient "+name, got.grads[name], want.grads[name], crossTol.grads)
	}
	for _, name := range slices.Sorted(maps.Keys(want.adamM)) {
		near("Adam m "+name, got.adamM[name], want.adamM[name], crossTol.grads)
		near("Adam v "+name, got.adamV[name], want.adamV[name], crossTol.adamV)
	}
	if len(failed) > 3 {
		failed = append(failed[:3], fmt.Sprintf("… %d more", len(failed)-3))
	}
	return failed
}

// compare is conformance.AssertClose's bound without a testing.T: "" when every element
// of got is within tol of want.
func compare(got, want []float32, tol conformance.Tolerance) string {
	if len(got) != len(want) {
		return fmt.Sprintf("%d values, want %d", len(got), len(want))
	}
	var wantMax float64
	for _, w := range want {
		wantMax = math.Max(wantMax, math.Abs(float64(w)))
	}
	for i := range want {
		d := math.Abs(float64(got[i]) - float64(want[i]))
		if bound := tol.Atol + tol.AtolOfMax*wantMax + tol.Rtol*math.Abs(float64(want[i])); !(d <= bound) {
			return fmt.Sprintf("[%d] = %v, want %v (error %.3g, bound %.3g)", i, got[i], want[i], d, bound)
		}
	}
	return ""
}

// ---- bf16 rounding of the device's products

// bf16Ties runs a BF16 product on d whose inputs are exact bf16 ties (x + half an ulp):
// cast_bf16 must round them to nearest even. It returns "" or what went wrong.
func bf16Ties(d *device.Emulated) string {
	const m, n, k = 4, 4, 8
	a, b := make([]float32, m*k), make([]float32, k*n)
	for i := range a {
		a[i] = 1 + float32(2*i+1)/256 // 1 + (2i+1)·2⁻⁸: halfway between two bf16 values
	}
	for i := range b {
		b[i] = -(1 + float32(2*i+1)/256)
	}
	rne := func(f float32) float64 { // ties to even: the one whose last bf16 bit is 0
		bits := math.Float32bits(f)
		lo := bits &^ 0xffff
		if bits&0xffff == 0x8000 && lo>>16&1 == 1 {
			lo += 0x10000
		}
		return float64(math.Float32frombits(lo))
	}
	d.SetBF16(true)
	defer d.SetBF16(false)
	var ptrs [3]device.Ptr
	for i, v := range [][]float32{a, b, make([]float32, m*n)} {
		p, err := d.Alloc(4 * len(v))
		if err != nil {
			return err.Error()
		}
		defer d.Free(p)
		if err := d.HtoD(p, unsafe.Slice((*byte)(unsafe.Pointer(&v[0])), 4*len(v))); err != nil {
			return err.Error()
		}
		ptrs[i] = p
	}
	if err := d.Gemm(device.Gemm{M: m, N: n, K: k, Alpha: 1, A: ptrs[0], B: ptrs[1], C: ptrs[2], LDA: k, LDB: n, LDC: n}); err != nil {
		return err.Error()
	}
	c := make([]float32, m*n)
	if err := d.DtoH(unsafe.Slice((*byte)(unsafe.Pointer(&c[0])), 4*len(c)), ptrs[2]); err != nil {
		return err.Error()
	}
	for i := range m {
		for j := range n {
			var s float64
			for p := range k {
				s += rne(a[i*k+p]) * rne(b[p*n+j])
			}
			if got := float64(c[i*n+j]); math.Abs(got-s) > 1e-6*math.Abs(s) {
				return fmt.Sprintf("C[%d][%d] = %v, want %v (inputs rounded to nearest even)", i, j, got, s)
			}
		}
	}
	return ""
}

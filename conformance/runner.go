package conformance

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/mypt/mypt/conformance/golden"
	"github.com/mypt/mypt/sdk"
	"github.com/mypt/mypt/sdk/discovery"
	pb "github.com/mypt/mypt/sdk/proto/backendv1"
)

// checkTimeout bounds one check, whatever the backend does.
const checkTimeout = 5 * time.Minute

// check is one named conformance check and the profile it certifies.
type check struct {
	name    string
	profile Profile
	run     func(c *chk)
}

// suite is one conformance run against one backend.
type suite struct {
	src     source // where the backends under test come from
	label   string // how messages name the backend under test
	file    string // the plugin's file name, which errors must name ("" in process)
	opts    Options
	log     *slog.Logger
	info    *pb.GetInfoResponse
	notes   []string       // what the report notes without failing (unknown enum values)
	golden  []*golden.Case // in name order
	simple  []*golden.Case // unpacked all-ones cases first: what single-case checks use
	dtypes  []pb.DType     // compute dtypes the numerical checks run in
	primary pb.DType       // the dtype of checks that run once

	mu     sync.Mutex
	shared sdk.Backend // backend reused across checks; dropped after a failure

	refOnce  sync.Once
	ref      source
	refLabel string
	refErr   error
}

// newSuite starts one backend from src, asks for its GetInfo and keeps it as
// the shared backend. label names the backend under test in messages; file
// is the plugin's file name ("" in process); opts went through withDefaults.
func newSuite(ctx context.Context, src source, label, file string, opts Options) (*suite, error) {
	cases, err := loadGolden()
	if err != nil {
		return nil, fmt.Errorf("conformance: golden vectors: %w", err)
	}
	s := &suite{src: src, label: label, file: file, opts: opts, log: opts.Logger, golden: cases}
	s.simple = slices.Clone(cases)
	slices.SortStableFunc(s.simple, func(a, b *golden.Case) int { return complexity(a) - complexity(b) })
	b, err := src.open(ctx)
	if err != nil {
		return nil, err
	}
	info, err := b.GetInfo(ctx, nil)
	if err != nil {
		src.discard(b)
		return nil, fmt.Errorf("GetInfo: %w", err)
	}
	s.shared, s.info = b, info
	s.notes = unknownEnumNotes(info.GetCapabilities())
	s.dtypes = opts.DTypes
	if len(s.dtypes) == 0 {
		declared := info.GetCapabilities().GetComputeDtypes()
		for _, d := range []pb.DType{pb.DType_DTYPE_F32, pb.DType_DTYPE_BF16, pb.DType_DTYPE_F16} {
			if slices.Contains(declared, d) {
				s.dtypes = append(s.dtypes, d)
			}
		}
		if len(s.dtypes) == 0 {
			s.dtypes = []pb.DType{pb.DType_DTYPE_F32} // its checks skip, saying why
		}
	}
	s.primary = s.dtypes[0]
	return s, nil
}

// withDefaults fills in the logger and timeouts Options leaves zero.
func withDefaults(opts Options) Options {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.StartTimeout == 0 {
		opts.StartTimeout = 30 * time.Second
	}
	if opts.CallTimeout == 0 {
		opts.CallTimeout = 2 * time.Minute
	}
	return opts
}

// newPluginSuite is a suite over the plugin binary at path.
func newPluginSuite(ctx context.Context, path string, opts Options) (*suite, error) {
	opts = withDefaults(opts)
	file := filepath.Base(path)
	return newSuite(ctx, newPluginSource(path, opts.Env, opts, opts.Logger), file, file, opts)
}

// newInProcessSuite is a suite over the backends newBackend returns.
func newInProcessSuite(ctx context.Context, newBackend func() sdk.Backend, opts Options) (*suite, error) {
	s, err := newSuite(ctx, inProcessSource{newBackend}, "the backend under test", "", withDefaults(opts))
	if err != nil {
		return nil, err
	}
	if name := s.info.GetName(); name != "" {
		s.label = name + " (in process)"
	}
	return s, nil
}

// inProcess reports whether the backends under test live in this process.
func (s *suite) inProcess() bool {
	_, ok := s.src.(inProcessSource)
	return ok
}

func (s *suite) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.shared != nil {
		_ = s.src.close(s.shared)
		s.shared = nil
	}
}

// dropShared stops the shared backend so the next check starts a clean one
// (after a failure it may hold any state, or be hung).
func (s *suite) dropShared() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.shared != nil {
		s.src.discard(s.shared)
		s.shared = nil
	}
}

// reference resolves the CPU reference backend once: Options.NewReference in
// process, else the reference plugin found like --backend.
func (s *suite) reference() (source, string, error) {
	s.refOnce.Do(func() {
		if s.opts.NewReference != nil {
			s.ref, s.refLabel = inProcessSource{s.opts.NewReference}, "in process (Options.NewReference)"
			return
		}
		name := s.opts.ReferencePlugin
		if name == "" {
			name = "cpu"
		}
		path, err := discovery.FromEnvironment().Resolve(name)
		if err != nil {
			s.refErr = err
			return
		}
		s.ref, s.refLabel = newPluginSource(path, nil, s.opts, s.log), path
	})
	return s.ref, s.refLabel, s.refErr
}

// plan lists every check, in the order they run.
func (s *suite) plan() []check {
	var all []check
	all = append(all, s.protocolChecks()...)
	for _, d := range s.dtypes {
		all = append(all, s.numericsChecks(d)...)
	}
	for _, d := range s.dtypes {
		all = append(all, s.semanticsChecks(d)...)
	}
	for _, d := range s.dtypes {
		all = append(all, s.headChecks(d)...)
	}
	all = append(all, s.randomnessChecks()...)
	for _, d := range s.dtypes {
		all = append(all, s.portabilityChecks(d)...)
	}
	all = append(all, s.robustnessChecks()...)
	all = groupByTop(all)
	if s.opts.Filter != nil {
		all = slices.DeleteFunc(all, func(c check) bool { return !s.opts.Filter(c.name) })
	}
	return all
}

// groupByTop orders checks so each top-level group ("lossmask", ...) is
// contiguous — its dtypes together — keeping the groups' first-appearance
// order and the order within each: Run's subtest tree then has one node per
// group, so `go test -run 'TestX/lossmask/bf16'` selects what it says.
func groupByTop(checks []check) []check {
	var order []string
	byTop := map[string][]check{}
	for _, ck := range checks {
		top, _, _ := strings.Cut(ck.name, "/")
		if _, seen := byTop[top]; !seen {
			order = append(order, top)
		}
		byTop[top] = append(byTop[top], ck)
	}
	out := make([]check, 0, len(checks))
	for _, top := range order {
		out = append(out, byTop[top]...)
	}
	return out
}

// Run runs every conformance check against the plugin binary at pluginPath,
// each as a subtest of t named by its path ("protocol/handshake",
// "numerics/f32/llama_tied/gradients", ...). A check the backend's declared
// capabilities rule out is skipped with the reason. At the end it logs the
// profiles the backend is certified for, and fails t when the backend
// certifies no profile mypt can use (core).
func Run(t *testing.T, pluginPath string, opts Options) {
	t.Helper()
	s, err := newPluginSuite(t.Context(), pluginPath, opts)
	if err != nil {
		t.Fatalf("conformance: %v", err)
	}
	runSuite(t, s)
}

// RunBackend is Run for a backend in this process: newBackend returns a new,
// unconfigured backend (a backend built in process, or an *sdk.Client from
// sdktesting.Connect) and is called again wherever a check needs a fresh
// one. The checks that need a separate plugin process (the handshake,
// killing the process mid-step) are skipped, saying so; Run covers them on
// the built plugin. Options.NewReference gives the portability checks an
// in-process reference.
func RunBackend(t *testing.T, newBackend func() sdk.Backend, opts Options) {
	t.Helper()
	s, err := newInProcessSuite(t.Context(), newBackend, opts)
	if err != nil {
		t.Fatalf("conformance: %v", err)
	}
	runSuite(t, s)
}

func runSuite(t *testing.T, s *suite) {
	t.Helper()
	defer s.close()
	for _, n := range s.notes {
		t.Logf("note: %s", n)
	}
	plan := s.plan()
	statuses := make(map[string]Status, len(plan))
	runTree(t, s, plan, 0, statuses)
	var results []Result
	for _, ck := range plan {
		if st, ok := statuses[ck.name]; ok {
			results = append(results, Result{Name: ck.name, Status: st})
		}
	}
	cert := certifyProfiles(s.info.GetCapabilities(), plan, results)
	var sb strings.Builder
	writeProfiles(&sb, cert)
	t.Logf("profiles:\n%s", sb.String())
	if cert.unusable != "" {
		t.Errorf("conformance: the backend certifies no profile mypt can use: %s", cert.unusable)
	}
}

// runTree runs checks as nested subtests, one level per name segment, and
// records each check's status.
func runTree(t *testing.T, s *suite, checks []check, depth int, statuses map[string]Status) {
	t.Helper()
	for i := 0; i < len(checks); {
		parts := strings.Split(checks[i].name, "/")
		if depth == len(parts)-1 {
			ck := checks[i]
			t.Run(parts[depth], func(t *testing.T) {
				defer func() { statuses[ck.name] = subtestStatus(t) }()
				if line := s.runCheck(t.Context(), t, ck).summaryLine(); line != "" {
					t.Log(line)
				}
			})
			i++
			continue
		}
		head := parts[depth]
		j := i
		for j < len(checks) {
			p := strings.Split(checks[j].name, "/")
			if depth >= len(p)-1 || p[depth] != head {
				break
			}
			j++
		}
		group := checks[i:j]
		t.Run(head, func(t *testing.T) { runTree(t, s, group, depth+1, statuses) })
		i = j
	}
}

// subtestStatus is a finished subtest's outcome.
func subtestStatus(t *testing.T) Status {
	switch {
	case t.Failed():
		return StatusFail
	case t.Skipped():
		return StatusSkip
	}
	return StatusPass
}

// Certify runs every conformance check against the plugin binary at
// pluginPath and returns the report; it is what `mypt conformance` runs. The
// error is for problems of the run itself (the golden vectors); a plugin that
// cannot even be started is a failed "protocol/handshake" in the report.
func Certify(ctx context.Context, pluginPath string, opts Options) (*Report, error) {
	return certify(ctx, pluginPath, "protocol/handshake", opts, func() (*suite, error) {
		return newPluginSuite(ctx, pluginPath, opts)
	})
}

// CertifyBackend is Certify for a backend in this process (see RunBackend):
// a newBackend that panics or a GetInfo that fails is a failed
// "protocol/getinfo" in the report.
func CertifyBackend(ctx context.Context, newBackend func() sdk.Backend, opts Options) (*Report, error) {
	return certify(ctx, "", "protocol/getinfo", opts, func() (*suite, error) {
		return newInProcessSuite(ctx, newBackend, opts)
	})
}

// certify runs the suite newSuite builds; startCheck names the check that
// fails when the first backend cannot be started or described.
func certify(ctx context.Context, plugin, startCheck string, opts Options, newSuite func() (*suite, error)) (*Report, error) {
	started := time.Now()
	rep := &Report{Plugin: plugin, Started: started}
	if _, err := loadGolden(); err != nil {
		return nil, fmt.Errorf("conformance: golden vectors: %w", err)
	}
	s, err := newSuite()
	if err != nil {
		fail := check{name: startCheck, profile: ProfileCore}
		rep.add(Result{Name: startCheck, Status: StatusFail, Reason: err.Error(), Duration: time.Since(started)})
		rep.certify(nil, []check{fail})
		rep.Seconds = time.Since(started).Seconds()
		return rep, nil
	}
	defer s.close()
	rep.Backend, rep.Version, rep.Engine = s.info.GetName(), s.info.GetVersion(), s.info.GetEngine()
	if raw, err := protojson.Marshal(s.info); err == nil {
		rep.Info = raw
	}
	rep.Notes = s.notes
	for _, d := range s.dtypes {
		rep.DTypes = append(rep.DTypes, dtypeLabel(d))
	}
	if _, label, err := s.reference(); err == nil {
		rep.Reference = label
	}
	plan := s.plan()
	for i, ck := range plan {
		res := Result{Name: ck.name, Status: StatusSkip}
		if ctx.Err() != nil {
			res.Reason = "run interrupted: " + ctx.Err().Error()
		} else {
			res = s.runRecorded(ctx, ck)
		}
		rep.add(res)
		if opts.Progress != nil {
			opts.Progress(i+1, len(plan), rep.Results[len(rep.Results)-1])
		}
	}
	rep.certify(s.info.GetCapabilities(), plan)
	rep.Seconds = time.Since(started).Seconds()
	return rep, nil
}

func (s *suite) runRecorded(ctx context.Context, ck check) Result {
	rec := &recorder{}
	start := time.Now()
	summary := s.runCheck(ctx, rec, ck).summaryLine()
	res := Result{Name: ck.name, Duration: time.Since(start), Details: rec.logs}
	if summary != "" {
		res.Details = append([]string{summary}, rec.logs...)
	}
	switch {
	case rec.failed:
		res.Status, res.Reason = StatusFail, strings.Join(rec.errs, "\n")
	case rec.skipped:
		res.Status, res.Reason = StatusSkip, rec.skipReason
	default:
		res.Status = StatusPass
	}
	return res
}

// runCheck runs one check; Fatalf and Skipf leave it early (through
// runtime.Goexit under testing, a stopCheck panic under Certify). A panic of
// the check — or of an in-process backend under it — fails the check alone.
func (s *suite) runCheck(ctx context.Context, rep reporter, ck check) (c *chk) {
	ctx, cancel := context.WithTimeout(ctx, checkTimeout)
	c = &chk{reporter: rep, ctx: ctx, s: s}
	defer func() {
		if p := recover(); p != nil {
			if _, stop := p.(stopCheck); !stop {
				rep.Errorf("check panicked: %v\n%s", p, debug.Stack())
			}
		}
		cancel()
		for i := len(c.cleanups) - 1; i >= 0; i-- {
			c.cleanups[i]()
		}
		if rep.Failed() {
			s.dropShared()
		}
	}()
	ck.run(c)
	return c
}

// reporter is what a check reports through: a *testing.T under Run, a
// recorder under Certify.
type reporter interface {
	Helper()
	Logf(format string, args ...any)
	Errorf(format string, args ...any)
	Fatalf(format string, args ...any)
	Skipf(format string, args ...any)
	Failed() bool
}

// stopCheck unwinds a recorded check on Fatalf or Skipf.
type stopCheck struct{}

type recorder struct {
	failed, skipped bool
	errs, logs      []string
	skipReason      string
}

func (r *recorder) Helper()      {}
func (r *recorder) Failed() bool { return r.failed }
func (r *recorder) Logf(format string, args ...any) {
	r.logs = append(r.logs, fmt.Sprintf(format, args...))
}
func (r *recorder) Errorf(format string, args ...any) {
	r.failed = true
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}
func (r *recorder) Fatalf(format string, args ...any) {
	r.Errorf(format, args...)
	panic(stopCheck{})
}
func (r *recorder) Skipf(format string, args ...any) {
	r.skipped, r.skipReason = true, fmt.Sprintf(format, args...)
	panic(stopCheck{})
}

// chk is what a check receives: where to report, a context, and the suite.
type chk struct {
	reporter
	ctx      context.Context
	s        *suite
	cleanups []func()

	summary    string  // set by summarize: the line a passing check reports
	worst      float64 // the closest any element came to its tolerance
	worstWhat  string
	comparison int
	refusals   int // error replies as the protocol specifies
}

// summarize sets the one line a passing check reports (by default the
// element that came closest to its tolerance).
func (c *chk) summarize(format string, args ...any) { c.summary = fmt.Sprintf(format, args...) }

func (c *chk) summaryLine() string {
	if c.Failed() {
		return ""
	}
	if c.summary != "" {
		return c.summary
	}
	var parts []string
	if c.refusals > 0 {
		parts = append(parts, fmt.Sprintf("%d calls refused with the specified status", c.refusals))
	}
	if c.comparison > 0 {
		parts = append(parts, fmt.Sprintf("%d comparisons, closest to its tolerance: %s", c.comparison, c.worstWhat))
	}
	return strings.Join(parts, "; ")
}

func (c *chk) cleanup(f func()) { c.cleanups = append(c.cleanups, f) }

// backend returns the shared backend, starting one if needed.
func (c *chk) backend() sdk.Backend {
	c.Helper()
	s := c.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.shared != nil && s.src.exited(s.shared) {
		s.src.discard(s.shared)
		s.shared = nil
	}
	if s.shared == nil {
		b, err := s.src.open(c.ctx)
		if err != nil {
			c.Fatalf("start %s: %v", s.label, err)
		}
		s.shared = b
	}
	return s.shared
}

// fresh starts a backend under test for this check alone (a new plugin
// process, or a new in-process backend); it is stopped when the check ends.
func (c *chk) fresh() sdk.Backend {
	c.Helper()
	b, _ := c.freshClosable()
	return b
}

// freshClosable is fresh with a function that stops the backend before the
// check ends (later calls, and the check's end, do nothing more).
func (c *chk) freshClosable() (sdk.Backend, func() error) {
	c.Helper()
	b, err := c.s.src.open(c.ctx)
	if err != nil {
		c.Fatalf("start %s: %v", c.s.label, err)
	}
	var once sync.Once
	var closeErr error
	closeB := func() error {
		once.Do(func() { closeErr = c.s.src.close(b) })
		return closeErr
	}
	c.cleanup(func() { _ = closeB() })
	return b, closeB
}

// newInstance says what fresh starts, for messages.
func (c *chk) newInstance() string {
	if c.s.inProcess() {
		return "a new backend from newBackend()"
	}
	return "a new plugin process"
}

// needProcess skips the check unless the backend under test is a plugin
// process (why names what needs one), and returns how to start it.
func (c *chk) needProcess(why string) pluginSource {
	c.Helper()
	p, ok := c.s.src.(pluginSource)
	if !ok {
		c.Skipf("needs the backend as a separate plugin process (%s); conformance.Run covers it on the built plugin", why)
	}
	return p
}

// referenceBackend starts the CPU reference backend for this check, or skips.
func (c *chk) referenceBackend() sdk.Backend {
	c.Helper()
	src, label, err := c.s.reference()
	if err != nil {
		c.Skipf("no CPU reference backend to compare with (set Options.NewReference or ReferencePlugin / --reference): %v", err)
	}
	b, err := src.open(c.ctx)
	if err != nil {
		c.Fatalf("start the reference backend %s: %v", label, err)
	}
	c.cleanup(func() { _ = src.close(b) })
	return b
}

func (c *chk) caps() *pb.Capabilities { return c.s.info.GetCapabilities() }

func (c *chk) has(f pb.Feature) bool { return slices.Contains(c.caps().GetFeatures(), f) }

// need skips the check unless the backend declares every feature.
func (c *chk) need(fs ...pb.Feature) {
	c.Helper()
	for _, f := range fs {
		if !c.has(f) {
			c.Skipf("backend does not declare %v", f)
		}
	}
}

// needDType skips unless the backend declares compute dtype d.
func (c *chk) needDType(d pb.DType) {
	c.Helper()
	if !slices.Contains(c.caps().GetComputeDtypes(), d) {
		c.Skipf("backend does not declare compute dtype %v", d)
	}
	if !slices.Contains(c.caps().GetParamDtypes(), pb.DType_DTYPE_F32) {
		c.Skipf("backend does not accept F32 master weights (param_dtypes %v)", c.caps().GetParamDtypes())
	}
}

// unsupported says why the backend cannot run golden case g, or "".
func (s *suite) unsupported(g *golden.Case) string {
	cp := s.info.GetCapabilities()
	switch {
	case !slices.Contains(cp.GetPosEncodings(), g.PosEncoding()):
		return fmt.Sprintf("backend does not declare %v (case %s)", g.PosEncoding(), g.Case)
	case !slices.Contains(cp.GetMlpTypes(), g.MLPType()):
		return fmt.Sprintf("backend does not declare %v (case %s)", g.MLPType(), g.Case)
	case !slices.Contains(cp.GetNormTypes(), g.NormType()):
		return fmt.Sprintf("backend does not declare %v (case %s)", g.NormType(), g.Case)
	case g.Batch.Packed && !slices.Contains(cp.GetFeatures(), pb.Feature_FEATURE_PACKED_SEGMENTS):
		return fmt.Sprintf("backend does not declare FEATURE_PACKED_SEGMENTS (case %s is packed)", g.Case)
	}
	return ""
}

// needCase skips unless the backend supports golden case g's architecture.
func (c *chk) needCase(g *golden.Case) {
	c.Helper()
	if why := c.s.unsupported(g); why != "" {
		c.Skipf("%s", why)
	}
}

// anyCase returns the first golden case the backend supports that satisfies
// ok (nil = any), or skips.
func (c *chk) anyCase(what string, ok func(*golden.Case) bool) *golden.Case {
	c.Helper()
	for _, g := range c.s.simple {
		if c.s.unsupported(g) == "" && (ok == nil || ok(g)) {
			return g
		}
	}
	c.Skipf("no golden case %sthat the backend's declared architectures and features support", what)
	return nil
}

// casesPerArch returns the simplest golden case of each architecture family
// (learned/LayerNorm/GELU and RoPE/RMSNorm/SwiGLU).
func (s *suite) casesPerArch() []*golden.Case {
	var out []*golden.Case
	seen := map[string]bool{}
	for _, g := range s.simple {
		if !seen[g.Model.PosEncoding] {
			seen[g.Model.PosEncoding] = true
			out = append(out, g)
		}
	}
	return out
}

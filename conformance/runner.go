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

// check is one named conformance check.
type check struct {
	name string
	run  func(c *chk)
}

// suite is one conformance run against one plugin binary.
type suite struct {
	path    string // plugin under test
	file    string // its file name, which errors must name
	opts    Options
	log     *slog.Logger
	info    *pb.GetInfoResponse
	golden  []*golden.Case // in name order
	simple  []*golden.Case // unpacked all-ones cases first: what single-case checks use
	dtypes  []pb.DType     // compute dtypes the numerical checks run in
	primary pb.DType       // the dtype of checks that run once

	mu     sync.Mutex
	shared *sdk.Client // plugin process reused across checks; dropped after a failure

	refOnce sync.Once
	refPath string
	refErr  error
}

func newSuite(ctx context.Context, pluginPath string, opts Options) (*suite, error) {
	cases, err := loadGolden()
	if err != nil {
		return nil, fmt.Errorf("conformance: golden vectors: %w", err)
	}
	if opts.StartTimeout == 0 {
		opts.StartTimeout = 30 * time.Second
	}
	if opts.CallTimeout == 0 {
		opts.CallTimeout = 2 * time.Minute
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &suite{path: pluginPath, file: filepath.Base(pluginPath), opts: opts, log: log, golden: cases}
	s.simple = slices.Clone(cases)
	slices.SortStableFunc(s.simple, func(a, b *golden.Case) int { return complexity(a) - complexity(b) })
	c, err := s.start(ctx, pluginPath, opts.Env)
	if err != nil {
		return nil, err
	}
	info, err := c.GetInfo(ctx, nil)
	if err != nil {
		c.Kill()
		return nil, err
	}
	s.shared, s.info = c, info
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

func (s *suite) start(ctx context.Context, path string, env []string) (*sdk.Client, error) {
	return sdk.Start(ctx, path, sdk.StartOptions{Logger: s.log, StartTimeout: s.opts.StartTimeout,
		CallTimeout: s.opts.CallTimeout, Env: env})
}

func (s *suite) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.shared != nil {
		_ = s.shared.Close()
		s.shared = nil
	}
}

// dropShared stops the shared plugin process so the next check starts a
// clean one (after a failure it may hold any state, or be hung).
func (s *suite) dropShared() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.shared != nil {
		s.shared.Kill()
		s.shared = nil
	}
}

// reference resolves the CPU reference plugin once.
func (s *suite) reference() (string, error) {
	s.refOnce.Do(func() {
		name := s.opts.ReferencePlugin
		if name == "" {
			name = "cpu"
		}
		s.refPath, s.refErr = discovery.FromEnvironment().Resolve(name)
	})
	return s.refPath, s.refErr
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
	all = append(all, s.randomnessChecks()...)
	for _, d := range s.dtypes {
		all = append(all, s.portabilityChecks(d)...)
	}
	all = append(all, s.robustnessChecks()...)
	if s.opts.Filter != nil {
		all = slices.DeleteFunc(all, func(c check) bool { return !s.opts.Filter(c.name) })
	}
	return all
}

// Run runs every conformance check against the plugin binary at pluginPath,
// each as a subtest of t named by its path ("protocol/handshake",
// "numerics/f32/llama_tied/gradients", ...). A check the backend's declared
// capabilities rule out is skipped with the reason.
func Run(t *testing.T, pluginPath string, opts Options) {
	t.Helper()
	s, err := newSuite(t.Context(), pluginPath, opts)
	if err != nil {
		t.Fatalf("conformance: %v", err)
	}
	defer s.close()
	runTree(t, s, s.plan(), 0)
}

func runTree(t *testing.T, s *suite, checks []check, depth int) {
	t.Helper()
	for i := 0; i < len(checks); {
		parts := strings.Split(checks[i].name, "/")
		if depth == len(parts)-1 {
			ck := checks[i]
			t.Run(parts[depth], func(t *testing.T) {
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
		t.Run(head, func(t *testing.T) { runTree(t, s, group, depth+1) })
		i = j
	}
}

// Certify runs every conformance check against the plugin binary at
// pluginPath and returns the report; it is what `mypt conformance` runs. The
// error is for problems of the run itself (the golden vectors); a plugin that
// cannot even be started is a failed "protocol/handshake" in the report.
func Certify(ctx context.Context, pluginPath string, opts Options) (*Report, error) {
	started := time.Now()
	rep := &Report{Plugin: pluginPath, Started: started}
	if _, err := loadGolden(); err != nil {
		return nil, fmt.Errorf("conformance: golden vectors: %w", err)
	}
	s, err := newSuite(ctx, pluginPath, opts)
	if err != nil {
		rep.add(Result{Name: "protocol/handshake", Status: StatusFail, Reason: err.Error(), Duration: time.Since(started)})
		rep.Seconds = time.Since(started).Seconds()
		return rep, nil
	}
	defer s.close()
	rep.Backend, rep.Version, rep.Engine = s.info.GetName(), s.info.GetVersion(), s.info.GetEngine()
	if raw, err := protojson.Marshal(s.info); err == nil {
		rep.Info = raw
	}
	for _, d := range s.dtypes {
		rep.DTypes = append(rep.DTypes, dtypeLabel(d))
	}
	if p, err := s.reference(); err == nil {
		rep.Reference = p
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
	rep.Seconds = time.Since(started).Seconds()
	return rep, nil
}

func (s *suite) runRecorded(ctx context.Context, ck check) Result {
	rec := &recorder{}
	start := time.Now()
	var summary string
	func() {
		defer func() {
			if p := recover(); p != nil {
				if _, ok := p.(stopCheck); !ok {
					rec.failed = true
					rec.errs = append(rec.errs, fmt.Sprintf("check panicked: %v\n%s", p, debug.Stack()))
					s.dropShared()
				}
			}
		}()
		summary = s.runCheck(ctx, rec, ck).summaryLine()
	}()
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
// runtime.Goexit under testing, a stopCheck panic under Certify).
func (s *suite) runCheck(ctx context.Context, rep reporter, ck check) *chk {
	ctx, cancel := context.WithTimeout(ctx, checkTimeout)
	c := &chk{reporter: rep, ctx: ctx, s: s}
	defer func() {
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

// backend returns the shared plugin process, starting one if needed.
func (c *chk) backend() *sdk.Client {
	c.Helper()
	s := c.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.shared != nil && s.shared.Exited() {
		s.shared.Kill()
		s.shared = nil
	}
	if s.shared == nil {
		cl, err := s.start(c.ctx, s.path, s.opts.Env)
		if err != nil {
			c.Fatalf("start %s: %v", s.path, err)
		}
		s.shared = cl
	}
	return s.shared
}

// fresh starts a plugin process of the backend under test for this check
// alone; it is stopped when the check ends.
func (c *chk) fresh() *sdk.Client {
	c.Helper()
	cl, err := c.s.start(c.ctx, c.s.path, c.s.opts.Env)
	if err != nil {
		c.Fatalf("start %s: %v", c.s.path, err)
	}
	c.cleanup(func() { _ = cl.Close() })
	return cl
}

// referenceBackend starts the CPU reference plugin for this check, or skips.
func (c *chk) referenceBackend() *sdk.Client {
	c.Helper()
	p, err := c.s.reference()
	if err != nil {
		c.Skipf("no CPU reference plugin to compare with (set Options.ReferencePlugin / --reference): %v", err)
	}
	cl, err := c.s.start(c.ctx, p, nil)
	if err != nil {
		c.Fatalf("start reference plugin %s: %v", p, err)
	}
	c.cleanup(func() { _ = cl.Close() })
	return cl
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

package conformance

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/mypt/mypt/conformance/golden"
	"github.com/mypt/mypt/sdk"
	pb "github.com/mypt/mypt/sdk/proto/backendv1"
)

// portabilitySteps is how many steps each side of a hand-over trains.
const portabilitySteps = 5

func (s *suite) portabilityChecks(d pb.DType) []check {
	var out []check
	for _, g := range s.casesPerArch() {
		prefix := "portability/" + dtypeLabel(d) + "/" + g.Case + "/"
		p := inDType(d, ProfilePortability)
		out = append(out,
			check{prefix + "backend-to-reference", p, func(c *chk) { portability(c, g, d, true) }},
			check{prefix + "reference-to-backend", p, func(c *chk) { portability(c, g, d, false) }},
		)
	}
	return out
}

// portability trains a few steps on one backend, stores its state through
// the Options.Checkpointer (by default in memory; `mypt conformance` writes a
// real checkpoint), resumes it on the other and checks that the losses of
// both halves follow the golden 20-step trajectory.
func portability(c *chk, g *golden.Case, d pb.DType, fromBackend bool) {
	c.needDType(d)
	c.needCase(g)
	c.need(pb.Feature_FEATURE_TRAINING)
	ref := c.referenceBackend()
	under := c.backend()
	first, second := under, ref
	firstD, secondD := d, pb.DType_DTYPE_F32
	names := [2]string{c.s.label, "the reference"}
	if !fromBackend {
		first, second, firstD, secondD = second, first, secondD, firstD
		names[0], names[1] = names[1], names[0]
	}
	tol := c.s.opts.tolerances(d)
	tr := g.Trajectory
	k := portabilitySteps

	c.openCase(first, g, firstD)
	losses, _ := c.trainGolden(first, g, tr, 0, k)

	store := c.s.opts.checkpointer()
	spec := g.Spec()
	stored, err := store.Store(c.ctx, spec, func(w sdk.StateWriter) error {
		return first.GetState(c.ctx, &pb.GetStateRequest{}, w)
	})
	if err != nil {
		c.Fatalf("save: store the state of %s through %s: %v", names[0], describe(store), err)
	}
	c.cleanup(func() { _ = stored.Close() })
	if got := stored.Header().GetOptimizerSteps(); got != uint64(k) {
		c.Errorf("the stored state records %d optimizer steps, %s took %d", got, names[0], k)
	}
	c.configure(second, spec, g.OptimizerSpec(), secondD, func(r *pb.ConfigureRequest) { r.MaxBatchSize = g.Batch.BatchSize })
	if _, err := second.SetState(c.ctx, stored); err != nil {
		c.Fatalf("resume: load the stored state into %s: %v", names[1], err)
	}
	more, _ := c.trainGolden(second, g, tr, k, k)
	losses = append(losses, more...)
	worst := 0.0
	for i, l := range losses {
		side := names[0]
		if i >= k {
			side = names[1]
		}
		e := relErr(l, tr.Losses[i], 0.1)
		worst = math.Max(worst, e)
		if e > tol.Trajectory {
			c.Errorf("step %d on %s: loss %.6g, golden trajectory %.6g (error %.3g > %g)", i+1, side, l, tr.Losses[i], e, tol.Trajectory)
		}
	}
	c.summarize("%d steps on %s, then %d on %s, handed over through %s: worst loss error %.2g (tolerance %g)",
		k, names[0], k, names[1], describe(store), worst, tol.Trajectory)
}

// ---- robustness

func (s *suite) robustnessChecks() []check {
	return []check{
		{"robustness/killed-mid-step", ProfileCore, killedMidStep},
		{"robustness/session-after-shutdown", ProfileCore, sessionAfterShutdown},
	}
}

// busySize is a model big enough that a ForwardBackward takes a while on a CPU.
var busySize = modelSize{vocab: 512, block: 128, layers: 4, heads: 4, embd: 128}

func killedMidStep(c *chk) {
	c.needProcess("it kills the plugin process")
	c.need(pb.Feature_FEATURE_TRAINING)
	g := c.anyCase("", nil)
	b := c.fresh().(*sdk.Client)
	spec := c.specLike(g, busySize)
	c.configure(b, spec, nil, c.s.primary, func(r *pb.ConfigureRequest) { r.MaxBatchSize = 4 })
	c.setState(b, initState(spec, 1))
	rng := rand.New(rand.NewPCG(1, 2))
	B, T, V := 4, busySize.block, busySize.vocab
	batch := &pb.Batch{BatchSize: uint32(B), SeqLen: uint32(T)}
	for i := 0; i < B*T; i++ {
		batch.Tokens = append(batch.Tokens, int32(rng.IntN(V)))
		batch.Targets = append(batch.Targets, int32(rng.IntN(V)))
		batch.LossWeights = append(batch.LossWeights, 1)
	}
	type result struct {
		err   error
		calls int
		at    time.Time
	}
	done := make(chan result, 1)
	go func() {
		for calls := 0; ; calls++ {
			_, err := b.ForwardBackward(c.ctx, &pb.ForwardBackwardRequest{Batch: batch, GradScale: 1.0 / float32(B*T)})
			if err != nil {
				done <- result{err, calls, time.Now()}
				return
			}
		}
	}()
	time.Sleep(300 * time.Millisecond)
	proc, err := os.FindProcess(b.Pid())
	c.must(err, "find the plugin process")
	killed := time.Now()
	c.must(proc.Kill(), "kill the plugin process")
	var r result
	select {
	case r = <-done:
	case <-time.After(20 * time.Second):
		c.Fatalf("ForwardBackward did not return within 20 s of the plugin process being killed")
	}
	c.summarize("killed after %d completed ForwardBackward calls; the call in flight failed %s later", r.calls, r.at.Sub(killed).Round(time.Millisecond))
	checkDeathError(c, "the ForwardBackward in flight", r.err)
	start := time.Now()
	_, err = b.Evaluate(c.ctx, &pb.EvaluateRequest{Batch: batch})
	if time.Since(start) > 10*time.Second {
		c.Errorf("a call after the plugin died took %s to fail", time.Since(start).Round(time.Millisecond))
	}
	checkDeathError(c, "a call after the plugin died", err)
	if !b.Exited() {
		c.Errorf("the client does not report the killed plugin as exited")
	}
}

func checkDeathError(c *chk, what string, err error) {
	c.Helper()
	if err == nil {
		c.Errorf("%s succeeded", what)
		return
	}
	if !errors.Is(err, sdk.ErrPluginExited) {
		c.Errorf("%s: error %q does not say the plugin exited (sdk.ErrPluginExited)", what, firstLineOf(err.Error()))
	}
	if !strings.Contains(err.Error(), c.s.file) {
		c.Errorf("%s: error %q does not name the plugin %s", what, firstLineOf(err.Error()), c.s.file)
	}
}

func sessionAfterShutdown(c *chk) {
	g := c.anyCase("", nil)
	tol := c.s.opts.tolerances(c.s.primary)
	b, closeB := c.freshClosable()
	c.openCase(b, g, c.s.primary)
	if c.has(pb.Feature_FEATURE_TRAINING) {
		c.trainGolden(b, g, g.AdamW, 0, 1)
	}
	c.must(b.Shutdown(c.ctx), "Shutdown")
	_, err := b.Configure(c.ctx, &pb.ConfigureRequest{Model: g.Spec(), Optimizer: g.OptimizerSpec(),
		Precision: &pb.Precision{ParamDtype: pb.DType_DTYPE_F32, ComputeDtype: c.s.primary}})
	if err != nil {
		code, msg := statusOf(err)
		if (code == codes.FailedPrecondition || code == codes.Unimplemented) && strings.TrimSpace(msg) != "" {
			c.summarize("a second session on the same process is refused clearly: %v: %s", code, msg)
		} else {
			c.Errorf("Configure after Shutdown: %v; want a working session, or a clear FAILED_PRECONDITION / UNIMPLEMENTED refusal", err)
		}
	} else {
		c.summarize("Configure after Shutdown starts a working session")
		c.setState(b, g.InitState())
		ev := c.evaluate(b, g.NewBatch(), false)
		c.relClose("second session: Evaluate loss_sum", ev.LossSum, g.LossSum, tol.Loss, 1e-12)
		if c.has(pb.Feature_FEATURE_TRAINING) {
			a := g.AdamW
			losses, norms := c.trainGolden(b, g, a, 0, a.Steps)
			for i := range losses {
				c.relClose(fmt.Sprintf("second session: step %d loss", i+1), losses[i], a.Losses[i], tol.StepLoss, 1e-12)
				c.relClose(fmt.Sprintf("second session: step %d grad_norm", i+1), norms[i], a.GradNorms[i], tol.StepLoss, 1e-12)
			}
		}
	}
	// and a new backend after this one is closed
	c.must(closeB(), "Close")
	nb := c.fresh()
	_, err = nb.GetInfo(c.ctx, nil)
	c.must(err, "GetInfo on "+c.newInstance()+" after closing the previous one")
}

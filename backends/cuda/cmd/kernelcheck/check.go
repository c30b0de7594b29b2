package main

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"

	"github.com/mypt/mypt/backends/cuda"
	"github.com/mypt/mypt/backends/cuda/device"
	"github.com/mypt/mypt/backends/cuda/kernels"
	"github.com/mypt/mypt/conformance/golden"
	"github.com/mypt/mypt/sdk"
	pb "github.com/mypt/mypt/sdk/proto/backendv1"
)

// check runs the workload on a CUDA backend computing on c, then shuts the backend down
// (which closes c); c.Report() holds what was found, also after an error.
func check(ctx context.Context, c *device.Compare) error {
	b := cuda.New(cuda.Options{NewDevice: func() (device.Device, error) { return c, nil }})
	err := workload(ctx, b)
	if cerr := b.Shutdown(ctx); err == nil && cerr != nil {
		err = fmt.Errorf("shutdown: %w", cerr)
	}
	return err
}

// workload drives b through every kernel of kernels.cu, as backends/cuda's
// TestEveryKernelLaunched does: on every golden case with dropout 0.1 and NEFTune 5 (the
// random masks), a training step, an optimizer step, an evaluation returning logits, a
// prefill and a decode (the KV cache); then every case in BF16 (cast_bf16 and the bf16
// products): a training step and an evaluation.
func workload(ctx context.Context, b sdk.Backend) error {
	cases, err := golden.Load()
	if err != nil {
		return fmt.Errorf("golden cases: %w", err)
	}
	for _, g := range cases {
		g.Model.Dropout, g.Model.NeftuneAlpha = 0.1, 5
		if err := configure(ctx, b, g, nil); err != nil {
			return err
		}
		if _, err := b.ForwardBackward(ctx, &pb.ForwardBackwardRequest{Batch: g.NewBatch(), GradScale: g.GradScale(), DropoutSeed: 3}); err != nil {
			return fmt.Errorf("%s: ForwardBackward: %w", g.Case, err)
		}
		if _, err := b.OptimizerStep(ctx, &pb.OptimizerStepRequest{LearningRate: 1e-3, ClipNorm: 1, WeightDecay: 0.1}); err != nil {
			return fmt.Errorf("%s: OptimizerStep: %w", g.Case, err)
		}
		if _, err := b.Evaluate(ctx, &pb.EvaluateRequest{Batch: g.NewBatch(), ReturnLogits: true}); err != nil {
			return fmt.Errorf("%s: Evaluate: %w", g.Case, err)
		}
		p, err := b.Prefill(ctx, &pb.PrefillRequest{Tokens: g.NewBatch().Tokens[:3]})
		if err != nil {
			return fmt.Errorf("%s: Prefill: %w", g.Case, err)
		}
		if _, err := b.Decode(ctx, &pb.DecodeRequest{CacheHandle: p.CacheHandle, Token: 1}); err != nil {
			return fmt.Errorf("%s: Decode: %w", g.Case, err)
		}
	}
	for _, g := range cases {
		g.Model.Dropout, g.Model.NeftuneAlpha = 0, 0
		if err := configure(ctx, b, g, &pb.Precision{ComputeDtype: pb.DType_DTYPE_BF16}); err != nil {
			return err
		}
		if _, err := b.ForwardBackward(ctx, &pb.ForwardBackwardRequest{Batch: g.NewBatch(), GradScale: g.GradScale()}); err != nil {
			return fmt.Errorf("%s (bf16): ForwardBackward: %w", g.Case, err)
		}
		if _, err := b.Evaluate(ctx, &pb.EvaluateRequest{Batch: g.NewBatch(), ReturnLogits: true}); err != nil {
			return fmt.Errorf("%s (bf16): Evaluate: %w", g.Case, err)
		}
	}
	return nil
}

// configure sets b up for golden case g with its initial parameters.
func configure(ctx context.Context, b sdk.Backend, g *golden.Case, precision *pb.Precision) error {
	req := &pb.ConfigureRequest{Model: g.Spec(), Optimizer: g.OptimizerSpec(), MaxBatchSize: g.Batch.BatchSize, Precision: precision}
	if _, err := b.Configure(ctx, req); err != nil {
		return fmt.Errorf("%s: Configure: %w", g.Case, err)
	}
	if _, err := b.SetState(ctx, g.InitState()); err != nil {
		return fmt.Errorf("%s: SetState: %w", g.Case, err)
	}
	return nil
}

// report is what mypt-cuda-kernelcheck prints and writes (--json).
type report struct {
	TestDevice      string      `json:"test_device"`
	ReferenceDevice string      `json:"reference_device"`
	Tolerances      tolerances  `json:"tolerances"`
	Passed          bool        `json:"passed"`
	Kernels         []kernelRow `json:"kernels"`
	NotLaunched     []string    `json:"not_launched"`
	// Error is the workload's error, when it stopped early.
	Error string `json:"error,omitempty"`
}

type tolerances struct {
	Atol         float64 `json:"atol"`
	Rtol         float64 `json:"rtol"`
	GemmRtol     float64 `json:"gemm_rtol"`
	BF16GemmRtol float64 `json:"bf16_gemm_rtol"`
}

type kernelRow struct {
	Name     string    `json:"name"`
	BF16     bool      `json:"bf16,omitempty"`
	Launches int       `json:"launches"`
	Failures int       `json:"failed_launches"`
	WorstAbs jsonFloat `json:"worst_abs"`
	WorstRel jsonFloat `json:"worst_rel"`
	Verdict  string    `json:"verdict"` // ok, FAIL or NOT LAUNCHED
	First    *mismatch `json:"first_failure,omitempty"`
}

type mismatch struct {
	Op      int       `json:"op"`
	Launch  int       `json:"launch"`
	Buffer  string    `json:"buffer"`
	Element int       `json:"element"`
	Bad     int       `json:"elements_out_of_tolerance"`
	Test    jsonFloat `json:"test"`
	Ref     jsonFloat `json:"reference"`
}

// jsonFloat writes ±Inf and NaN as strings, which JSON numbers cannot hold (a NaN against
// a number is an infinite difference).
type jsonFloat float64

// MarshalJSON implements json.Marshaler.
func (f jsonFloat) MarshalJSON() ([]byte, error) {
	v := float64(f)
	if math.IsInf(v, 0) || math.IsNaN(v) {
		return json.Marshal(strconv.FormatFloat(v, 'g', -1, 64))
	}
	return []byte(strconv.FormatFloat(v, 'g', -1, 64)), nil
}

// newReport is the verdict on c's results: it passes when every kernel of kernels.cu was
// launched and every launch and product was within tolerance.
func newReport(c *device.Compare, test, ref device.Info, workErr error) report {
	o := c.Options()
	rep := report{TestDevice: test.Name, ReferenceDevice: ref.Name,
		Tolerances: tolerances{o.Atol, o.Rtol, o.GemmRtol, o.BF16GemmRtol}}
	results, ok := c.Report()
	launched := map[string]bool{}
	for _, r := range results {
		launched[r.Name] = true
		row := kernelRow{Name: r.Name, BF16: r.BF16, Launches: r.Launches, Failures: r.Failures,
			WorstAbs: jsonFloat(r.WorstAbs), WorstRel: jsonFloat(r.WorstRel), Verdict: "ok"}
		if f := r.First; f != nil {
			row.Verdict = "FAIL"
			row.First = &mismatch{f.Op, f.Launch, f.Buffer, f.Element, f.Bad, jsonFloat(f.Test), jsonFloat(f.Ref)}
		}
		rep.Kernels = append(rep.Kernels, row)
	}
	for name := range kernels.Signatures() {
		if !launched[name] {
			rep.NotLaunched = append(rep.NotLaunched, name)
			rep.Kernels = append(rep.Kernels, kernelRow{Name: name, Verdict: "NOT LAUNCHED"})
		}
	}
	slices.Sort(rep.NotLaunched)
	slices.SortStableFunc(rep.Kernels, func(a, b kernelRow) int { return cmp.Compare(a.Name, b.Name) })
	rep.Passed = ok && len(rep.NotLaunched) == 0 && workErr == nil
	if workErr != nil {
		rep.Error = workErr.Error()
	}
	return rep
}

// name is a row's name as printed: gemm in BF16 mode is "gemm (bf16)".
func (r kernelRow) name() string {
	if r.BF16 {
		return r.Name + " (bf16)"
	}
	return r.Name
}

// summary is the one-line verdict, "kernelcheck: N kernels match, M differ, K never
// launched (worst: NAME rel X)"; scripts/gpu-check.sh quotes it. Products count as kernels;
// the worst is the largest relative difference of any row.
func (r report) summary() string {
	var match, differ int
	var worst *kernelRow
	for i, k := range r.Kernels {
		switch k.Verdict {
		case "ok":
			match++
		case "FAIL":
			differ++
		default:
			continue
		}
		if worst == nil || k.WorstRel > worst.WorstRel {
			worst = &r.Kernels[i]
		}
	}
	s := fmt.Sprintf("kernelcheck: %d kernels match, %d differ, %d never launched", match, differ, len(r.NotLaunched))
	switch {
	case worst != nil && worst.WorstAbs == 0:
		s += " (all bit-identical)"
	case worst != nil:
		s += fmt.Sprintf(" (worst: %s rel %.2g)", worst.name(), float64(worst.WorstRel))
	}
	if r.Error != "" {
		s += "; stopped early: " + r.Error
	}
	return s
}

// print writes the table, the failures and the summary.
func (r report) print(w io.Writer) {
	fmt.Fprintf(w, "test:      %s\nreference: %s\n", r.TestDevice, r.ReferenceDevice)
	t := r.Tolerances
	fmt.Fprintf(w, "tolerance: |test-ref| <= atol %.g + rtol * (largest |value| of the buffer); rtol %.g kernels, %.g fp32 gemm, %.g bf16 gemm\n\n",
		t.Atol, t.Rtol, t.GemmRtol, t.BF16GemmRtol)
	fmt.Fprintf(w, "%-14s %8s %10s %10s  %s\n", "KERNEL", "LAUNCHES", "WORST ABS", "WORST REL", "VERDICT")
	for _, k := range r.Kernels {
		if k.Verdict == "NOT LAUNCHED" {
			fmt.Fprintf(w, "%-14s %8d %10s %10s  %s\n", k.name(), 0, "-", "-", k.Verdict)
			continue
		}
		fmt.Fprintf(w, "%-14s %8d %10.3g %10.3g  %s\n", k.name(), k.Launches, float64(k.WorstAbs), float64(k.WorstRel), k.Verdict)
	}
	for _, k := range r.Kernels {
		if f := k.First; f != nil {
			fmt.Fprintf(w, "\n%s: %d of %d launches differ; first: launch %d (operation %d), %s, element %d: test %.9g, reference %.9g (%d elements out of tolerance)",
				k.name(), k.Failures, k.Launches, f.Launch, f.Op, f.Buffer, f.Element, float64(f.Test), float64(f.Ref), f.Bad)
		}
	}
	fmt.Fprintf(w, "\n%s\n", r.summary())
}

package main

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/mypt/mypt/core/bench"
	"github.com/mypt/mypt/core/config"
)

func newBenchCmd() *cobra.Command {
	var (
		configFile, backend, peakDevice string
		steps, warmup                   int
		peak                            float64
		maxTime                         time.Duration
		asJSON                          bool
	)
	cmd := &cobra.Command{
		Use:   "bench --backend NAME --config FILE [--steps 50] [--warmup 5] [--json]",
		Short: "Measure a backend's training throughput (tokens/s, TFLOP/s, MFU) through the plugin protocol",
		Long: `Benchmark training steps on a backend plugin, through the same protocol and
configuration as mypt train: the config loads as train loads it (defaults <
--config < MYPT_<KEY> < flags), the model gets the deterministic
initialisation, and the backend is configured with the resolved precision.
Then warmup + steps optimizer steps run, each one ForwardBackward per
micro-batch of random tokens (a seeded generator, the whole block, every loss
weight 1) and one OptimizerStep with the config's learning_rate, grad_clip and
weight_decay. Only the timed steps count, by wall clock.

Reported: tokens per step (batch_size × block_size × grad_accum_steps),
median and mean ms/step, tokens/s, model FLOPs per token by nanoGPT's
estimate_mfu (6·N + 12·L·C·T), achieved TFLOP/s, and MFU against
--peak_tflops or the device's dense peak from a small table (H100/H200/A100;
none for CPUs; --peak_device names the GPU where the backend's device name
does not, as PJRT's "cuda:0"). A non-finite loss or gradient norm fails the
command. --json prints one JSON object instead of the text.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig(cmd.Flags(), configFile)
			if err != nil {
				return err
			}
			client, err := startBackend(cmd.Context(), backend, slog.Default())
			if err != nil {
				return err
			}
			defer client.Close()
			res, err := bench.Run(cmd.Context(), client, bench.Options{
				Config: cfg, Warmup: warmup, Steps: steps, PeakTFLOPS: peak, PeakDevice: peakDevice, MaxTime: maxTime, Log: slog.Default(),
			})
			if err != nil {
				return fmt.Errorf("bench %s: %w", backend, err)
			}
			if asJSON {
				out, err := json.Marshal(res)
				if err != nil {
					return err
				}
				_, err = fmt.Fprintf(cmd.OutOrStdout(), "%s\n", out)
				return err
			}
			printBench(cmd.OutOrStdout(), backend, cfg, res)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&configFile, "config", "", "JSON config file (MyPT's format), as for mypt train")
	f.StringVar(&backend, "backend", "cpu", "backend plugin: a NAME (mypt-backend-NAME) or a path")
	f.IntVar(&steps, "steps", 50, "timed optimizer steps")
	f.IntVar(&warmup, "warmup", 5, "untimed optimizer steps first (compilation, allocation)")
	f.Float64Var(&peak, "peak_tflops", 0, "peak TFLOP/s for MFU (0: the device's dense peak from the table, if known)")
	f.StringVar(&peakDevice, "peak_device", "", "look the peak up for this device name (e.g. nvidia-smi's \"NVIDIA H200\") instead of the backend's")
	f.DurationVar(&maxTime, "max_time", 0, "stop early once this long has passed since Configure (after at least one timed step) and report what ran, e.g. 4m (0: no limit)")
	f.BoolVar(&asJSON, "json", false, "print one JSON object instead of the text")
	addStepConfigFlags(f)
	f.Int("block_size", config.Default().BlockSize, "tokens per row (the model's maximum sequence length)")
	return cmd
}

func printBench(w io.Writer, backend string, cfg config.Config, r *bench.Result) {
	dev := r.Device.Kind + ": " + r.Device.Name
	var extra []string
	if r.Device.MemoryBytes > 0 {
		extra = append(extra, fmt.Sprintf("%.1f GiB", float64(r.Device.MemoryBytes)/(1<<30)))
	}
	if r.Device.Cores > 0 {
		unit := "SMs"
		if r.Device.Kind == "cpu" {
			unit = "cores"
		}
		extra = append(extra, fmt.Sprintf("%d %s", r.Device.Cores, unit))
	}
	if len(extra) > 0 {
		dev += " (" + strings.Join(extra, ", ") + ")"
	}
	row := func(k, format string, args ...any) {
		fmt.Fprintf(w, "%-16s"+format+"\n", append([]any{k + ":"}, args...)...)
	}
	row("backend", "%s (%s %s)", backend, r.Backend, r.BackendVersion)
	row("engine", "%s", r.Engine)
	row("device", "%s", dev)
	row("model", "%d layers, %d wide, %d heads, vocab %d, %s/%s/%s", r.NLayer, r.NEmbd, r.NHead, r.VocabSize,
		cfg.PosEncoding, cfg.MLPType, cfg.NormType)
	row("params", "%d (N for FLOPs: %d)", r.Params, r.FLOPParams)
	row("precision", "%s -> compute %s, params F32", r.Precision, r.ComputeDType)
	row("tokens/step", "%d (batch %d x block %d x accum %d)", r.TokensPerStep, r.BatchSize, r.BlockSize, r.GradAccumSteps)
	row("setup", "%.2f s (Configure + init + SetState), warmup %d steps %.2f s", r.SetupS, r.Warmup, r.WarmupS)
	row("ms/step", "median %.2f, mean %.2f (min %.2f, max %.2f; %d timed steps)", r.StepMS.Median, r.StepMS.Mean,
		r.StepMS.Min, r.StepMS.Max, r.Steps)
	if r.StoppedEarly != "" {
		row("stopped early", "%s", r.StoppedEarly)
	}
	row("tokens/s", "%.1f", r.TokensPerS)
	row("loss", "%.4f -> %.4f (finite), last grad norm %.4f", r.FirstLoss, r.LastLoss, r.LastGradNorm)
	row("FLOPs/token", "%.4g per token = %s", r.FLOPsPerToken, r.FLOPsFormula)
	row("achieved", "%.4g TFLOP/s", r.AchievedTFLOPS)
	if r.MFU != nil {
		row("MFU", "%.2f%% of %.4g TFLOP/s (%s)", 100**r.MFU, r.PeakTFLOPS, r.PeakSource)
	} else {
		row("MFU", "n/a (%s)", r.MFUNote)
	}
}

// Command kernelcheck (mypt-cuda-kernelcheck in bin/) checks each CUDA kernel on the GPU
// against the emulated device on the same inputs: a device.Compare runs every launch and
// product on the GPU and on the emulated device (kernels.cu compiled for the CPU), making
// the emulated device's memory equal to the GPU's before each one and comparing all of it
// after, while a CUDA backend on it drives a workload that launches every kernel of
// kernels.cu (the golden cases, training with dropout and NEFTune, the optimizer,
// evaluation, the KV cache, BF16). A kernel that differs is named with its first differing
// launch, buffer and element; since every launch starts from the same memory on both, a
// difference does not spread to the kernels after it.
//
// The GPU machine may have no C++ compiler, so the emulator library travels prebuilt:
// --build-emu OUT.so writes it here (make gpu-bundle), --emu-lib loads it there, refusing
// one built from another kernels.cu.
//
// Usage:
//
//	mypt-cuda-kernelcheck [--emu-lib PATH] [--json FILE] [--schedule ORDER] [--atol X] [--rtol X] [--gemm-rtol X] [--bf16-gemm-rtol X]
//	mypt-cuda-kernelcheck --device emulated ...   (the emulated device in reverse order as the test: a self-check without a GPU)
//	mypt-cuda-kernelcheck --build-emu OUT.so
//
// Exit status: 0 when every kernel was launched and matched, 1 when a kernel differed or
// was never launched, 2 when the check could not run (flags, devices, the workload).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/mypt/mypt/backends/cuda/device"
	"github.com/mypt/mypt/backends/cuda/kernels"
)

func main() { os.Exit(run(context.Background(), os.Args[1:], os.Stdout, os.Stderr)) }

// config is the command line.
type config struct {
	dev, emuLib, buildEmu, jsonOut, schedule, testSchedule, cacheDir string
	ordinal                                                          int
	tol                                                              device.CompareOptions
}

func parse(args []string, stderr io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("mypt-cuda-kernelcheck", flag.ContinueOnError)
	fs.SetOutput(stderr)
	def := device.DefaultCompareOptions()
	fs.StringVar(&c.dev, "device", "gpu", "the device checked: gpu, or emulated (in --test-schedule order: a self-check without a GPU)")
	fs.IntVar(&c.ordinal, "ordinal", 0, "the GPU to check")
	fs.StringVar(&c.emuLib, "emu-lib", "", "a prebuilt emulator library (--build-emu) for the reference; default: compile one with the host C++ compiler")
	fs.StringVar(&c.buildEmu, "build-emu", "", "build the emulator library for this binary's kernels.cu into `FILE` and exit")
	fs.StringVar(&c.jsonOut, "json", "", "also write the report as JSON to `FILE`")
	fs.StringVar(&c.schedule, "schedule", "forward", "the reference's thread order within a block: forward, reverse or random[:SEED]")
	fs.StringVar(&c.testSchedule, "test-schedule", "reverse", "with --device emulated, the test device's thread order")
	fs.StringVar(&c.cacheDir, "cache-dir", "", "compiled kernels (cubins, emulator libraries); default $XDG_CACHE_HOME/mypt/cuda")
	fs.Float64Var(&c.tol.Atol, "atol", def.Atol, "absolute tolerance of every element")
	fs.Float64Var(&c.tol.Rtol, "rtol", def.Rtol, "kernels' tolerance relative to the largest |value| of the buffer")
	fs.Float64Var(&c.tol.GemmRtol, "gemm-rtol", def.GemmRtol, "fp32 products' relative tolerance")
	fs.Float64Var(&c.tol.BF16GemmRtol, "bf16-gemm-rtol", def.BF16GemmRtol, "bf16 products' relative tolerance")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if c.cacheDir == "" {
		if d, err := os.UserCacheDir(); err == nil {
			c.cacheDir = filepath.Join(d, "mypt", "cuda")
		}
	}
	return c, nil
}

// run is the command; it returns the exit status.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	cfg, err := parse(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "mypt-cuda-kernelcheck:", err)
		return 2
	}
	if cfg.buildEmu != "" {
		if err := buildEmu(cfg, stdout); err != nil {
			fmt.Fprintln(stderr, "mypt-cuda-kernelcheck:", err)
			return 2
		}
		return 0
	}
	c, test, ref, err := open(cfg, log)
	if err != nil {
		fmt.Fprintln(stderr, "mypt-cuda-kernelcheck:", err)
		return 2
	}
	log.Info("checking kernels", "test", test.Name, "reference", ref.Name)
	workErr := check(ctx, c)
	rep := newReport(c, test, ref, workErr)
	rep.print(stdout)
	if cfg.jsonOut != "" {
		if err := writeJSON(cfg.jsonOut, rep); err != nil {
			fmt.Fprintln(stderr, "mypt-cuda-kernelcheck:", err)
			return 2
		}
	}
	switch {
	case workErr != nil:
		fmt.Fprintln(stderr, "mypt-cuda-kernelcheck: the workload stopped:", workErr)
		return 2
	case !rep.Passed:
		return 1
	}
	return 0
}

// open opens the reference (emulated) and test devices and the comparison of the two.
func open(cfg config, log *slog.Logger) (c *device.Compare, test, ref device.Info, err error) {
	sched, err := device.ParseSchedule(cfg.schedule)
	if err != nil {
		return nil, test, ref, err
	}
	r, err := device.NewEmulated(device.EmulatedOptions{CacheDir: cfg.cacheDir, Library: cfg.emuLib, Schedule: sched, Logger: log})
	if err != nil {
		return nil, test, ref, fmt.Errorf("the reference (emulated device): %w", err)
	}
	var t device.Device
	switch cfg.dev {
	case "gpu":
		t, err = device.OpenGPU(cfg.ordinal, cfg.cacheDir, log)
	case "emulated":
		var ts device.Schedule
		if ts, err = device.ParseSchedule(cfg.testSchedule); err == nil {
			t, err = device.NewEmulated(device.EmulatedOptions{CacheDir: cfg.cacheDir, Library: cfg.emuLib, Schedule: ts, Logger: log})
		}
	default:
		err = fmt.Errorf("--device %q: want gpu or emulated", cfg.dev)
	}
	if err != nil {
		_ = r.Close()
		return nil, test, ref, fmt.Errorf("the device to check: %w", err)
	}
	return device.NewCompare(r, t, cfg.tol), t.Info(), r.Info(), nil
}

// buildEmu writes the emulator library for this binary's kernels.cu to cfg.buildEmu.
func buildEmu(cfg config, stdout io.Writer) error {
	lib, err := device.BuildEmulator(device.EmulatedOptions{CacheDir: cfg.cacheDir})
	if err != nil {
		return err
	}
	data, err := os.ReadFile(lib)
	if err != nil {
		return err
	}
	tmp := cfg.buildEmu + ".tmp"
	if err := os.WriteFile(tmp, data, 0o755); err != nil {
		return fmt.Errorf("writing the emulator library: %w", err)
	}
	if err := os.Rename(tmp, cfg.buildEmu); err != nil {
		return fmt.Errorf("writing the emulator library: %w", err)
	}
	fmt.Fprintf(stdout, "%s: the emulated device for kernels.cu sha256 %s (%d bytes)\n", cfg.buildEmu, kernels.Hash(), len(data))
	return nil
}

func writeJSON(path string, rep report) error {
	data, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return fmt.Errorf("report: %w", err)
	}
	if err := os.WriteFile(path, append(data, '\n'), 0o644); err != nil {
		return fmt.Errorf("writing the report: %w", err)
	}
	return nil
}

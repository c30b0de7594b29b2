// Command bench trains the CPU backend on the two settings of `make bench-cpu`, driving the
// backend in process (no plugin transport), and prints ms/iter and tokens/s per setting.
// bench_torch.py does the same model and optimizer steps with PyTorch; run.sh runs both.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"runtime/pprof"
	"time"

	"github.com/mypt/mypt/backends/cpu"
	"github.com/mypt/mypt/sdk"
	pb "github.com/mypt/mypt/sdk/proto/backendv1"
)

// setting is one benchmark model; both use MyPT's GPT-2 style (learned positions,
// LayerNorm, GELU MLP), untied, attention without biases.
type setting struct {
	name                    string
	vocab, block, layers    int
	heads, width, batchSize int
}

var settings = []setting{
	{"shakespeare-char", 65, 64, 4, 4, 128, 12},
	{"gpt2-2L-64w-50304v", 50304, 64, 2, 4, 64, 4},
}

func main() {
	steps := flag.Int("steps", 50, "timed training steps per setting")
	warmup := flag.Int("warmup", 5, "untimed steps first")
	only := flag.String("setting", "", "run only this setting")
	threads := flag.Int("threads", 2, "cores to use")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of all settings to this file")
	flag.Parse()
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			slog.Error("cpuprofile", "err", err)
			os.Exit(1)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			slog.Error("cpuprofile", "err", err)
			os.Exit(1)
		}
		defer pprof.StopCPUProfile()
	}
	for _, s := range settings {
		if *only != "" && *only != s.name {
			continue
		}
		if err := run(s, *steps, *warmup, *threads); err != nil {
			slog.Error("bench failed", "setting", s.name, "err", err)
			pprof.StopCPUProfile()
			os.Exit(1)
		}
	}
}

func spec(s setting) *pb.ModelSpec {
	m := &pb.ModelSpec{VocabSize: uint32(s.vocab), BlockSize: uint32(s.block), NLayer: uint32(s.layers),
		NHead: uint32(s.heads), NEmbd: uint32(s.width), MlpHidden: uint32(4 * s.width),
		PosEncoding: pb.PosEncoding_POS_ENCODING_LEARNED, MlpType: pb.MLPType_MLP_TYPE_GELU,
		NormType: pb.NormType_NORM_TYPE_LAYERNORM, NormEps: 1e-5}
	add := func(name string, decay bool, shape ...int64) {
		m.Params = append(m.Params, &pb.ParamSpec{Name: name, Shape: shape, Dtype: pb.DType_DTYPE_F32, WeightDecay: decay})
	}
	V, C, T := int64(s.vocab), int64(s.width), int64(s.block)
	add("token_embedding_table.weight", false, V, C)
	add("position_embedding_table.weight", false, T, C)
	for l := 0; l < s.layers; l++ {
		p := fmt.Sprintf("blocks.%d.", l)
		add(p+"ln1.weight", false, C)
		add(p+"ln1.bias", false, C)
		add(p+"sa.qkv.weight", true, 3*C, C)
		add(p+"sa.proj.weight", true, C, C)
		add(p+"ln2.weight", false, C)
		add(p+"ln2.bias", false, C)
		add(p+"fwd.net.0.weight", true, 4*C, C)
		add(p+"fwd.net.0.bias", false, 4*C)
		add(p+"fwd.net.2.weight", true, C, 4*C)
		add(p+"fwd.net.2.bias", false, C)
	}
	add("ln_f.weight", false, C)
	add("ln_f.bias", false, C)
	add("lm_head.weight", true, V, C)
	add("lm_head.bias", false, V)
	return m
}

type tensorList struct {
	h  *pb.StateHeader
	ts []*sdk.Tensor
}

func (l *tensorList) Header() *pb.StateHeader { return l.h }
func (l *tensorList) Next() (*sdk.Tensor, error) {
	if len(l.ts) == 0 {
		return nil, ioEOF
	}
	t := l.ts[0]
	l.ts = l.ts[1:]
	return t, nil
}

func run(s setting, steps, warmup, threads int) error {
	ctx := context.Background()
	b := cpu.New(cpu.Options{Threads: threads})
	m := spec(s)
	if _, err := b.Configure(ctx, &pb.ConfigureRequest{Model: m, Optimizer: &pb.OptimizerSpec{Beta1: 0.9, Beta2: 0.95, Eps: 1e-8},
		MaxBatchSize: uint32(s.batchSize)}); err != nil {
		return fmt.Errorf("configure: %w", err)
	}
	defer b.Shutdown(ctx)
	rng := rand.New(rand.NewPCG(1, 2))
	st := &tensorList{h: &pb.StateHeader{TensorCount: uint32(len(m.Params))}}
	for _, p := range m.Params {
		n := int64(1)
		for _, d := range p.Shape {
			n *= d
		}
		data := make([]byte, 4*n)
		for i := int64(0); i < n; i++ {
			v := float32(0.02 * rng.NormFloat64())
			if len(p.Shape) == 1 {
				v = 0
				if p.Name[len(p.Name)-6:] == "weight" {
					v = 1
				}
			}
			putF32(data[4*i:], v)
		}
		st.ts = append(st.ts, &sdk.Tensor{Name: p.Name, Role: pb.TensorRole_TENSOR_ROLE_PARAM, Shape: p.Shape, DType: pb.DType_DTYPE_F32, Data: data})
	}
	if _, err := b.SetState(ctx, st); err != nil {
		return fmt.Errorf("set state: %w", err)
	}
	n := s.batchSize * s.block
	batch := &pb.Batch{BatchSize: uint32(s.batchSize), SeqLen: uint32(s.block),
		Tokens: make([]int32, n), Targets: make([]int32, n), LossWeights: make([]float32, n)}
	var loss float64
	var start time.Time
	for it := 0; it < warmup+steps; it++ {
		if it == warmup {
			start = time.Now()
		}
		for i := range batch.Tokens {
			batch.Tokens[i] = int32(rng.IntN(s.vocab))
			batch.Targets[i] = int32(rng.IntN(s.vocab))
			batch.LossWeights[i] = 1
		}
		fb, err := b.ForwardBackward(ctx, &pb.ForwardBackwardRequest{Batch: batch, GradScale: 1 / float32(n)})
		if err != nil {
			return fmt.Errorf("forward/backward: %w", err)
		}
		loss = fb.LossSum / float64(n)
		if _, err := b.OptimizerStep(ctx, &pb.OptimizerStepRequest{LearningRate: 1e-3, WeightDecay: 0.1, ClipNorm: 1}); err != nil {
			return fmt.Errorf("optimizer step: %w", err)
		}
	}
	ms := float64(time.Since(start).Microseconds()) / 1000 / float64(steps)
	fmt.Printf("mypt %s: %.2f ms/iter, %.0f tokens/s (loss %.3f)\n", s.name, ms, float64(n)/ms*1000, loss)
	return nil
}

package model

import (
	"math"
	"strings"
	"testing"

	"github.com/mypt/mypt/core/config"
)

func load(t *testing.T, path string) config.Config {
	t.Helper()
	cfg, _, err := config.Load(config.Sources{File: path})
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// TestParameterCounts checks the counts of MyPT's module definitions
// (docs/MYPT.md §11 model architecture, §14 weight-decay groups).
func TestParameterCounts(t *testing.T) {
	cfg := load(t, "../../configs/750M_1024_chat_sft_phase3a.json")
	total, decay := NewSpec(cfg).NumParams()
	if total != 698_911_104 || decay != 634_388_480 || total-decay != 64_522_624 {
		t.Fatalf("750M tied: total %d decay %d no-decay %d; want 698,911,104 / 634,388,480 / 64,522,624", total, decay, total-decay)
	}
	cfg.TieWeights = false
	if total, _ := NewSpec(cfg).NumParams(); total != 763_300_224 {
		t.Errorf("750M untied: %d, want 763,300,224", total)
	}
	cfg.TieWeights, cfg.Bias = true, true
	if total, _ := NewSpec(cfg).NumParams(); total != 698_911_104+163_840 {
		t.Errorf("750M bias: %d, want %d", total, 698_911_104+163_840)
	}
	gpt2 := load(t, "../../configs/750M_1024_chat_sft_phase3a.json")
	gpt2.PosEncoding, gpt2.MLPType, gpt2.NormType = "learned", "gelu", "layernorm"
	if total, _ := NewSpec(gpt2).NumParams(); total != 695_266_944 {
		t.Errorf("750M GPT-2 style tied: %d, want 695,266,944", total)
	}
	for file, want := range map[string]int64{"tiny": 21_168_384, "small": 49_420_416, "micro": 6_692_352} {
		if total, _ := NewSpec(load(t, "../../configs/"+file+".json")).NumParams(); total != want {
			t.Errorf("%s: %d params, want %d", file, total, want)
		}
	}
	tc := load(t, "../../configs/tiny.json")
	tc.VocabSize = 256
	if total, _ := NewSpec(tc).NumParams(); total != 1_899_904 {
		t.Errorf("tiny_char: %d, want 1,899,904", total)
	}
}

func TestSwiGLUHidden(t *testing.T) {
	for c, want := range map[int]int{1280: 3456, 384: 1024, 192: 512, 64: 192} {
		if got := MLPHidden("swiglu", c); got != want {
			t.Errorf("hidden(%d) = %d, want %d", c, got, want)
		}
	}
}

func TestNamesAndInit(t *testing.T) {
	cfg := load(t, "../../configs/750M_1024_chat_sft_phase3a.json")
	cfg.NLayer, cfg.NEmbd, cfg.VocabSize = 2, 64, 512
	spec := NewSpec(cfg)
	var names []string
	for _, p := range spec.Params {
		names = append(names, p.Name)
	}
	want := "token_embedding_table.weight,blocks.0.sa.qkv.weight,blocks.0.sa.proj.weight,blocks.0.fwd.w_gate.weight," +
		"blocks.0.fwd.w_up.weight,blocks.0.fwd.w_down.weight,blocks.0.ln1.weight,blocks.0.ln2.weight"
	if got := strings.Join(names[:8], ","); got != want {
		t.Fatalf("names = %s\nwant   %s", got, want)
	}
	if names[len(names)-1] != "lm_head.bias" || names[len(names)-2] != "ln_f.weight" {
		t.Fatalf("tail names = %v", names[len(names)-2:])
	}
	for _, p := range spec.Params {
		vals := InitTensor(p, 7)
		var sum, sq float64
		for _, v := range vals {
			sum += float64(v)
			sq += float64(v) * float64(v)
		}
		n := float64(len(vals))
		mean, std := sum/n, math.Sqrt(sq/n-(sum/n)*(sum/n))
		switch {
		case strings.HasSuffix(p.Name, "ln1.weight") || strings.HasSuffix(p.Name, "ln2.weight") || p.Name == "ln_f.weight":
			if mean != 1 || std != 0 {
				t.Errorf("%s: mean %v std %v, want ones", p.Name, mean, std)
			}
		case strings.HasSuffix(p.Name, "bias"):
			if sq != 0 {
				t.Errorf("%s is not zero", p.Name)
			}
		default:
			wantStd := 0.02
			if strings.HasSuffix(p.Name, "sa.proj.weight") || strings.HasSuffix(p.Name, "w_down.weight") {
				wantStd = 0.02 / math.Sqrt(4) // 1/sqrt(2·n_layer), attention's proj included
			}
			if math.Abs(std-wantStd) > 0.05*wantStd || math.Abs(mean) > 4*wantStd/math.Sqrt(n) {
				t.Errorf("%s: mean %.5f std %.5f, want N(0, %.5f)", p.Name, mean, std, wantStd)
			}
		}
	}
	// Deterministic, and independent of other parameters.
	a, b := InitTensor(spec.Params[1], 7), InitTensor(spec.Params[1], 7)
	c := InitTensor(spec.Params[1], 8)
	if a[0] != b[0] || a[100] != b[100] || a[0] == c[0] {
		t.Fatal("init is not a pure function of (seed, name)")
	}
}

// TestFreeze checks MyPT's freeze_layers / freeze_embeddings: the first N blocks and the
// embedding tables are frozen (with tied weights that is lm_head.weight too, one tensor),
// nothing else, and the flags reach the ModelSpec sent to backends.
func TestFreeze(t *testing.T) {
	cfg := config.Default()
	cfg.NLayer, cfg.NEmbd, cfg.NHead, cfg.VocabSize, cfg.BlockSize = 12, 16, 2, 50, 8
	for _, tied := range []bool{true, false} {
		cfg.TieWeights = tied
		base := NewSpec(cfg)
		s := base.Freeze(2, true)
		var frozenN int64
		for i, p := range s.Params {
			want := strings.HasPrefix(p.Name, "blocks.0.") || strings.HasPrefix(p.Name, "blocks.1.") ||
				p.Name == "token_embedding_table.weight" || p.Name == "position_embedding_table.weight"
			if p.Frozen != want {
				t.Errorf("tied %v: %s frozen %v, want %v", tied, p.Name, p.Frozen, want)
			}
			if base.Params[i].Frozen {
				t.Errorf("Freeze changed the receiver: %s", p.Name)
			}
			if pr := s.Proto().Params[i]; pr.Frozen != want || pr.Name != p.Name {
				t.Errorf("Proto: %s frozen %v, want %v", pr.Name, pr.Frozen, want)
			}
			if want {
				frozenN += p.Numel()
			}
		}
		if got := s.FrozenParams(); got != frozenN || got == 0 {
			t.Errorf("FrozenParams = %d, want %d", got, frozenN)
		}
		// blocks.10 and blocks.11 must not match a "blocks.1" prefix test.
		for _, p := range base.Freeze(1, false).Params {
			if p.Frozen != strings.HasPrefix(p.Name, "blocks.0.") {
				t.Errorf("freeze_layers 1: %s frozen %v", p.Name, p.Frozen)
			}
		}
		if n := base.Freeze(0, false).FrozenParams(); n != 0 {
			t.Errorf("no freezing: %d frozen", n)
		}
		if n := base.Freeze(0, true).FrozenParams(); n != int64(cfg.VocabSize+cfg.BlockSize)*int64(cfg.NEmbd) {
			t.Errorf("freeze_embeddings only: %d frozen", n)
		}
		for _, p := range base.Freeze(12, true).Params {
			if lm := strings.HasPrefix(p.Name, "lm_head.") || strings.HasPrefix(p.Name, "ln_f."); p.Frozen == lm {
				t.Errorf("everything frozen: %s frozen %v", p.Name, p.Frozen)
			}
		}
	}
}

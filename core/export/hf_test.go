package export

import (
	"encoding/binary"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mypt/mypt/core/config"
	"github.com/mypt/mypt/core/model"
	"github.com/mypt/mypt/core/myptckpt"
)

// The sources are MyPT checkpoints written by PyTorch
// (core/myptckpt/testdata/gen.py); testdata/<name>/ holds the Hugging Face
// directory that testdata/hf_reference.py mapped from them independently and
// verified against the MyPT logits.
var exportable = []string{"gpt2_f32_tied", "gpt2_bf16_untied", "llama_bf16_tied", "llama_f16_untied_bias"}

func myptFixture(name string) string { return filepath.Join("..", "myptckpt", "testdata", name) }

func convert(t *testing.T, name string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "ck")
	if _, err := myptckpt.Convert(myptFixture(name), dst); err != nil {
		t.Fatal(err)
	}
	return dst
}

type stTensor struct {
	dtype string
	shape []int64
	data  []byte
}

func readST(t *testing.T, path string) (map[string]stTensor, map[string]string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	n := binary.LittleEndian.Uint64(b)
	if n%8 != 0 {
		t.Fatalf("%s: header length %d is not a multiple of 8", path, n)
	}
	var hdr map[string]json.RawMessage
	if err := json.Unmarshal(b[8:8+n], &hdr); err != nil {
		t.Fatal(err)
	}
	body := b[8+n:]
	var meta map[string]string
	out := map[string]stTensor{}
	for k, v := range hdr {
		if k == "__metadata__" {
			json.Unmarshal(v, &meta)
			continue
		}
		var e struct {
			DType       string   `json:"dtype"`
			Shape       []int64  `json:"shape"`
			DataOffsets [2]int64 `json:"data_offsets"`
		}
		if err := json.Unmarshal(v, &e); err != nil {
			t.Fatal(err)
		}
		out[k] = stTensor{e.DType, e.Shape, body[e.DataOffsets[0]:e.DataOffsets[1]]}
	}
	return out, meta
}

func TestHFMatchesReferenceMapping(t *testing.T) {
	for _, name := range exportable {
		t.Run(name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "hf")
			res, err := HF(convert(t, name), out, Options{})
			if err != nil {
				t.Fatal(err)
			}
			got, meta := readST(t, filepath.Join(out, "model.safetensors"))
			if meta["format"] != "pt" {
				t.Fatalf("metadata %v", meta)
			}
			want, _ := readST(t, filepath.Join("testdata", name, "model.safetensors"))
			if len(got) != len(want) {
				t.Fatalf("%d tensors, reference has %d", len(got), len(want))
			}
			for k, w := range want {
				g, ok := got[k]
				if !ok {
					t.Fatalf("missing %s", k)
				}
				if g.dtype != "F32" || !slicesEqual(g.shape, w.shape) || string(g.data) != string(w.data) {
					t.Fatalf("%s: %s %v differs from the reference's %s %v", k, g.dtype, g.shape, w.dtype, w.shape)
				}
			}
			// Every key the reference's config has must agree.
			var gc, wc map[string]any
			readJSON(t, filepath.Join(out, "config.json"), &gc)
			readJSON(t, filepath.Join("testdata", name, "config.json"), &wc)
			for k, w := range wc {
				wb, _ := json.Marshal(w)
				gb, _ := json.Marshal(gc[k])
				if string(wb) != string(gb) {
					t.Fatalf("config.json %s = %s, reference %s", k, gb, wb)
				}
			}
			t.Logf("%s: %d tensors, notes %v", res.Architecture, len(got), res.Notes)
		})
	}
}

// TestHFReferenceForward runs the independent Hugging Face-convention forward
// pass (testdata/hf_reference.py) on our export when PyTorch is available.
func TestHFReferenceForward(t *testing.T) {
	py := "/usr/bin/python3"
	if err := exec.Command(py, "-c", "import torch, numpy").Run(); err != nil {
		t.Skipf("PyTorch not available at %s (%v); the committed reference mapping is still checked", py, err)
	}
	for _, name := range exportable {
		dtypes := []string{"f32"}
		if strings.HasPrefix(name, "llama_bf16") || strings.HasPrefix(name, "gpt2_bf16") {
			dtypes = append(dtypes, "bf16")
		}
		for _, dt := range dtypes {
			t.Run(name+"/"+dt, func(t *testing.T) {
				out := filepath.Join(t.TempDir(), "hf")
				if _, err := HF(convert(t, name), out, Options{DType: dt}); err != nil {
					t.Fatal(err)
				}
				cmd := exec.Command(py, filepath.Join("testdata", "hf_reference.py"), "check", out, filepath.Join(myptFixture(name), "expected.json"))
				b, err := cmd.Output()
				if err != nil {
					t.Fatalf("%v: %s", err, stderr(err))
				}
				var r struct {
					MaxAbsLogits     float64 `json:"max_abs_logits"`
					MaxAbsLogSoftmax float64 `json:"max_abs_log_softmax"`
				}
				if err := json.Unmarshal(b, &r); err != nil {
					t.Fatalf("%v: %s", err, b)
				}
				t.Logf("max |log_softmax - MyPT| = %.3g, max |logits - MyPT| = %.3g", r.MaxAbsLogSoftmax, r.MaxAbsLogits)
				// bf16 sources round-trip exactly through a bf16 export.
				tol := 1e-6
				if r.MaxAbsLogSoftmax > tol {
					t.Fatalf("HF forward differs from MyPT's by %g", r.MaxAbsLogSoftmax)
				}
			})
		}
	}
}

func stderr(err error) string {
	if ee, ok := err.(*exec.ExitError); ok {
		return string(ee.Stderr)
	}
	return ""
}

func TestHFRefusals(t *testing.T) {
	t.Run("lm_head bias", func(t *testing.T) {
		ck := convert(t, "gpt2_f32_headbias")
		_, err := HF(ck, filepath.Join(t.TempDir(), "hf"), Options{})
		if err == nil || !strings.Contains(err.Error(), "lm_head.bias is not constant") || !strings.Contains(err.Error(), "--drop-lm-head-bias") {
			t.Fatalf("err = %v", err)
		}
		res, err := HF(ck, filepath.Join(t.TempDir(), "hf"), Options{DropLMHeadBias: true})
		if err != nil || len(res.Notes) != 1 || !strings.Contains(res.Notes[0], "DROPPED") {
			t.Fatalf("drop: %v %v", res, err)
		}
	})
	t.Run("constant bias note", func(t *testing.T) {
		res, err := HF(convert(t, "gpt2_bf16_untied"), filepath.Join(t.TempDir(), "hf"), Options{})
		if err != nil || len(res.Notes) != 1 || !strings.Contains(res.Notes[0], "constant 0.375") {
			t.Fatalf("%v %v", res, err)
		}
	})
	t.Run("dtype", func(t *testing.T) {
		_, err := HF(convert(t, "gpt2_f32_tied"), filepath.Join(t.TempDir(), "hf"), Options{DType: "f8"})
		if err == nil || !strings.Contains(err.Error(), "unknown export dtype") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("mixed architecture", func(t *testing.T) {
		cfg := config.Default()
		cfg.PosEncoding, cfg.MLPType, cfg.NormType = "rope", "gelu", "layernorm"
		_, err := Arch(model.NewSpec(cfg))
		if err == nil || !strings.Contains(err.Error(), "pos_encoding=rope, mlp_type=gelu, norm_type=layernorm") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("existing output", func(t *testing.T) {
		src := convert(t, "llama_bf16_tied")
		out := filepath.Join(t.TempDir(), "hf")
		os.Mkdir(out, 0o755)
		if _, err := HF(src, out, Options{}); err == nil || !strings.Contains(err.Error(), "already exists") {
			t.Fatalf("err = %v", err)
		}
		if _, err := HF(src, out, Options{Force: true}); err != nil {
			t.Fatal(err)
		}
		entries, _ := os.ReadDir(filepath.Dir(out))
		if len(entries) != 1 {
			t.Fatalf("leftovers beside the output: %v", entries)
		}
	})
}

func readJSON(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

func slicesEqual(a, b []int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

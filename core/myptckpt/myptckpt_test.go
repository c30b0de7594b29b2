package myptckpt

import (
	"archive/zip"
	"context"
	"encoding/binary"
	"encoding/json"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/mypt/mypt/backends/cpu"
	"github.com/mypt/mypt/core/checkpoint"
	"github.com/mypt/mypt/core/generate"
	pb "github.com/mypt/mypt/sdk/proto/backendv1"
	"github.com/mypt/mypt/sdk/sdktesting"
)

// fixtures are written by testdata/gen.py (PyTorch).
var fixtures = []string{"gpt2_f32_tied", "gpt2_bf16_untied", "llama_bf16_tied", "llama_f16_untied_bias", "gpt2_f32_headbias"}

type expected struct {
	Tensors []struct {
		Name  string  `json:"name"`
		Shape []int64 `json:"shape"`
		DType string  `json:"dtype"`
	} `json:"tensors"`
	IDs       []int32   `json:"ids"`
	VocabSize int       `json:"vocab_size"`
	Logits    []float64 `json:"logits"`
	values    map[string][]float32
}

func loadExpected(t *testing.T, dir string) *expected {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "expected.json"))
	if err != nil {
		t.Fatal(err)
	}
	var e expected
	if err := json.Unmarshal(b, &e); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(dir, "expected.bin"))
	if err != nil {
		t.Fatal(err)
	}
	e.values = map[string][]float32{}
	off := 0
	for _, ts := range e.Tensors {
		n := 1
		for _, d := range ts.Shape {
			n *= int(d)
		}
		v := make([]float32, n)
		for i := range v {
			v[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[off+4*i:]))
		}
		off += 4 * n
		e.values[ts.Name] = v
	}
	if off != len(raw) {
		t.Fatalf("expected.bin has %d bytes, the tensors %d", len(raw), off)
	}
	return &e
}

func TestReadEveryTensor(t *testing.T) {
	for _, name := range fixtures {
		t.Run(name, func(t *testing.T) {
			dir := filepath.Join("testdata", name)
			if !IsMyPTCheckpoint(dir) {
				t.Fatal("IsMyPTCheckpoint = false")
			}
			e := loadExpected(t, dir)
			c, err := Open(dir)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			var wantNames []string
			for _, ts := range e.Tensors {
				wantNames = append(wantNames, ts.Name)
			}
			if !slices.Equal(c.Names(), wantNames) {
				t.Fatalf("names %v, want %v", c.Names(), wantNames)
			}
			for _, ts := range e.Tensors {
				info, _ := c.Info(ts.Name)
				if info.DType != ts.DType || !slices.Equal(info.Shape, ts.Shape) {
					t.Fatalf("%s: info %+v, want %s %v", ts.Name, info, ts.DType, ts.Shape)
				}
				got, shape, err := c.Tensor(ts.Name)
				if err != nil {
					t.Fatal(err)
				}
				if !slices.Equal(shape, ts.Shape) {
					t.Fatalf("%s: shape %v", ts.Name, shape)
				}
				for i, w := range e.values[ts.Name] {
					if math.Float32bits(got[i]) != math.Float32bits(w) {
						t.Fatalf("%s[%d] = %v, torch says %v", ts.Name, i, got[i], w)
					}
				}
			}
			if _, err := c.Config(); err != nil {
				t.Fatal(err)
			}
			if c.Step() != 123 {
				t.Fatalf("step %d", c.Step())
			}
		})
	}
}

// TestConvertLogits converts each fixture and runs the CPU backend on it:
// its logits must match the PyTorch MyPT-architecture forward pass.
func TestConvertLogits(t *testing.T) {
	for _, name := range fixtures {
		t.Run(name, func(t *testing.T) {
			dir := filepath.Join("testdata", name)
			e := loadExpected(t, dir)
			dst := filepath.Join(t.TempDir(), "ck")
			if _, err := Convert(dir, dst); err != nil {
				t.Fatal(err)
			}
			ck, err := checkpoint.Open(dst)
			if err != nil {
				t.Fatal(err)
			}
			for _, ts := range e.Tensors {
				if ts.Name == LMHeadName && ck.TieWeights() {
					continue
				}
				tn, err := ck.ReadTensor(ts.Name, pb.TensorRole_TENSOR_ROLE_PARAM, pb.DType_DTYPE_F32)
				if err != nil {
					t.Fatal(err)
				}
				for i, w := range e.values[ts.Name] {
					if got := math.Float32frombits(binary.LittleEndian.Uint32(tn.Data[4*i:])); math.Float32bits(got) != math.Float32bits(w) {
						t.Fatalf("converted %s[%d] = %v, want %v", ts.Name, i, got, w)
					}
				}
			}
			ck.Close()

			logits := CPULogits(t, dst, e.IDs)
			maxErr := 0.0
			for i, w := range e.Logits {
				maxErr = math.Max(maxErr, math.Abs(float64(logits[i])-w))
			}
			t.Logf("max |logit - torch| = %.3g", maxErr)
			if maxErr > 2e-5 {
				t.Fatalf("CPU backend logits differ from PyTorch's by %g", maxErr)
			}
		})
	}
}

// CPULogits loads the mypt checkpoint dir into the CPU backend and returns
// the T·V logits for ids.
func CPULogits(t *testing.T, dir string, ids []int32) []float32 {
	t.Helper()
	c := sdktesting.Connect(t, cpu.New(cpu.Options{}))
	ctx := context.Background()
	if _, err := generate.Load(ctx, dir, c); err != nil {
		t.Fatal(err)
	}
	w := make([]float32, len(ids))
	ev, err := c.Evaluate(ctx, &pb.EvaluateRequest{Batch: &pb.Batch{
		BatchSize: 1, SeqLen: uint32(len(ids)), Tokens: ids, Targets: ids, LossWeights: w,
	}, ReturnLogits: true})
	if err != nil {
		t.Fatal(err)
	}
	return ev.GetLogits()
}

func TestErrors(t *testing.T) {
	src := filepath.Join("testdata", "gpt2_f32_tied")
	copyDir := func(t *testing.T) string {
		d := t.TempDir()
		for _, f := range []string{ModelFile, ConfigFile, TokenizerFile} {
			b, err := os.ReadFile(filepath.Join(src, f))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(d, f), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		return d
	}
	t.Run("wrong config shape", func(t *testing.T) {
		d := copyDir(t)
		b, _ := os.ReadFile(filepath.Join(d, ConfigFile))
		b = []byte(strings.Replace(string(b), `"n_embd": 16`, `"n_embd": 32`, 1))
		os.WriteFile(filepath.Join(d, ConfigFile), b, 0o644)
		_, err := Convert(d, filepath.Join(t.TempDir(), "x"))
		if err == nil || !strings.Contains(err.Error(), "token_embedding_table.weight") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("not a zip", func(t *testing.T) {
		d := copyDir(t)
		os.WriteFile(filepath.Join(d, ModelFile), []byte("\x80\x02}q\x00."), 0o644)
		_, err := Open(d)
		if err == nil || !strings.Contains(err.Error(), "zip") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("evil global", func(t *testing.T) {
		_, err := unpickle([]byte("\x80\x02cos\nsystem\nq\x00X\x02\x00\x00\x00lsq\x01\x85q\x02Rq\x03."))
		if err == nil || !strings.Contains(err.Error(), "refusing global os.system") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("unknown opcode", func(t *testing.T) {
		_, err := unpickle([]byte("\x80\x02Vabc\n."))
		if err == nil || !strings.Contains(err.Error(), "unsupported pickle opcode") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("truncated storage", func(t *testing.T) {
		d := copyDir(t)
		rewriteZip(t, filepath.Join(d, ModelFile), func(name string, b []byte) []byte {
			if strings.HasSuffix(name, "/data/0") {
				return b[:len(b)-4]
			}
			return b
		})
		c, err := Open(d)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_, _, err = c.Tensor(c.Names()[0])
		if err == nil || !strings.Contains(err.Error(), "bytes, want") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("tied but different", func(t *testing.T) {
		d := copyDir(t)
		// Untied weights in a config that claims tie_weights.
		u := filepath.Join("testdata", "gpt2_bf16_untied")
		for _, f := range []string{ModelFile, ConfigFile} {
			b, _ := os.ReadFile(filepath.Join(u, f))
			os.WriteFile(filepath.Join(d, f), b, 0o644)
		}
		b, _ := os.ReadFile(filepath.Join(d, ConfigFile))
		os.WriteFile(filepath.Join(d, ConfigFile), []byte(strings.Replace(string(b), `"tie_weights": false`, `"tie_weights": true`, 1)), 0o644)
		_, err := Convert(d, filepath.Join(t.TempDir(), "x"))
		if err == nil || !strings.Contains(err.Error(), "differ") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("ours is not MyPT", func(t *testing.T) {
		if IsMyPTCheckpoint(t.TempDir()) {
			t.Fatal("empty dir is a MyPT checkpoint")
		}
	})
}

func rewriteZip(t *testing.T, path string, edit func(string, []byte) []byte) {
	t.Helper()
	zr, err := zip.OpenReader(path)
	if err != nil {
		t.Fatal(err)
	}
	type rec struct {
		name string
		data []byte
	}
	var recs []rec
	for _, f := range zr.File {
		r, _ := f.Open()
		b := make([]byte, f.UncompressedSize64)
		if _, err := io.ReadFull(r, b); err != nil {
			t.Fatal(err)
		}
		r.Close()
		recs = append(recs, rec{f.Name, edit(f.Name, b)})
	}
	zr.Close()
	out, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	zw := zip.NewWriter(out)
	for _, r := range recs {
		w, _ := zw.CreateHeader(&zip.FileHeader{Name: r.name, Method: zip.Store})
		w.Write(r.data)
	}
	zw.Close()
	out.Close()
}

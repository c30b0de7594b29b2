package checkpoint

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"hash/crc32"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/mypt/mypt/sdk"
	pb "github.com/mypt/mypt/sdk/proto/backendv1"
)

// Known bit patterns, worked out by hand from the IEEE layouts (bfloat16 rounding is
// sdk.F32ToBF16's, tested there).
func TestConversionKnownBits(t *testing.T) {
	h := []struct {
		in   uint32
		want uint16
		why  string
	}{
		{0x3F800000, 0x3C00, "1.0"},
		{0x477FE000, 0x7BFF, "65504, the largest f16"},
		{0x477FF000, 0x7C00, "65520: tie between 65504 and 65536 goes to even (Inf)"},
		{0x38800000, 0x0400, "2^-14, smallest f16 normal"},
		{0x33800000, 0x0001, "2^-24, smallest f16 subnormal"},
		{0x33000000, 0x0000, "2^-25: tie between 0 and 2^-24 goes to even (0)"},
		{0x33C00000, 0x0002, "1.5·2^-24: tie goes to even (2)"},
		{0x3F801000, 0x3C00, "1+2^-11: tie, stays at even 1.0"},
		{0x3F803000, 0x3C02, "1+3·2^-11: tie, rounds to even mantissa 2"},
	}
	for _, c := range h {
		if got := F32ToF16(math.Float32frombits(c.in)); got != c.want {
			t.Errorf("F32ToF16(%08x) = %04x, want %04x (%s)", c.in, got, c.want, c.why)
		}
	}
	if got := BF16ToF32(0xC049); math.Float32bits(got) != 0xC0490000 {
		t.Errorf("BF16ToF32(c049) = %08x", math.Float32bits(got))
	}
	if got := F16ToF32(0x0001); got != float32(math.Ldexp(1, -24)) {
		t.Errorf("F16ToF32(0001) = %g, want 2^-24", got)
	}
}

// Conversions against torch (bf16) and numpy (f16) rounding, recorded by
// testdata/reference.py.
func TestConversionMatchesReference(t *testing.T) {
	var ref struct {
		Narrow []struct {
			F32  uint32 `json:"f32"`
			BF16 uint16 `json:"bf16"`
			F16  uint16 `json:"f16"`
			NaN  bool   `json:"nan"`
		} `json:"narrow"`
		F16ToF32CRC  uint32 `json:"f16_to_f32_crc32"`
		BF16ToF32CRC uint32 `json:"bf16_to_f32_crc32"`
	}
	b, err := os.ReadFile("testdata/dtype_cases.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &ref); err != nil {
		t.Fatal(err)
	}
	if len(ref.Narrow) < 2000 {
		t.Fatalf("only %d cases", len(ref.Narrow))
	}
	for _, c := range ref.Narrow {
		f := math.Float32frombits(c.F32)
		gotBF, gotH := sdk.F32ToBF16(f), F32ToF16(f)
		if c.NaN {
			// NaN payloads differ between libraries; NaN-ness must not.
			if !isNaN32(math.Float32bits(BF16ToF32(gotBF))) || !isNaN32(math.Float32bits(F16ToF32(gotH))) {
				t.Errorf("%08x: NaN became %04x (bf16) / %04x (f16)", c.F32, gotBF, gotH)
			}
			continue
		}
		if gotBF != c.BF16 {
			t.Errorf("F32ToBF16(%08x) = %04x, torch says %04x", c.F32, gotBF, c.BF16)
		}
		if gotH != c.F16 {
			t.Errorf("F32ToF16(%08x) = %04x, numpy says %04x", c.F32, gotH, c.F16)
		}
	}
	wideH, wideBF := make([]byte, 4*65536), make([]byte, 4*65536)
	for i := range 65536 {
		binary.LittleEndian.PutUint32(wideH[4*i:], math.Float32bits(F16ToF32(uint16(i))))
		binary.LittleEndian.PutUint32(wideBF[4*i:], math.Float32bits(BF16ToF32(uint16(i))))
	}
	if got := crc32.ChecksumIEEE(wideH); got != ref.F16ToF32CRC {
		t.Errorf("F16ToF32 over all 65536 patterns: CRC %08x, numpy's %08x", got, ref.F16ToF32CRC)
	}
	if got := crc32.ChecksumIEEE(wideBF); got != ref.BF16ToF32CRC {
		t.Errorf("BF16ToF32 over all 65536 patterns: CRC %08x, torch's %08x", got, ref.BF16ToF32CRC)
	}
}

type expectedFixture struct {
	OptimizerSteps uint64 `json:"optimizer_steps"`
	TieWeights     bool   `json:"tie_weights"`
	Tensors        map[string]struct {
		DType string   `json:"dtype"`
		Shape []int64  `json:"shape"`
		Bits  []uint64 `json:"bits"`
	} `json:"tensors"`
}

// The committed checkpoints written by reference.py must read exactly.
func TestReadReferenceFixtures(t *testing.T) {
	for _, tc := range []struct {
		dir     string
		tied    bool
		moments bool
		dtype   pb.DType
		step    int
	}{
		{"ref_tied_f32", true, true, f32, 42},
		{"ref_untied_bf16", false, false, bf16, 7},
	} {
		t.Run(tc.dir, func(t *testing.T) {
			var exp expectedFixture
			b, err := os.ReadFile(filepath.Join("testdata", tc.dir+".expected.json"))
			if err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(b, &exp); err != nil {
				t.Fatal(err)
			}
			c, err := Open(filepath.Join("testdata", tc.dir))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if c.TieWeights() != tc.tied || c.HasOptimizer() != tc.moments || c.OptimizerSteps() != exp.OptimizerSteps {
				t.Fatalf("tie %v optimizer %v steps %d", c.TieWeights(), c.HasOptimizer(), c.OptimizerSteps())
			}
			var st testState
			if err := c.TrainingState(&st); err != nil || st.Step != tc.step || st.BestValLoss != 2.5 {
				t.Fatalf("training state %+v, %v", st, err)
			}
			var cfg testConfig
			if err := c.Config(&cfg); err != nil || cfg.TieWeights != tc.tied || cfg.NEmbd != 8 {
				t.Fatalf("config %+v, %v", cfg, err)
			}
			if !bytes.Contains(c.TokenizerJSON(), []byte(`"gpt2"`)) {
				t.Fatalf("tokenizer %s", c.TokenizerJSON())
			}
			want := tinyGPT(tc.tied, tc.moments, tc.dtype)
			if err := c.Check(want); err != nil {
				t.Fatal(err)
			}
			if got := len(c.Layout().Tensors); got != len(exp.Tensors) {
				t.Fatalf("%d stored tensors, reference wrote %d", got, len(exp.Tensors))
			}
			for _, s := range want.Tensors {
				key := "param:" + s.Name
				if s.Role != roleParam {
					key = "moment:" + storedName(s.Name, s.Role)
				}
				e, ok := exp.Tensors[key]
				if !ok {
					t.Fatalf("reference has no %s", key)
				}
				got, err := c.ReadTensor(s.Name, s.Role, pb.DType_DTYPE_UNSPECIFIED)
				if err != nil {
					t.Fatal(err)
				}
				if dtypeName(got.DType) != e.DType || !slices.Equal(got.Shape, e.Shape) {
					t.Fatalf("%s: %s %v, reference %s %v", key, dtypeName(got.DType), got.Shape, e.DType, e.Shape)
				}
				size := sdk.DTypeSize(got.DType)
				for i, bits := range e.Bits {
					var v uint64
					if size == 4 {
						v = uint64(binary.LittleEndian.Uint32(got.Data[4*i:]))
					} else {
						v = uint64(binary.LittleEndian.Uint16(got.Data[2*i:]))
					}
					if v != bits {
						t.Fatalf("%s[%d] = %x, reference %x", key, i, v, bits)
					}
				}
			}
			// A bf16 checkpoint loads into F32 training exactly (widening).
			if tc.dtype == bf16 {
				r, err := c.NewStateReader(tinyGPT(tc.tied, false, f32))
				if err != nil {
					t.Fatal(err)
				}
				first, err := r.Next()
				if err != nil {
					t.Fatal(err)
				}
				e := exp.Tensors["param:"+first.Name]
				vals, _ := sdk.F32Values(first.Data)
				for i, bits := range e.Bits {
					if math.Float32bits(vals[i]) != uint32(bits)<<16 {
						t.Fatalf("%s[%d] widened to %08x, want %08x", first.Name, i, math.Float32bits(vals[i]), uint32(bits)<<16)
					}
				}
			}
		})
	}
}

// The Go writer's files must pass the Python reference reader, bit for bit,
// and a StoreAs copy must equal torch's own conversion of the F32 tensors.
func TestReferenceReadsWriterOutput(t *testing.T) {
	py := referencePython(t)
	root := t.TempDir()
	l := tinyGPT(true, true, f32)
	tensors := fillTensors(t, l, 3)
	f32dir := filepath.Join(root, "latest")
	writeCheckpoint(t, f32dir, l, tensors, 11)

	out, err := exec.Command(py, "testdata/reference.py", "check", f32dir).Output()
	if err != nil {
		t.Fatalf("reference check: %v\n%s", err, stderrOf(err))
	}
	var res struct {
		TieWeights    string         `json:"tie_weights"`
		TrainingState map[string]any `json:"training_state"`
		Tensors       map[string]struct {
			DType string   `json:"dtype"`
			Bits  []uint64 `json:"bits"`
		} `json:"tensors"`
	}
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatal(err)
	}
	if res.TieWeights != "true" || res.TrainingState["optimizer_steps"] != float64(11) || res.TrainingState["step"] != float64(11) {
		t.Fatalf("reference saw tie_weights %q, training state %v", res.TieWeights, res.TrainingState)
	}
	if len(res.Tensors) != len(tensors) {
		t.Fatalf("reference saw %d tensors, wrote %d", len(res.Tensors), len(tensors))
	}
	for _, tt := range tensors {
		file, _ := fileFor(tt.Role)
		got := res.Tensors[file+":"+storedName(tt.Name, tt.Role)]
		want := u32s(tt.Data)
		if got.DType != "F32" || len(got.Bits) != len(want) {
			t.Fatalf("%s: reference saw %s with %d elements", tt.Name, got.DType, len(got.Bits))
		}
		for i := range want {
			if uint32(got.Bits[i]) != want[i] {
				t.Fatalf("%s[%d]: reference read %08x, wrote %08x", tt.Name, i, got.Bits[i], want[i])
			}
		}
	}
	for _, d := range []pb.DType{bf16, f16} {
		dir := filepath.Join(root, "deploy_"+dtypeName(d))
		writeCheckpoint(t, dir, l.Params(), tensors[:len(l.Params().Tensors)], 11, StoreAs(d))
		if _, err := exec.Command(py, "testdata/reference.py", "check", dir, "--against", f32dir).Output(); err != nil {
			t.Fatalf("reference check of %s copy: %v\n%s", dtypeName(d), err, stderrOf(err))
		}
	}
}

func stderrOf(err error) string {
	if ee, ok := err.(*exec.ExitError); ok {
		return string(ee.Stderr)
	}
	return ""
}

func TestRoundTripAndConversionOnRead(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ckpt")
	l := tinyGPT(false, true, f32)
	tensors := fillTensors(t, l, 5)
	writeCheckpoint(t, dir, l, tensors, 9)
	assertContents(t, dir, l, tensors, 9)

	c, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.OptimizerSteps() != 9 || !c.HasOptimizer() || c.TieWeights() {
		t.Fatalf("steps %d optimizer %v tie %v", c.OptimizerSteps(), c.HasOptimizer(), c.TieWeights())
	}
	// Params only: the header says 0 optimizer steps (fresh optimizer).
	r, err := c.NewStateReader(l.Params())
	if err != nil {
		t.Fatal(err)
	}
	if r.Header().GetOptimizerSteps() != 0 || int(r.Header().GetTensorCount()) != len(l.Params().Tensors) {
		t.Fatalf("header %v", r.Header())
	}
	// Reading as BF16 rounds each element like F32ToBF16.
	got, err := c.ReadTensor("blocks.0.sa.qkv.weight", roleParam, bf16)
	if err != nil {
		t.Fatal(err)
	}
	var src *sdk.Tensor
	for _, tt := range tensors {
		if tt.Name == "blocks.0.sa.qkv.weight" && tt.Role == roleParam {
			src = tt
		}
	}
	vals, _ := sdk.F32Values(src.Data)
	for i, v := range vals {
		if h := binary.LittleEndian.Uint16(got.Data[2*i:]); h != sdk.F32ToBF16(v) {
			t.Fatalf("element %d: %04x, want %04x", i, h, sdk.F32ToBF16(v))
		}
	}
	// The envelope comes first and the caller's keys keep their order.
	ts := string(c.TrainingStateJSON())
	order := []string{`"format_version": 1`, `"optimizer_steps": 9`, `"step": 9`, `"best_val_loss"`, `"sampler"`}
	pos := 0
	for _, k := range order {
		i := strings.Index(ts[pos:], k)
		if i < 0 {
			t.Fatalf("training_state.json lacks %s in order:\n%s", k, ts)
		}
		pos += i
	}
}

func TestTrainingStateEnvelope(t *testing.T) {
	l := tinyGPT(true, false, f32)
	tensors := fillTensors(t, l, 1)
	for _, tc := range []struct {
		state   any
		wantErr string
	}{
		{map[string]any{"optimizer_steps": 3}, "sets optimizer_steps to 3, but it is 5"},
		{map[string]any{"format_version": 2}, "sets format_version to 2"},
		{[]int{1}, "must encode as a JSON object"},
		{map[string]any{"optimizer_steps": 5, "format_version": 1, "x": 1}, ""},
		{nil, ""},
	} {
		dir := filepath.Join(t.TempDir(), "c")
		w, err := NewWriter(dir, l)
		if err != nil {
			t.Fatal(err)
		}
		feed(t, w, tensors, 5)
		meta := testMeta(0)
		meta.TrainingState = tc.state
		err = w.Commit(meta)
		if tc.wantErr == "" {
			if err != nil {
				t.Fatalf("%v: %v", tc.state, err)
			}
			c, err := Open(dir)
			if err != nil {
				t.Fatal(err)
			}
			if c.OptimizerSteps() != 5 {
				t.Fatalf("optimizer steps %d", c.OptimizerSteps())
			}
			c.Close()
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
			t.Fatalf("%v: error %v, want %q", tc.state, err, tc.wantErr)
		}
		if left := leftovers(t, dir); len(left) != 0 {
			t.Fatalf("failed commit left %v", left)
		}
	}
}

func TestWriterRejectsMismatches(t *testing.T) {
	l := tinyGPT(true, true, f32)
	good := fillTensors(t, l, 2)
	qkv := good[4] // blocks.0.sa.qkv.weight [24 8]
	if qkv.Name != "blocks.0.sa.qkv.weight" {
		t.Fatalf("fixture order changed: %s", qkv.Name)
	}
	for _, tc := range []struct {
		name    string
		tensor  *sdk.Tensor
		wantErr string
	}{
		{"unknown", &sdk.Tensor{Name: "blocks.9.sa.qkv.weight", Role: roleParam, Shape: qkv.Shape, DType: f32, Data: qkv.Data}, "parameter blocks.9.sa.qkv.weight is not in the checkpoint layout"},
		{"shape", &sdk.Tensor{Name: qkv.Name, Role: roleParam, Shape: []int64{8, 24}, DType: f32, Data: qkv.Data}, "parameter blocks.0.sa.qkv.weight has shape [8 24], layout says [24 8]"},
		{"dtype", &sdk.Tensor{Name: qkv.Name, Role: roleParam, Shape: qkv.Shape, DType: bf16, Data: qkv.Data[:len(qkv.Data)/2]}, "parameter blocks.0.sa.qkv.weight has dtype BF16, layout says F32"},
		{"size", &sdk.Tensor{Name: qkv.Name, Role: roleParam, Shape: qkv.Shape, DType: f32, Data: qkv.Data[4:]}, "parameter blocks.0.sa.qkv.weight has 764 data bytes, shape [24 8] of F32 needs 768"},
		{"role", &sdk.Tensor{Name: qkv.Name, Role: pb.TensorRole_TENSOR_ROLE_GRAD, Shape: qkv.Shape, DType: f32, Data: qkv.Data}, "blocks.0.sa.qkv.weight is not in the checkpoint layout"},
		{"tied head", &sdk.Tensor{Name: "lm_head.weight", Role: roleParam, Shape: []int64{16, 8}, DType: f32, Data: make([]byte, 512)}, "parameter lm_head.weight is not in the checkpoint layout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "c")
			w, err := NewWriter(dir, l)
			if err != nil {
				t.Fatal(err)
			}
			defer w.Abort()
			err = w.WriteTensor(tc.tensor)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error %v, want %q", err, tc.wantErr)
			}
		})
	}
	t.Run("duplicate", func(t *testing.T) {
		w, err := NewWriter(filepath.Join(t.TempDir(), "c"), l)
		if err != nil {
			t.Fatal(err)
		}
		defer w.Abort()
		if err := w.WriteTensor(qkv); err != nil {
			t.Fatal(err)
		}
		if err := w.WriteTensor(qkv); err == nil || !strings.Contains(err.Error(), "blocks.0.sa.qkv.weight arrived twice") {
			t.Fatalf("error %v", err)
		}
	})
	t.Run("missing at commit", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "c")
		w, err := NewWriter(dir, l)
		if err != nil {
			t.Fatal(err)
		}
		for _, tt := range good {
			if !(tt.Role == roleV && tt.Name == "ln_f.bias") {
				if err := w.WriteTensor(tt); err != nil {
					t.Fatal(err)
				}
			}
		}
		err = w.Commit(testMeta(1))
		if err == nil || !strings.Contains(err.Error(), "AdamW exp_avg_sq of ln_f.bias was never written") {
			t.Fatalf("error %v", err)
		}
		if _, err := os.Stat(dir); !os.IsNotExist(err) {
			t.Fatalf("target exists after failed commit: %v", err)
		}
		if left := leftovers(t, dir); len(left) != 0 {
			t.Fatalf("left %v", left)
		}
	})
	t.Run("bad layout", func(t *testing.T) {
		bad := tinyGPT(true, false, f32)
		bad.Tensors = append(bad.Tensors, TensorSpec{Name: "lm_head.weight", Role: roleParam, Shape: []int64{16, 8}, DType: f32})
		if _, err := NewWriter(filepath.Join(t.TempDir(), "c"), bad); err == nil || !strings.Contains(err.Error(), "lm_head.weight must not be listed") {
			t.Fatalf("error %v", err)
		}
		bad = tinyGPT(true, true, f32)
		bad.Tensors[len(bad.Tensors)-1].Shape = []int64{3}
		if _, err := NewWriter(filepath.Join(t.TempDir(), "c"), bad); err == nil || !strings.Contains(err.Error(), "AdamW exp_avg_sq of lm_head.bias has shape [3], its parameter [16]") {
			t.Fatalf("error %v", err)
		}
	})
}

func TestCheckNamesMismatchingTensor(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "c")
	l := tinyGPT(true, false, f32)
	writeCheckpoint(t, dir, l, fillTensors(t, l, 4), 1)
	c, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	shape := tinyGPT(true, false, f32)
	shape.Tensors[4].Shape = []int64{36, 12}
	missing := tinyGPT(true, false, f32)
	missing.Tensors = append(missing.Tensors, TensorSpec{Name: "blocks.1.ln1.weight", Role: roleParam, Shape: []int64{8}, DType: f32})
	extra := tinyGPT(true, false, f32)
	extra.Tensors = slices.Delete(extra.Tensors, 2, 3)
	for _, tc := range []struct {
		expect  Layout
		wantErr string
	}{
		{shape, "checkpoint tensor blocks.0.sa.qkv.weight has shape [24 8], model expects [36 12]"},
		{missing, "checkpoint has no tensor blocks.1.ln1.weight (model expects shape [8])"},
		{extra, "checkpoint tensor blocks.0.ln1.weight is not in the model"},
		{tinyGPT(false, false, f32), "checkpoint has tie_weights=true, model has tie_weights=false"},
		{tinyGPT(true, true, f32), "has no optimizer.safetensors"},
		{tinyGPT(true, false, bf16), ""},
	} {
		err := c.Check(tc.expect)
		if tc.wantErr == "" {
			if err != nil {
				t.Errorf("unexpected %v", err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("error %v, want %q", err, tc.wantErr)
		}
		if _, err := c.NewStateReader(tc.expect); err == nil {
			t.Errorf("NewStateReader accepted a layout Check rejects (%s)", tc.wantErr)
		}
	}
}

func TestCorruptionIsDetected(t *testing.T) {
	l := tinyGPT(true, true, f32)
	tensors := fillTensors(t, l, 6)
	setup := func(t *testing.T) string {
		dir := filepath.Join(t.TempDir(), "c")
		writeCheckpoint(t, dir, l, tensors, 2)
		return dir
	}
	flip := func(t *testing.T, path string, off int64) {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if off < 0 {
			off += int64(len(b))
		}
		b[off] ^= 0x10
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Run("tensor data", func(t *testing.T) {
		dir := setup(t)
		c0, _ := Open(dir)
		last := c0.model.h.Entries[len(c0.model.h.Entries)-1].Name
		c0.Close()
		flip(t, filepath.Join(dir, ModelFile), -1) // last byte belongs to the last tensor
		c, err := Open(dir)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		err = c.Verify()
		if err == nil || !strings.Contains(err.Error(), "tensor "+last+" in model.safetensors is corrupt") {
			t.Fatalf("error %v", err)
		}
	})
	t.Run("json file", func(t *testing.T) {
		dir := setup(t)
		flip(t, filepath.Join(dir, ConfigFile), 5)
		if _, err := Open(dir); err == nil || !strings.Contains(err.Error(), "config.json is corrupt") {
			t.Fatalf("error %v", err)
		}
	})
	t.Run("truncated", func(t *testing.T) {
		dir := setup(t)
		p := filepath.Join(dir, OptimizerFile)
		st, _ := os.Stat(p)
		if err := os.Truncate(p, st.Size()-4); err != nil {
			t.Fatal(err)
		}
		if _, err := Open(dir); err == nil || !strings.Contains(err.Error(), "optimizer.safetensors is") {
			t.Fatalf("error %v", err)
		}
	})
	t.Run("no manifest", func(t *testing.T) {
		dir := setup(t)
		os.Remove(filepath.Join(dir, ManifestFile))
		if _, err := Open(dir); err == nil || !strings.Contains(err.Error(), "manifest.json") {
			t.Fatalf("error %v", err)
		}
	})
}

func TestHeaderValidation(t *testing.T) {
	mk := func(header string, data int) []byte {
		b := make([]byte, 8, 8+len(header)+data)
		binary.LittleEndian.PutUint64(b, uint64(len(header)))
		b = append(b, header...)
		return append(b, make([]byte, data)...)
	}
	for _, tc := range []struct {
		file    []byte
		wantErr string
	}{
		{mk(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}`, 8), ""},
		{mk(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"a":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}`, 16), "tensor a appears twice"},
		{mk(`{"a":{"dtype":"I8","shape":[2],"data_offsets":[0,2]}}`, 2), `tensor a: dtype "I8" is not supported`},
		{mk(`{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}`, 8), "tensor a: data_offsets [0, 8] hold 8 bytes, shape [3] of F32 needs 12"},
		{mk(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}`, 12), "tensor b: data starts at byte 4, expected 8"},
		{mk(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}`, 12), "tensors hold 8 bytes of data but the file has 12"},
		{mk(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}  x`, 8), "unexpected bytes after the JSON object"},
		{mk(`[]`, 0), "does not start with '{'"},
		{mk(`{"__metadata__":{"k":1}}`, 0), "must map strings to strings"},
		{[]byte{0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, '{', '}'}, "does not fit"},
	} {
		_, err := readHeader(bytes.NewReader(tc.file), int64(len(tc.file)), "x.safetensors")
		if tc.wantErr == "" {
			if err != nil {
				t.Errorf("unexpected %v", err)
			}
		} else if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("error %v, want %q", err, tc.wantErr)
		}
	}
	// Round trip of the encoder, with 8-byte alignment of the data.
	entries, size, err := layoutEntries([]stEntry{{Name: "x", DType: bf16, Shape: []int64{3}}, {Name: "y\"z", DType: f32, Shape: []int64{}}})
	if err != nil {
		t.Fatal(err)
	}
	hdr, err := encodeHeader(entries, map[string]string{"tie_weights": "true"})
	if err != nil {
		t.Fatal(err)
	}
	if len(hdr)%8 != 0 {
		t.Fatalf("header of %d bytes is not 8-aligned", len(hdr))
	}
	h, err := readHeader(bytes.NewReader(append(hdr, make([]byte, size)...)), int64(len(hdr))+size, "x")
	if err != nil {
		t.Fatal(err)
	}
	if len(h.Entries) != 2 || h.Entries[1].Name != "y\"z" || h.Entries[1].Begin != 6 || h.Metadata["tie_weights"] != "true" {
		t.Fatalf("parsed %+v", h)
	}
}

// A tensor over 64 MiB streams through write, conversion and read.
func TestLargeTensor(t *testing.T) {
	const rows, cols = 4100, 4100 // 67,240,000 bytes of F32 > 64 MiB
	l := Layout{Tensors: []TensorSpec{{Name: "token_embedding_table.weight", Role: roleParam, Shape: []int64{rows, cols}, DType: f32}}, TieWeights: true}
	v := make([]float32, rows*cols)
	for i := range v {
		v[i] = float32(i%1000003) * 0.001
	}
	tt := sdk.F32Tensor(l.Tensors[0].Name, roleParam, l.Tensors[0].Shape, v)
	if len(tt.Data) <= 64<<20 {
		t.Fatalf("tensor is only %d bytes", len(tt.Data))
	}
	dir := filepath.Join(t.TempDir(), "big")
	writeCheckpoint(t, dir, l, []*sdk.Tensor{tt}, 1)
	c, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	got, err := c.ReadTensor(tt.Name, roleParam, pb.DType_DTYPE_UNSPECIFIED)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Data, tt.Data) {
		t.Fatal("large tensor differs after round trip")
	}
	half, err := c.ReadTensor(tt.Name, roleParam, bf16)
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range []int{0, 1, 12345, rows*cols - 1} {
		if h := binary.LittleEndian.Uint16(half.Data[2*i:]); h != sdk.F32ToBF16(v[i]) {
			t.Fatalf("element %d as bf16: %04x, want %04x", i, h, sdk.F32ToBF16(v[i]))
		}
	}
}

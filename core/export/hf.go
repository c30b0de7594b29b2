// Package export writes mypt checkpoints in other projects' layouts.
//
// HF writes a Hugging Face transformers model directory: GPT-2-style models
// (learned positions, LayerNorm, GELU MLP) as GPT2LMHeadModel and
// LLaMA-style models (RoPE, RMSNorm, SwiGLU) as LlamaForCausalLM, each as
// model.safetensors (with {"format":"pt"} metadata) plus config.json,
// generation_config.json and the tokenizer files that can be derived
// offline. Features a Hugging Face class cannot express are refused with an
// error naming them, never silently approximated; see docs/INTEROP.md.
package export

import (
	"encoding/json"
	"fmt"
	"log/slog"

	"os"
	"path/filepath"

	"github.com/mypt/mypt/core/atomicfile"
	"github.com/mypt/mypt/core/checkpoint"
	"github.com/mypt/mypt/core/config"
	"github.com/mypt/mypt/core/model"
	"github.com/mypt/mypt/sdk"
	pb "github.com/mypt/mypt/sdk/proto/backendv1"
)

// Options configures HF.
type Options struct {
	// DType of the exported weights: "f32" (default), "bf16" or "f16".
	DType string
	// DropLMHeadBias exports a model whose lm_head bias is not constant by
	// dropping the bias. This changes the model's outputs; without it such
	// a model is refused.
	DropLMHeadBias bool
	// Force replaces an existing output directory.
	Force bool
	// Logger receives progress and warnings (default slog.Default()).
	Logger *slog.Logger
}

// Result describes an export.
type Result struct {
	Architecture string   // GPT2LMHeadModel or LlamaForCausalLM
	Files        []string // files written, relative to the output directory
	Notes        []string // lossless adjustments made (e.g. a constant lm_head bias dropped)
}

// Arch names the Hugging Face architecture a model maps to, or returns an
// error naming the MyPT settings no Hugging Face class has.
func Arch(s model.Spec) (string, error) {
	switch {
	case s.LearnedPos && !s.SwiGLU && s.LayerNorm:
		return "GPT2LMHeadModel", nil
	case !s.LearnedPos && s.SwiGLU && !s.LayerNorm:
		return "LlamaForCausalLM", nil
	}
	pick := func(on bool, yes, no string) string {
		if on {
			return yes
		}
		return no
	}
	return "", fmt.Errorf("no Hugging Face architecture for pos_encoding=%s, mlp_type=%s, norm_type=%s: "+
		"GPT2LMHeadModel needs learned/gelu/layernorm and LlamaForCausalLM rope/swiglu/rmsnorm",
		pick(s.LearnedPos, "learned", "rope"), pick(s.SwiGLU, "swiglu", "gelu"), pick(s.LayerNorm, "layernorm", "rmsnorm"))
}

// HF exports the checkpoint in ckptDir (a checkpoint or a run directory
// already resolved by the caller) to outDir. The directory appears
// atomically: it is written beside outDir and renamed into place.
func HF(ckptDir, outDir string, opt Options) (*Result, error) {
	log := opt.Logger
	if log == nil {
		log = slog.Default()
	}
	if _, _, err := dtypeInfo(opt.DType); err != nil {
		return nil, err
	}
	ck, err := checkpoint.Open(ckptDir)
	if err != nil {
		return nil, err
	}
	defer ck.Close()
	cfg, _, err := config.Load(config.Sources{File: filepath.Join(ckptDir, checkpoint.ConfigFile), Data: ck.ConfigJSON()})
	if err != nil {
		return nil, fmt.Errorf("checkpoint %s: %w", ckptDir, err)
	}
	spec := model.NewSpec(cfg)
	arch, err := Arch(spec)
	if err != nil {
		return nil, err
	}
	if err := ck.Check(checkpoint.LayoutFromModelSpec(spec.Proto(), false)); err != nil {
		return nil, fmt.Errorf("checkpoint %s: %w", ckptDir, err)
	}
	read := func(name string) ([]float32, error) {
		t, err := ck.ReadTensor(name, pb.TensorRole_TENSOR_ROLE_PARAM, pb.DType_DTYPE_F32)
		if err != nil {
			return nil, err
		}
		v, err := sdk.F32Values(t.Data)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		return v, nil
	}
	res := &Result{Architecture: arch}

	// lm_head.bias: Hugging Face's heads have none. A constant bias shifts
	// every logit equally, so softmax (and every sampling method) is
	// unchanged and it can be dropped; anything else cannot be expressed.
	bias, err := read("lm_head.bias")
	if err != nil {
		return nil, err
	}
	minB, maxB := bias[0], bias[0]
	for _, b := range bias {
		minB, maxB = min(minB, b), max(maxB, b)
	}
	switch {
	case minB == maxB && minB == 0:
	case minB == maxB:
		res.Notes = append(res.Notes, fmt.Sprintf("lm_head.bias is the constant %g and was dropped: logits shift by it, probabilities are unchanged", minB))
	case opt.DropLMHeadBias:
		msg := fmt.Sprintf("lm_head.bias (range [%g, %g]) was DROPPED on request: the exported model's outputs differ from the checkpoint's", minB, maxB)
		res.Notes = append(res.Notes, msg)
		log.Warn(msg)
	default:
		return nil, fmt.Errorf("lm_head.bias is not constant (range [%g, %g]) and %s has no lm_head bias, so the exported model would differ; "+
			"pass --drop-lm-head-bias to export without it anyway", minB, maxB, arch)
	}

	var tensors []hfTensor
	var hfConfig map[string]any
	if arch == "GPT2LMHeadModel" {
		tensors, hfConfig = gpt2Layout(spec, read)
	} else {
		tensors, hfConfig = llamaLayout(spec, read)
	}
	dtName, _, _ := dtypeInfo(opt.DType)
	hfConfig["torch_dtype"] = map[string]string{"F32": "float32", "BF16": "bfloat16", "F16": "float16"}[dtName]
	tokFiles, eos, err := tokenizerFiles(ck.TokenizerJSON(), spec.VocabSize)
	if err != nil {
		return nil, err
	}
	gen := map[string]any{"_from_model_config": true}
	if eos >= 0 {
		hfConfig["bos_token_id"], hfConfig["eos_token_id"] = eos, eos
		gen["bos_token_id"], gen["eos_token_id"] = eos, eos
	}

	tmp, err := os.MkdirTemp(filepath.Dir(filepath.Clean(outDir)), "."+filepath.Base(outDir)+".export-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	if err := writeSafetensors(filepath.Join(tmp, "model.safetensors"), tensors, opt.DType); err != nil {
		return nil, fmt.Errorf("export %s: %w", ckptDir, err)
	}
	res.Files = append(res.Files, "model.safetensors")
	files := map[string]any{"config.json": hfConfig, "generation_config.json": gen}
	for name, v := range tokFiles {
		files[name] = v
	}
	for _, name := range sortedKeys(files) {
		var b []byte
		if raw, ok := files[name].(json.RawMessage); ok {
			b = raw
		} else if b, err = json.MarshalIndent(files[name], "", "  "); err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		if err := atomicfile.WriteNew(filepath.Join(tmp, name), append(b, '\n')); err != nil {
			return nil, err
		}
		res.Files = append(res.Files, name)
	}
	if err := commitDir(tmp, outDir, opt.Force); err != nil {
		return nil, err
	}
	log.Info("exported", "from", ckptDir, "to", outDir, "architecture", arch, "dtype", dtName, "tensors", len(tensors))
	return res, nil
}

type reader func(string) ([]float32, error)

func sp(format string, a ...any) string { return fmt.Sprintf(format, a...) }

// copyOf exports a MyPT tensor unchanged.
func copyOf(read reader, name string) func() ([]float32, error) {
	return func() ([]float32, error) { return read(name) }
}

// transposed exports the [rows, cols] MyPT (nn.Linear) weight as its
// [cols, rows] transpose (HF Conv1D layout).
func transposed(read reader, name string, rows, cols int) func() ([]float32, error) {
	return func() ([]float32, error) {
		v, err := read(name)
		if err != nil {
			return nil, err
		}
		out := make([]float32, len(v))
		for r := range rows {
			for c := range cols {
				out[c*rows+r] = v[r*cols+c]
			}
		}
		return out, nil
	}
}

// rowSlice exports rows [from, to) of a row-major tensor with cols columns.
func rowSlice(read reader, name string, from, to, cols int) func() ([]float32, error) {
	return func() ([]float32, error) {
		v, err := read(name)
		if err != nil {
			return nil, err
		}
		return v[from*cols : to*cols], nil
	}
}

func zeros(n int) func() ([]float32, error) {
	return func() ([]float32, error) { return make([]float32, n), nil }
}

func gpt2Layout(s model.Spec, read reader) ([]hfTensor, map[string]any) {
	C, H := s.NEmbd, s.MLPHidden
	c64, h64 := int64(C), int64(H)
	t := []hfTensor{
		{"transformer.wte.weight", []int64{int64(s.VocabSize), c64}, copyOf(read, "token_embedding_table.weight")},
		{"transformer.wpe.weight", []int64{int64(s.BlockSize), c64}, copyOf(read, "position_embedding_table.weight")},
	}
	for i := range s.NLayer {
		p, b := sp("transformer.h.%d.", i), sp("blocks.%d.", i)
		optBias := func(name string, n int) func() ([]float32, error) {
			if s.Bias {
				return copyOf(read, name)
			}
			return zeros(n) // HF's Conv1D always has a bias; zeros are exact
		}
		t = append(t,
			hfTensor{p + "ln_1.weight", []int64{c64}, copyOf(read, b+"ln1.weight")},
			hfTensor{p + "ln_1.bias", []int64{c64}, copyOf(read, b+"ln1.bias")},
			hfTensor{p + "attn.c_attn.weight", []int64{c64, 3 * c64}, transposed(read, b+"sa.qkv.weight", 3*C, C)},
			hfTensor{p + "attn.c_attn.bias", []int64{3 * c64}, optBias(b+"sa.qkv.bias", 3*C)},
			hfTensor{p + "attn.c_proj.weight", []int64{c64, c64}, transposed(read, b+"sa.proj.weight", C, C)},
			hfTensor{p + "attn.c_proj.bias", []int64{c64}, optBias(b+"sa.proj.bias", C)},
			hfTensor{p + "ln_2.weight", []int64{c64}, copyOf(read, b+"ln2.weight")},
			hfTensor{p + "ln_2.bias", []int64{c64}, copyOf(read, b+"ln2.bias")},
			hfTensor{p + "mlp.c_fc.weight", []int64{c64, h64}, transposed(read, b+"fwd.net.0.weight", H, C)},
			hfTensor{p + "mlp.c_fc.bias", []int64{h64}, copyOf(read, b+"fwd.net.0.bias")},
			hfTensor{p + "mlp.c_proj.weight", []int64{h64, c64}, transposed(read, b+"fwd.net.2.weight", C, H)},
			hfTensor{p + "mlp.c_proj.bias", []int64{c64}, copyOf(read, b+"fwd.net.2.bias")},
		)
	}
	t = append(t,
		hfTensor{"transformer.ln_f.weight", []int64{c64}, copyOf(read, "ln_f.weight")},
		hfTensor{"transformer.ln_f.bias", []int64{c64}, copyOf(read, "ln_f.bias")})
	if !s.TieWeights {
		t = append(t, hfTensor{"lm_head.weight", []int64{int64(s.VocabSize), c64}, copyOf(read, "lm_head.weight")})
	}
	cfg := map[string]any{
		"architectures":                   []string{"GPT2LMHeadModel"},
		"model_type":                      "gpt2",
		"vocab_size":                      s.VocabSize,
		"n_positions":                     s.BlockSize,
		"n_ctx":                           s.BlockSize,
		"n_embd":                          C,
		"n_layer":                         s.NLayer,
		"n_head":                          s.NHead,
		"n_inner":                         H,
		"activation_function":             "gelu", // exact erf GELU, as MyPT's nn.GELU()
		"layer_norm_epsilon":              s.NormEps,
		"resid_pdrop":                     0.0,
		"embd_pdrop":                      0.0,
		"attn_pdrop":                      0.0,
		"initializer_range":               0.02,
		"scale_attn_weights":              true,
		"scale_attn_by_inverse_layer_idx": false,
		"reorder_and_upcast_attn":         false,
		"tie_word_embeddings":             s.TieWeights,
		"use_cache":                       true,
	}
	return t, cfg
}

func llamaLayout(s model.Spec, read reader) ([]hfTensor, map[string]any) {
	C, H := s.NEmbd, s.MLPHidden
	c64, h64 := int64(C), int64(H)
	t := []hfTensor{{"model.embed_tokens.weight", []int64{int64(s.VocabSize), c64}, copyOf(read, "token_embedding_table.weight")}}
	for i := range s.NLayer {
		p, b := sp("model.layers.%d.", i), sp("blocks.%d.", i)
		t = append(t, hfTensor{p + "input_layernorm.weight", []int64{c64}, copyOf(read, b+"ln1.weight")})
		// MyPT's fused qkv rows are q | k | v; RoPE is rotate_half in both,
		// so no per-head permutation is needed.
		for j, n := range []string{"q_proj", "k_proj", "v_proj"} {
			t = append(t, hfTensor{p + "self_attn." + n + ".weight", []int64{c64, c64}, rowSlice(read, b+"sa.qkv.weight", j*C, (j+1)*C, C)})
			if s.Bias {
				t = append(t, hfTensor{p + "self_attn." + n + ".bias", []int64{c64}, rowSlice(read, b+"sa.qkv.bias", j*C, (j+1)*C, 1)})
			}
		}
		t = append(t, hfTensor{p + "self_attn.o_proj.weight", []int64{c64, c64}, copyOf(read, b+"sa.proj.weight")})
		if s.Bias {
			t = append(t, hfTensor{p + "self_attn.o_proj.bias", []int64{c64}, copyOf(read, b+"sa.proj.bias")})
		}
		t = append(t,
			hfTensor{p + "post_attention_layernorm.weight", []int64{c64}, copyOf(read, b+"ln2.weight")},
			hfTensor{p + "mlp.gate_proj.weight", []int64{h64, c64}, copyOf(read, b+"fwd.w_gate.weight")},
			hfTensor{p + "mlp.up_proj.weight", []int64{h64, c64}, copyOf(read, b+"fwd.w_up.weight")},
			hfTensor{p + "mlp.down_proj.weight", []int64{c64, h64}, copyOf(read, b+"fwd.w_down.weight")},
		)
	}
	t = append(t, hfTensor{"model.norm.weight", []int64{c64}, copyOf(read, "ln_f.weight")})
	if !s.TieWeights {
		t = append(t, hfTensor{"lm_head.weight", []int64{int64(s.VocabSize), c64}, copyOf(read, "lm_head.weight")})
	}
	var scaling any
	if s.RopeScale != 1 {
		// MyPT divides positions by rope_scale: HF's linear scaling.
		scaling = map[string]any{"type": "linear", "factor": s.RopeScale}
	}
	cfg := map[string]any{
		"architectures":           []string{"LlamaForCausalLM"},
		"model_type":              "llama",
		"vocab_size":              s.VocabSize,
		"hidden_size":             C,
		"intermediate_size":       H,
		"num_hidden_layers":       s.NLayer,
		"num_attention_heads":     s.NHead,
		"num_key_value_heads":     s.NHead,
		"head_dim":                C / s.NHead,
		"hidden_act":              "silu",
		"max_position_embeddings": s.BlockSize,
		"rms_norm_eps":            s.NormEps,
		"rope_theta":              s.RopeTheta,
		"rope_scaling":            scaling,
		"attention_bias":          s.Bias,
		"attention_dropout":       0.0,
		"mlp_bias":                false,
		"pretraining_tp":          1,
		"initializer_range":       0.02,
		"tie_word_embeddings":     s.TieWeights,
		"use_cache":               true,
	}
	return t, cfg
}

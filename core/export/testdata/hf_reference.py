#!/usr/bin/env python3
"""Independent Hugging Face reference for core/export (no transformers needed).

Debian has no python3-transformers and nothing may be downloaded, so this
script re-states the forward passes of transformers' GPT2LMHeadModel and
LlamaForCausalLM from their documented definitions, in float64 PyTorch, and
reads a Hugging Face model directory (config.json + model.safetensors, parsed
by hand) exactly as those classes would:

  GPT-2:  Conv1D computes x @ W + b with W stored [in, out] (transposed
          relative to nn.Linear); c_attn output split q|k|v; attention scaled
          by 1/sqrt(head_dim); activation_function "gelu" = exact erf GELU;
          LayerNorm(eps = layer_norm_epsilon); lm_head tied to wte when
          tie_word_embeddings (default true), else lm_head.weight.
  LLaMA:  LlamaRMSNorm w * x * rsqrt(mean(x^2) + rms_norm_eps); q/k/v/o_proj
          nn.Linear (bias iff attention_bias); RoPE inv_freq =
          1/theta^(arange(0, d, 2)/d), emb = cat(freqs, freqs), q*cos +
          rotate_half(q)*sin with rotate_half(x) = cat(-x2, x1); "linear"
          rope_scaling divides positions by factor; MLP down(silu(gate) * up).

The tensor-name set must be exactly what the class expects (no missing or
unexpected keys), as transformers would warn.

  hf_reference.py fixtures
      For each MyPT fixture in core/myptckpt/testdata (made by its gen.py),
      load model.pt with torch.load, map it to Hugging Face names with this
      script's own mapping, write testdata/<name>/{model.safetensors,
      config.json}, and assert that the HF forward pass of that directory
      reproduces the fixture's MyPT logits (up to the constant lm_head bias,
      compared after log_softmax).
  hf_reference.py check HFDIR EXPECTED_JSON
      Forward pass of HFDIR on EXPECTED_JSON's ids; prints JSON with the max
      abs differences of logits and of log-softmax against its logits.
"""
import json
import math
import os
import struct
import sys

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
MYPT = os.path.join(HERE, "..", "..", "myptckpt", "testdata")
EXPORTABLE = ["gpt2_f32_tied", "gpt2_bf16_untied", "llama_bf16_tied", "llama_f16_untied_bias"]


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    meta = header.pop("__metadata__", None)
    assert meta == {"format": "pt"}, meta
    body = data[8 + n:]
    out = {}
    end = 0
    for name, info in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
        a, b = info["data_offsets"]
        assert a == end, (name, a, end)
        end = b
        raw = np.frombuffer(body[a:b], dtype="<u2" if info["dtype"] in ("BF16", "F16") else "<f4")
        if info["dtype"] == "F32":
            t = torch.from_numpy(raw.astype(np.float32))
        elif info["dtype"] == "F16":
            t = torch.from_numpy(raw.view("<f2").astype(np.float32))
        elif info["dtype"] == "BF16":
            t = torch.from_numpy((raw.astype(np.uint32) << 16).view(np.float32))
        else:
            raise ValueError(info["dtype"])
        out[name] = t.reshape(info["shape"]).double()
    assert end == len(body), (end, len(body))
    return out


def write_safetensors(path, tensors):
    header = {"__metadata__": {"format": "pt"}}
    blobs, off = [], 0
    for name, t in tensors.items():
        b = t.float().contiguous().numpy().astype("<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [off, off + len(b)]}
        off += len(b)
        blobs.append(b)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def gpt2_expected_keys(c):
    keys = {"transformer.wte.weight", "transformer.wpe.weight", "transformer.ln_f.weight", "transformer.ln_f.bias"}
    for i in range(c["n_layer"]):
        for k in ["ln_1.weight", "ln_1.bias", "attn.c_attn.weight", "attn.c_attn.bias", "attn.c_proj.weight",
                  "attn.c_proj.bias", "ln_2.weight", "ln_2.bias", "mlp.c_fc.weight", "mlp.c_fc.bias",
                  "mlp.c_proj.weight", "mlp.c_proj.bias"]:
            keys.add(f"transformer.h.{i}.{k}")
    if not c.get("tie_word_embeddings", True):
        keys.add("lm_head.weight")
    return keys


def llama_expected_keys(c):
    keys = {"model.embed_tokens.weight", "model.norm.weight"}
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        keys |= {p + "input_layernorm.weight", p + "post_attention_layernorm.weight",
                 p + "mlp.gate_proj.weight", p + "mlp.up_proj.weight", p + "mlp.down_proj.weight"}
        for n in ["q_proj", "k_proj", "v_proj", "o_proj"]:
            keys.add(p + f"self_attn.{n}.weight")
            if c.get("attention_bias", False):
                keys.add(p + f"self_attn.{n}.bias")
    if not c.get("tie_word_embeddings", True):
        keys.add("lm_head.weight")
    return keys


def causal_attention(q, k, v):
    T, hd = q.shape[-2], q.shape[-1]
    att = (q @ k.transpose(-2, -1)) / math.sqrt(hd)
    att = att.masked_fill(torch.triu(torch.ones(T, T, dtype=torch.bool), 1), float("-inf"))
    return att.softmax(-1) @ v


def gpt2_forward(c, w, ids):
    T, C, nh = len(ids), c["n_embd"], c["n_head"]
    hd = C // nh
    assert c["activation_function"] == "gelu", c["activation_function"]
    eps = c["layer_norm_epsilon"]
    h = w["transformer.wte.weight"][ids] + w["transformer.wpe.weight"][torch.arange(T)]
    for i in range(c["n_layer"]):
        p = f"transformer.h.{i}."
        a = F.layer_norm(h, (C,), w[p + "ln_1.weight"], w[p + "ln_1.bias"], eps)
        qkv = a @ w[p + "attn.c_attn.weight"] + w[p + "attn.c_attn.bias"]  # Conv1D
        q, k, v = qkv.split(C, dim=-1)
        q, k, v = (t.view(T, nh, hd).transpose(0, 1) for t in (q, k, v))
        y = causal_attention(q, k, v).transpose(0, 1).reshape(T, C)
        h = h + y @ w[p + "attn.c_proj.weight"] + w[p + "attn.c_proj.bias"]
        m = F.layer_norm(h, (C,), w[p + "ln_2.weight"], w[p + "ln_2.bias"], eps)
        m = F.gelu(m @ w[p + "mlp.c_fc.weight"] + w[p + "mlp.c_fc.bias"])
        h = h + m @ w[p + "mlp.c_proj.weight"] + w[p + "mlp.c_proj.bias"]
    h = F.layer_norm(h, (C,), w["transformer.ln_f.weight"], w["transformer.ln_f.bias"], eps)
    head = w["transformer.wte.weight"] if c.get("tie_word_embeddings", True) else w["lm_head.weight"]
    return h @ head.T


def rotate_half(x):
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


def llama_forward(c, w, ids):
    T, C, nh = len(ids), c["hidden_size"], c["num_attention_heads"]
    assert c["num_key_value_heads"] == nh and c["hidden_act"] == "silu"
    hd = c.get("head_dim", C // nh)
    eps = c["rms_norm_eps"]

    def rms(x, wt):
        return wt * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))

    def lin(x, name):
        y = x @ w[name + ".weight"].T
        return y + w[name + ".bias"] if name + ".bias" in w else y

    inv_freq = 1.0 / (c["rope_theta"] ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd))
    pos = torch.arange(T, dtype=torch.float64)
    rs = c.get("rope_scaling")
    if rs is not None:
        assert rs.get("rope_type", rs.get("type")) == "linear", rs
        pos = pos / rs["factor"]
    freqs = torch.outer(pos, inv_freq)
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = emb.cos(), emb.sin()
    h = w["model.embed_tokens.weight"][ids]
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        a = rms(h, w[p + "input_layernorm.weight"])
        q, k, v = (lin(a, p + f"self_attn.{n}").view(T, nh, hd).transpose(0, 1) for n in ("q_proj", "k_proj", "v_proj"))
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        y = causal_attention(q, k, v).transpose(0, 1).reshape(T, C)
        h = h + lin(y, p + "self_attn.o_proj")
        m = rms(h, w[p + "post_attention_layernorm.weight"])
        h = h + lin(F.silu(lin(m, p + "mlp.gate_proj")) * lin(m, p + "mlp.up_proj"), p + "mlp.down_proj")
    h = rms(h, w["model.norm.weight"])
    head = w["model.embed_tokens.weight"] if c.get("tie_word_embeddings", True) else w["lm_head.weight"]
    return h @ head.T


def hf_forward(hfdir, ids):
    with open(os.path.join(hfdir, "config.json")) as f:
        c = json.load(f)
    w = read_safetensors(os.path.join(hfdir, "model.safetensors"))
    if c["model_type"] == "gpt2":
        assert c["architectures"] == ["GPT2LMHeadModel"]
        want, fwd = gpt2_expected_keys(c), gpt2_forward
    elif c["model_type"] == "llama":
        assert c["architectures"] == ["LlamaForCausalLM"]
        want, fwd = llama_expected_keys(c), llama_forward
    else:
        raise ValueError(c["model_type"])
    got = set(w)
    assert got == want, f"missing {sorted(want - got)}, unexpected {sorted(got - want)}"
    return fwd(c, w, torch.tensor(ids))


def mypt_to_hf(sd, g):
    """This script's own MyPT → HF mapping (state_dict and GPTConfig)."""
    C, L, V = g["n_embd"], g["n_layer"], g["vocab_size"]
    sd = {k: v.double() for k, v in sd.items()}
    out = {}
    if g["pos_encoding"] == "learned":
        out["transformer.wte.weight"] = sd["token_embedding_table.weight"]
        out["transformer.wpe.weight"] = sd["position_embedding_table.weight"]
        for i in range(L):
            p, b = f"transformer.h.{i}.", f"blocks.{i}."
            out[p + "ln_1.weight"], out[p + "ln_1.bias"] = sd[b + "ln1.weight"], sd[b + "ln1.bias"]
            out[p + "attn.c_attn.weight"] = sd[b + "sa.qkv.weight"].T
            out[p + "attn.c_attn.bias"] = sd.get(b + "sa.qkv.bias", torch.zeros(3 * C, dtype=torch.float64))
            out[p + "attn.c_proj.weight"] = sd[b + "sa.proj.weight"].T
            out[p + "attn.c_proj.bias"] = sd.get(b + "sa.proj.bias", torch.zeros(C, dtype=torch.float64))
            out[p + "ln_2.weight"], out[p + "ln_2.bias"] = sd[b + "ln2.weight"], sd[b + "ln2.bias"]
            out[p + "mlp.c_fc.weight"] = sd[b + "fwd.net.0.weight"].T
            out[p + "mlp.c_fc.bias"] = sd[b + "fwd.net.0.bias"]
            out[p + "mlp.c_proj.weight"] = sd[b + "fwd.net.2.weight"].T
            out[p + "mlp.c_proj.bias"] = sd[b + "fwd.net.2.bias"]
        out["transformer.ln_f.weight"], out["transformer.ln_f.bias"] = sd["ln_f.weight"], sd["ln_f.bias"]
        cfg = {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "vocab_size": V,
               "n_positions": g["block_size"], "n_embd": C, "n_layer": L, "n_head": g["n_head"],
               "activation_function": "gelu", "layer_norm_epsilon": 1e-5, "tie_word_embeddings": g["tie_weights"]}
    else:
        out["model.embed_tokens.weight"] = sd["token_embedding_table.weight"]
        for i in range(L):
            p, b = f"model.layers.{i}.", f"blocks.{i}."
            out[p + "input_layernorm.weight"] = sd[b + "ln1.weight"]
            out[p + "post_attention_layernorm.weight"] = sd[b + "ln2.weight"]
            for j, n in enumerate(["q_proj", "k_proj", "v_proj"]):
                out[p + f"self_attn.{n}.weight"] = sd[b + "sa.qkv.weight"][j * C:(j + 1) * C]
                if g["bias"]:
                    out[p + f"self_attn.{n}.bias"] = sd[b + "sa.qkv.bias"][j * C:(j + 1) * C]
            out[p + "self_attn.o_proj.weight"] = sd[b + "sa.proj.weight"]
            if g["bias"]:
                out[p + "self_attn.o_proj.bias"] = sd[b + "sa.proj.bias"]
            out[p + "mlp.gate_proj.weight"] = sd[b + "fwd.w_gate.weight"]
            out[p + "mlp.up_proj.weight"] = sd[b + "fwd.w_up.weight"]
            out[p + "mlp.down_proj.weight"] = sd[b + "fwd.w_down.weight"]
        out["model.norm.weight"] = sd["ln_f.weight"]
        hidden = sd["blocks.0.fwd.w_gate.weight"].shape[0]
        cfg = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "vocab_size": V, "hidden_size": C,
               "intermediate_size": hidden, "num_hidden_layers": L, "num_attention_heads": g["n_head"],
               "num_key_value_heads": g["n_head"], "hidden_act": "silu", "max_position_embeddings": g["block_size"],
               "rms_norm_eps": 1e-6, "rope_theta": g["rope_theta"], "attention_bias": g["bias"],
               "rope_scaling": None if g["rope_scale"] == 1 else {"type": "linear", "factor": g["rope_scale"]},
               "tie_word_embeddings": g["tie_weights"]}
    if not g["tie_weights"]:
        out["lm_head.weight"] = sd["lm_head.weight"]
    return out, cfg


def compare(logits, expected_logits):
    exp = torch.tensor(expected_logits, dtype=torch.float64).reshape(logits.shape)
    return {"max_abs_logits": float((logits - exp).abs().max()),
            "max_abs_log_softmax": float((logits.log_softmax(-1) - exp.log_softmax(-1)).abs().max())}


def fixtures():
    summary = {}
    for name in EXPORTABLE:
        src = os.path.join(MYPT, name)
        obj = torch.load(os.path.join(src, "model.pt"), map_location="cpu")
        sd = obj["state_dict"] if "state_dict" in obj else obj
        with open(os.path.join(src, "config.json")) as f:
            g = json.load(f)
        with open(os.path.join(src, "expected.json")) as f:
            exp = json.load(f)
        tensors, cfg = mypt_to_hf(sd, g)
        out = os.path.join(HERE, name)
        os.makedirs(out, exist_ok=True)
        write_safetensors(os.path.join(out, "model.safetensors"), tensors)
        with open(os.path.join(out, "config.json"), "w") as f:
            json.dump(cfg, f, indent=2)
        r = compare(hf_forward(out, exp["ids"]), exp["logits"])
        assert r["max_abs_log_softmax"] < 1e-9, (name, r)
        summary[name] = r
        print(name, r)
    with open(os.path.join(HERE, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)


def main():
    if sys.argv[1:2] == ["fixtures"]:
        fixtures()
    elif sys.argv[1:2] == ["check"] and len(sys.argv) == 4:
        with open(sys.argv[3]) as f:
            exp = json.load(f)
        print(json.dumps(compare(hf_forward(sys.argv[2], exp["ids"]), exp["logits"])))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()

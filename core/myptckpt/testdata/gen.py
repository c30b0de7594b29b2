#!/usr/bin/env python3
"""Writes tiny MyPT checkpoint directories for core/myptckpt's tests.

Each fixture directory holds what MyPT's save_checkpoint_bundle writes
(docs/MYPT.md §17): model.pt saved with torch.save exactly as MyPT does
(the dict form {"state_dict", "checkpoint_dtype", "model_dtype"} or, for one
fixture, a raw model.state_dict() OrderedDict), config.json = asdict(GPTConfig)
with all 26 fields, a char tokenizer.json and training_state.json.

Beside each model.pt the script writes, independently of any Go code:
  expected.json  tensor names/shapes/dtypes in state_dict order, fixed token
                 ids and the logits of a MyPT-architecture forward pass
                 (float64, from the values as stored)
  expected.bin   every tensor's stored values widened to float32,
                 little-endian, concatenated in the order of expected.json

The model below re-states MyPT's core/model.py architecture (docs/MYPT.md §11): pre-norm
blocks, fused qkv split q|k|v by rows, LayerNorm(eps 1e-5) or RMSNorm
(x*rsqrt(mean(x^2)+1e-6)*w), exact-erf GELU MLP or SwiGLU
(hidden = ceil64(int(8C/3))), learned positions or split-half RoPE with
t = arange/rope_scale, and an lm_head that always has a bias.

Run: /usr/bin/python3 core/myptckpt/testdata/gen.py   (torch required)
"""
import collections
import json
import math
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
IDS = [3, 17, 0, 42, 5, 9, 63, 1, 28, 11]


class RMSNorm(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(c))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * self.weight


def norm(cfg):
    return nn.LayerNorm(cfg["n_embd"]) if cfg["norm_type"] == "layernorm" else RMSNorm(cfg["n_embd"])


class Attn(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        c = cfg["n_embd"]
        self.cfg = cfg
        self.qkv = nn.Linear(c, 3 * c, bias=cfg["bias"])
        self.proj = nn.Linear(c, c, bias=cfg["bias"])

    def forward(self, x):
        B, T, C = x.shape
        nh = self.cfg["n_head"]
        hs = C // nh
        q, k, v = self.qkv(x).split(C, dim=2)
        q, k, v = (t.view(B, T, nh, hs).transpose(1, 2) for t in (q, k, v))
        if self.cfg["pos_encoding"] == "rope":
            freqs = 1.0 / (self.cfg["rope_theta"] ** (torch.arange(0, hs, 2, dtype=x.dtype) / hs))
            t = torch.arange(T, dtype=x.dtype) / self.cfg["rope_scale"]
            ang = torch.outer(t, freqs)
            cos, sin = ang.cos(), ang.sin()

            def rope(z):
                z1, z2 = z[..., : hs // 2], z[..., hs // 2:]
                return torch.cat([z1 * cos - z2 * sin, z2 * cos + z1 * sin], dim=-1)
            q, k = rope(q), rope(k)
        att = (q @ k.transpose(-2, -1)) / math.sqrt(hs)
        att = att.masked_fill(torch.triu(torch.ones(T, T, dtype=torch.bool), 1), float("-inf"))
        y = att.softmax(-1) @ v
        return self.proj(y.transpose(1, 2).reshape(B, T, C))


class GeluMLP(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(c, 4 * c), nn.GELU(), nn.Linear(4 * c, c), nn.Dropout(0.0))

    def forward(self, x):
        return self.net(x)


class SwiGLU(nn.Module):
    def __init__(self, c):
        super().__init__()
        h = ((int(8 * c / 3) + 63) // 64) * 64
        self.w_gate = nn.Linear(c, h, bias=False)
        self.w_up = nn.Linear(c, h, bias=False)
        self.w_down = nn.Linear(h, c, bias=False)

    def forward(self, x):
        return self.w_down(F.silu(self.w_gate(x)) * self.w_up(x))


class Block(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.sa = Attn(cfg)
        self.fwd = GeluMLP(cfg["n_embd"]) if cfg["mlp_type"] == "gelu" else SwiGLU(cfg["n_embd"])
        self.ln1 = norm(cfg)
        self.ln2 = norm(cfg)

    def forward(self, x):
        x = x + self.sa(self.ln1(x))
        return x + self.fwd(self.ln2(x))


class GPT(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.token_embedding_table = nn.Embedding(cfg["vocab_size"], cfg["n_embd"])
        if cfg["pos_encoding"] == "learned":
            self.position_embedding_table = nn.Embedding(cfg["block_size"], cfg["n_embd"])
        self.blocks = nn.Sequential(*[Block(cfg) for _ in range(cfg["n_layer"])])
        self.ln_f = norm(cfg)
        self.lm_head = nn.Linear(cfg["n_embd"], cfg["vocab_size"])
        if cfg["tie_weights"]:
            self.lm_head.weight = self.token_embedding_table.weight

    def forward(self, idx):
        x = self.token_embedding_table(idx)
        if self.cfg["pos_encoding"] == "learned":
            x = x + self.position_embedding_table(torch.arange(idx.shape[1]))
        return self.lm_head(self.ln_f(self.blocks(x)))


def gptconfig(**kw):
    d = collections.OrderedDict(
        batch_size=4, block_size=16, vocab_size=64, n_embd=16, n_head=2, n_layer=2,
        dropout=0.0, bias=False, use_checkpoint=False, device="cpu", use_loss_mask=True,
        tie_weights=False, save_dtype="bf16", pos_encoding="learned", mlp_type="gelu",
        norm_type="layernorm", rope_theta=10000.0, rope_scale=1.0, segment_position_reset=True,
        neftune_alpha=0.0, batch_sampling_mode="epoch", pad_token_id=None, episode_min_tokens=2,
        epoch_seed=1337, epoch_shuffle=True, epoch_drop_last=True)
    for k, v in kw.items():
        assert k in d, k
        d[k] = v
    return d


GPT2 = dict(pos_encoding="learned", mlp_type="gelu", norm_type="layernorm")
LLAMA = dict(pos_encoding="rope", mlp_type="swiglu", norm_type="rmsnorm")

# name: (config overrides, save dtype, dict form?, lm_head bias mode)
FIXTURES = {
    "gpt2_f32_tied": (dict(GPT2, tie_weights=True, bias=True, save_dtype="fp32"), torch.float32, True, "zero"),
    "gpt2_bf16_untied": (dict(GPT2, tie_weights=False, bias=False), torch.bfloat16, True, "const"),
    "llama_bf16_tied": (dict(LLAMA, tie_weights=True, bias=False), torch.bfloat16, True, "zero"),
    "llama_f16_untied_bias": (dict(LLAMA, tie_weights=False, bias=True, rope_scale=2.0, rope_theta=500.0,
                                   save_dtype="fp16"), torch.float16, False, "zero"),
    "gpt2_f32_headbias": (dict(GPT2, tie_weights=False, bias=False, n_layer=1, save_dtype="fp32"),
                          torch.float32, True, "random"),
}

CHARS = [chr(c) for c in range(ord("0"), ord("0") + 64)]


def make(name, over, dtype, dict_form, head_bias, seed):
    cfg = gptconfig(**over)
    torch.manual_seed(seed)
    m = GPT(cfg)
    with torch.no_grad():
        for pname, p in m.named_parameters():
            if pname.endswith("weight") and p.dim() == 1:  # norm gains
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            else:
                p.copy_(0.3 * torch.randn_like(p))
        if head_bias == "zero":
            m.lm_head.bias.zero_()
        elif head_bias == "const":
            m.lm_head.bias.fill_(0.375)
    m.eval()
    out = os.path.join(HERE, name)
    os.makedirs(out, exist_ok=True)
    # As MyPT's save_checkpoint_bundle: every state_dict tensor cast to the
    # save dtype on the CPU.
    sd = m.state_dict()
    if dict_form:
        payload = {"state_dict": {k: v.detach().to(dtype).cpu() for k, v in sd.items()},
                   "checkpoint_dtype": {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}[dtype],
                   "model_dtype": "float32"}
        stored = payload["state_dict"]
    else:
        m.to(dtype)
        payload = m.state_dict()  # raw OrderedDict with _metadata
        stored = payload
    torch.save(payload, os.path.join(out, "model.pt"))
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    with open(os.path.join(out, "tokenizer.json"), "w") as f:
        json.dump({"token_kind": "char", "chars": CHARS, "base_vocab_size": None,
                   "model_vocab_size": cfg["vocab_size"]}, f)
    with open(os.path.join(out, "training_state.json"), "w") as f:
        json.dump({"step": 123, "training_config": {"max_iters": 124}, "model_dtype_at_save": "torch.float32",
                   "checkpoint_dtype": "bf16", "optimizer_file": "optimizer.pt"}, f, indent=2)

    # Reference logits from the stored values, in float64.
    ref = GPT(cfg).double()
    ref.load_state_dict({k: v.double() for k, v in stored.items()})
    ref.eval()
    with torch.no_grad():
        logits = ref(torch.tensor([IDS]))[0]
    tensors = []
    blob = bytearray()
    for k, v in stored.items():
        tensors.append({"name": k, "shape": list(v.shape), "dtype": str(v.dtype).replace("torch.", "")})
        blob += v.float().contiguous().numpy().astype("<f4").tobytes()
    with open(os.path.join(out, "expected.bin"), "wb") as f:
        f.write(bytes(blob))
    with open(os.path.join(out, "expected.json"), "w") as f:
        json.dump({"tensors": tensors, "ids": IDS, "vocab_size": cfg["vocab_size"],
                   "logits": [float(x) for x in logits.reshape(-1)]}, f)
    print(name, len(tensors), "tensors", os.path.getsize(os.path.join(out, "model.pt")), "bytes")


def main():
    for i, (name, (over, dtype, dict_form, hb)) in enumerate(FIXTURES.items()):
        make(name, over, dtype, dict_form, hb, 1000 + i)


if __name__ == "__main__":
    sys.exit(main())

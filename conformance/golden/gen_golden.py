#!/usr/bin/env python3
"""Writes the golden vectors every mypt backend is checked against.

An independent PyTorch implementation of MyPT's model (docs/MYPT.md §11-§14: GPT-2 style
with learned positions / LayerNorm / GELU, LLaMA style with RoPE / RMSNorm / SwiGLU, packed
segments, weighted loss masks, AdamW with decoupled decay and global-norm clipping) run in
float64, so the files hold the exact answer up to float64 rounding; backends are compared
against them with float32 tolerances.

Run (Debian's python3-torch; no other dependency):
    /usr/bin/python3 conformance/golden/gen_golden.py
It rewrites conformance/golden/<case>.json and <case>.safetensors. See README.md for the
layout.
"""
import json
import math
import os
import struct

import torch

torch.set_default_dtype(torch.float64)
OUT = os.path.dirname(os.path.abspath(__file__))


# --------------------------------------------------------------------------------------
# model (float64), written from the spec


def param_defs(cfg):
    """MyPT's state_dict names and shapes, tied lm_head omitted."""
    V, C, H, L, blk = cfg["vocab_size"], cfg["n_embd"], cfg["mlp_hidden"], cfg["n_layer"], cfg["block_size"]
    ln = cfg["norm_type"] == "layernorm"
    d = [("token_embedding_table.weight", [V, C])]
    if cfg["pos_encoding"] == "learned":
        d.append(("position_embedding_table.weight", [blk, C]))
    for i in range(L):
        p = f"blocks.{i}."
        d.append((p + "ln1.weight", [C]))
        if ln:
            d.append((p + "ln1.bias", [C]))
        d.append((p + "sa.qkv.weight", [3 * C, C]))
        if cfg["bias"]:
            d.append((p + "sa.qkv.bias", [3 * C]))
        d.append((p + "sa.proj.weight", [C, C]))
        if cfg["bias"]:
            d.append((p + "sa.proj.bias", [C]))
        d.append((p + "ln2.weight", [C]))
        if ln:
            d.append((p + "ln2.bias", [C]))
        if cfg["mlp_type"] == "swiglu":
            d += [(p + "fwd.w_gate.weight", [H, C]), (p + "fwd.w_up.weight", [H, C]), (p + "fwd.w_down.weight", [C, H])]
        else:
            d += [(p + "fwd.net.0.weight", [H, C]), (p + "fwd.net.0.bias", [H]),
                  (p + "fwd.net.2.weight", [C, H]), (p + "fwd.net.2.bias", [C])]
    d.append(("ln_f.weight", [C]))
    if ln:
        d.append(("ln_f.bias", [C]))
    if not cfg["tie_weights"]:
        d.append(("lm_head.weight", [V, C]))
    d.append(("lm_head.bias", [V]))
    return d


def decays(name, shape):
    # MyPT configure_optimizer: no decay for 1-D tensors, embeddings and norms
    return not (len(shape) == 1 or "embedding" in name.lower() or "ln" in name.lower())


def init_params(cfg, gen):
    """float32-representable values; biases and norm weights perturbed so every path matters."""
    ps = {}
    for name, shape in param_defs(cfg):
        if name.endswith("ln1.weight") or name.endswith("ln2.weight") or name == "ln_f.weight":
            t = 1 + 0.1 * torch.randn(shape, generator=gen)
        elif len(shape) == 1:
            t = 0.05 * torch.randn(shape, generator=gen)
        else:
            t = 0.08 * torch.randn(shape, generator=gen)
        ps[name] = t.float().double()
    return ps


def norm(cfg, x, w, b):
    if cfg["norm_type"] == "layernorm":
        mu = x.mean(-1, keepdim=True)
        var = ((x - mu) ** 2).mean(-1, keepdim=True)
        return (x - mu) / torch.sqrt(var + cfg["norm_eps"]) * w + b
    return x * torch.rsqrt((x * x).mean(-1, keepdim=True) + cfg["norm_eps"]) * w


def positions(cfg, seg, T, B):
    pos = torch.arange(T).repeat(B, 1)
    if seg is not None and cfg["segment_position_reset"]:
        for b in range(B):
            start = 0
            for t in range(T):
                if t > 0 and seg[b, t] != seg[b, t - 1]:
                    start = t
                pos[b, t] = t - start
    return pos


def rope(cfg, x, pos):
    # x [B, nh, T, hd]; split-half convention
    hd = x.shape[-1]
    inv = 1.0 / (cfg["rope_theta"] ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd))
    ang = (pos.double() / cfg["rope_scale"])[..., None] * inv  # [B, T, hd/2]
    cos, sin = torch.cos(ang)[:, None], torch.sin(ang)[:, None]
    x1, x2 = x[..., : hd // 2], x[..., hd // 2:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


def forward(cfg, P, tokens, seg):
    B, T = tokens.shape
    C, nh = cfg["n_embd"], cfg["n_head"]
    hd = C // nh
    pos = positions(cfg, seg, T, B)
    x = P["token_embedding_table.weight"][tokens]
    if cfg["pos_encoding"] == "learned":
        x = x + P["position_embedding_table.weight"][pos]
    allowed = torch.tril(torch.ones(T, T, dtype=torch.bool))[None]
    if seg is not None:
        allowed = allowed & (seg[:, :, None] == seg[:, None, :])
    allowed = allowed[:, None]  # [B,1,T,T]
    g = lambda n: P.get(n)
    for i in range(cfg["n_layer"]):
        p = f"blocks.{i}."
        h = norm(cfg, x, P[p + "ln1.weight"], g(p + "ln1.bias"))
        qkv = h @ P[p + "sa.qkv.weight"].T
        if cfg["bias"]:
            qkv = qkv + P[p + "sa.qkv.bias"]
        q, k, v = qkv.split(C, dim=-1)
        q, k, v = (t.view(B, T, nh, hd).transpose(1, 2) for t in (q, k, v))
        if cfg["pos_encoding"] == "rope":
            q, k = rope(cfg, q, pos), rope(cfg, k, pos)
        s = (q @ k.transpose(-1, -2)) / math.sqrt(hd)
        s = s.masked_fill(~allowed, float("-inf"))
        y = torch.softmax(s, dim=-1) @ v
        y = y.transpose(1, 2).reshape(B, T, C) @ P[p + "sa.proj.weight"].T
        if cfg["bias"]:
            y = y + P[p + "sa.proj.bias"]
        x = x + y
        h = norm(cfg, x, P[p + "ln2.weight"], g(p + "ln2.bias"))
        if cfg["mlp_type"] == "swiglu":
            a = torch.nn.functional.silu(h @ P[p + "fwd.w_gate.weight"].T) * (h @ P[p + "fwd.w_up.weight"].T)
            m = a @ P[p + "fwd.w_down.weight"].T
        else:
            a = h @ P[p + "fwd.net.0.weight"].T + P[p + "fwd.net.0.bias"]
            a = 0.5 * a * (1 + torch.erf(a / math.sqrt(2)))
            m = a @ P[p + "fwd.net.2.weight"].T + P[p + "fwd.net.2.bias"]
        x = x + m
    x = norm(cfg, x, P["ln_f.weight"], g("ln_f.bias"))
    lm = P["token_embedding_table.weight"] if cfg["tie_weights"] else P["lm_head.weight"]
    return x @ lm.T + P["lm_head.bias"]


def masked_loss(cfg, P, batch):
    """MyPT's loss: Σ w·CE / max(Σ w, 1). Returns (loss, loss_sum, weight_sum, logits)."""
    logits = forward(cfg, P, batch["tokens"], batch["seg"])
    V = cfg["vocab_size"]
    ce = torch.nn.functional.cross_entropy(logits.reshape(-1, V), batch["targets"].reshape(-1), reduction="none")
    w = batch["weights"].reshape(-1)
    loss_sum = (ce * w).sum()
    wsum = w.sum()
    return loss_sum / torch.clamp(wsum, min=1.0), loss_sum, wsum, logits


def adamw_step(P, M, Vv, step, grads, lr, wd, clip, flags, b1, b2, eps):
    """torch.nn.utils.clip_grad_norm_ then torch.optim.AdamW, written out."""
    norm_ = math.sqrt(sum(float((g * g).sum()) for g in grads.values()))
    coef = clip / (norm_ + 1e-6) if clip > 0 else 1.0
    coef = min(coef, 1.0)
    bc1, bc2 = 1 - b1 ** step, 1 - b2 ** step
    for n in P:
        g = grads[n] * coef
        if flags[n]:
            P[n] = P[n] * (1 - lr * wd)
        M[n] = b1 * M[n] + (1 - b1) * g
        Vv[n] = b2 * Vv[n] + (1 - b2) * g * g
        P[n] = P[n] - (lr / bc1) * M[n] / (torch.sqrt(Vv[n]) / math.sqrt(bc2) + eps)
    return norm_


def check_adamw_against_torch(P0, grads, flags, lr, wd, b1, b2, eps):
    """Cross-check the written-out AdamW against torch.optim.AdamW (one step, no clipping)."""
    ps = {n: torch.nn.Parameter(t.clone()) for n, t in P0.items()}
    groups = [{"params": [ps[n] for n in ps if flags[n]], "weight_decay": wd},
              {"params": [ps[n] for n in ps if not flags[n]], "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=lr, betas=(b1, b2), eps=eps)
    for n in ps:
        ps[n].grad = grads[n].clone()
    opt.step()
    P, M, Vv = dict(P0), {n: torch.zeros_like(t) for n, t in P0.items()}, {n: torch.zeros_like(t) for n, t in P0.items()}
    adamw_step(P, M, Vv, 1, grads, lr, wd, 0.0, flags, b1, b2, eps)
    for n in ps:
        assert torch.allclose(ps[n].detach(), P[n], rtol=1e-12, atol=1e-14), n


# --------------------------------------------------------------------------------------
# safetensors writer (the format is tiny: u64 header length, JSON header, raw bytes)


def write_safetensors(path, tensors):
    header, blobs, off = {}, [], 0
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous()
        if t.dtype in (torch.float64, torch.float32):
            data = t.to(torch.float32).numpy().tobytes()
            dt = "F32"
        else:
            data = t.to(torch.int32).numpy().tobytes()
            dt = "I32"
        header[name] = {"dtype": dt, "shape": list(t.shape), "data_offsets": [off, off + len(data)]}
        blobs.append(data)
        off += len(data)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


# --------------------------------------------------------------------------------------
# cases


def ceil64(x):
    return (x + 63) // 64 * 64


def gpt2(**kw):
    c = dict(vocab_size=64, block_size=16, n_layer=2, n_head=4, n_embd=32, pos_encoding="learned",
             mlp_type="gelu", norm_type="layernorm", bias=True, tie_weights=False, rope_theta=10000.0,
             rope_scale=1.0, norm_eps=1e-5, dropout=0.0, neftune_alpha=0.0, segment_position_reset=True)
    c.update(kw)
    c["mlp_hidden"] = 4 * c["n_embd"]
    return c


def llama(**kw):
    c = dict(vocab_size=96, block_size=16, n_layer=2, n_head=4, n_embd=48, pos_encoding="rope",
             mlp_type="swiglu", norm_type="rmsnorm", bias=False, tie_weights=True, rope_theta=10000.0,
             rope_scale=1.0, norm_eps=1e-6, dropout=0.0, neftune_alpha=0.0, segment_position_reset=True)
    c.update(kw)
    c["mlp_hidden"] = ceil64(int(8 * c["n_embd"] / 3))
    return c


CASES = {
    # name: (config, B, T, weights kind, packed)
    "gpt2_untied_bias": (gpt2(), 2, 12, "ones", False),
    "gpt2_tied_nobias_weighted": (gpt2(bias=False, tie_weights=True, vocab_size=80), 2, 16, "weighted", False),
    "gpt2_packed": (gpt2(n_head=2), 2, 16, "mask", True),
    "llama_tied": (llama(), 2, 12, "ones", False),
    "llama_untied_bias_packed": (llama(bias=True, tie_weights=False, rope_scale=2.0, rope_theta=500.0, vocab_size=64, n_embd=32, n_head=2), 2, 16, "weighted", True),
}

OPT = dict(beta1=0.9, beta2=0.95, eps=1e-8)
STEPS = dict(learning_rate=3e-3, weight_decay=0.1, clip_norm=0.5)  # 3 AdamW steps
TRAJ = dict(learning_rate=1e-2, weight_decay=0.05, clip_norm=1.0, steps=20)


def make_batch(cfg, B, T, kind, packed, gen):
    V = cfg["vocab_size"]
    tokens = torch.randint(0, V, (B, T), generator=gen)
    targets = torch.randint(0, V, (B, T), generator=gen)
    if kind == "ones":
        w = torch.ones(B, T)
    elif kind == "mask":
        w = (torch.rand(B, T, generator=gen) < 0.6).double()
    else:  # weighted: 0, 1, 1.5, 2 and a zero-weight stretch
        choices = torch.tensor([0.0, 1.0, 1.0, 1.5, 2.0])
        w = choices[torch.randint(0, 5, (B, T), generator=gen)]
        w[0, :3] = 0
    seg = None
    if packed:
        seg = torch.zeros(B, T, dtype=torch.long)
        # row 0: three segments then padding (segment 0); row 1: two segments
        bounds = [[0, 5, 11, 14], [0, 7, T]]
        for b, bs in enumerate(bounds):
            for s in range(len(bs) - 1):
                seg[b, bs[s]:bs[s + 1]] = s + 1
        w[0, 14:] = 0  # no loss on padding
    return dict(tokens=tokens, targets=targets, weights=w, seg=seg)


def grads_of(cfg, P, batch):
    leaves = {n: t.clone().requires_grad_(True) for n, t in P.items()}
    loss, loss_sum, wsum, logits = masked_loss(cfg, leaves, batch)
    loss.backward()
    return loss, loss_sum, wsum, logits, {n: t.grad.detach() for n, t in leaves.items()}


def run_case(name, cfg, B, T, kind, packed, seed):
    gen = torch.Generator().manual_seed(seed)
    P0 = init_params(cfg, gen)
    batch = make_batch(cfg, B, T, kind, packed, gen)
    defs = param_defs(cfg)
    flags = {n: decays(n, s) for n, s in defs}

    loss, loss_sum, wsum, logits, grads = grads_of(cfg, P0, batch)
    check_adamw_against_torch(P0, grads, flags, STEPS["learning_rate"], STEPS["weight_decay"], **{
        "b1": OPT["beta1"], "b2": OPT["beta2"], "eps": OPT["eps"]})

    tensors = {}
    for n in P0:
        tensors["init." + n] = P0[n]
        tensors["grad." + n] = grads[n]
    tensors["logits"] = logits
    tensors["batch.tokens"] = batch["tokens"]
    tensors["batch.targets"] = batch["targets"]
    tensors["batch.loss_weights"] = batch["weights"]
    if packed:
        tensors["batch.segment_ids"] = batch["seg"]

    def train(steps, lr, wd, clip, record_params):
        P = dict(P0)
        M = {n: torch.zeros_like(t) for n, t in P.items()}
        Vv = {n: torch.zeros_like(t) for n, t in P.items()}
        losses, norms = [], []
        for s in range(1, steps + 1):
            l, _, _, _, g = grads_of(cfg, P, batch)
            losses.append(float(l))
            norms.append(adamw_step(P, M, Vv, s, g, lr, wd, clip, flags, OPT["beta1"], OPT["beta2"], OPT["eps"]))
        if record_params:
            for n in P:
                tensors["step3." + n] = P[n]
                tensors["step3.adam_m." + n] = M[n]
                tensors["step3.adam_v." + n] = Vv[n]
        final = float(masked_loss(cfg, P, batch)[0])
        return losses, norms, final

    losses3, norms3, _ = train(3, STEPS["learning_rate"], STEPS["weight_decay"], STEPS["clip_norm"], True)
    traj, trajn, traj_final = train(TRAJ["steps"], TRAJ["learning_rate"], TRAJ["weight_decay"], TRAJ["clip_norm"], False)

    spec = dict(cfg)
    spec["params"] = [dict(name=n, shape=s, weight_decay=flags[n]) for n, s in defs]
    meta = dict(
        case=name, model=spec, optimizer=OPT, batch=dict(batch_size=B, seq_len=T, packed=packed, weights=kind),
        loss=float(loss), loss_sum=float(loss_sum), weight_sum=float(wsum),
        adamw=dict(STEPS, steps=3, grad_norms=norms3, losses=losses3),
        trajectory=dict(TRAJ, losses=traj, grad_norms=trajn, final_loss=traj_final),
    )
    write_safetensors(os.path.join(OUT, name + ".safetensors"), tensors)
    with open(os.path.join(OUT, name + ".json"), "w") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")
    print(f"{name}: loss {float(loss):.6f} grad_norm {norms3[0]:.4f} traj {traj[0]:.4f}->{traj_final:.4f}")


if __name__ == "__main__":
    for i, (name, (cfg, B, T, kind, packed)) in enumerate(sorted(CASES.items())):
        run_case(name, cfg, B, T, kind, packed, seed=1000 + i)

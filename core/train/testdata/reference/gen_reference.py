#!/usr/bin/env python3
"""PyTorch reference for mypt's training loop (core/train, issue 5).

Writes, next to this script:
  data/                  a tiny episode-indexed dataset in MyPT's on-disk format
                         (train/ and val/: tokens.bin uint32, mask.bin uint8,
                         episodes.idx uint64 (start, length) pairs)
  init_gpt2/, init_llama/  initial weights as mypt checkpoints (params only),
                         written with core/checkpoint/testdata/reference.py
  expected.json          per case: the run config, per-step losses, learning
                         rates and pre-clip gradient norms, and val losses

and trains each case in float64 with its own implementation of the loop,
written from MyPT's semantics (docs/MYPT.md §10 and §13-§16, and issue 5), not
from the Go code:
  * epoch-mode sampler: the order of epoch e is
    numpy RandomState(epoch_seed + e).permutation(n) over the episodes with
    at least episode_min_tokens tokens; batches straddle epochs; a row is
    the LAST block+1 tokens of a longer episode, padded with pad_token_id
    when shorter; x = row[:-1], y = row[1:], weight = mask of y (0 on
    padding), or 1 everywhere (pads included) without use_loss_mask;
  * LR: linear warmup peak*(step+1)/warmup, then cosine to min_lr_ratio*peak;
  * each optimizer step draws grad_accum_steps micro-batches; "global"
    normalisation divides every micro-batch's sum(w*CE) by max(sum w over the
    whole accumulated batch, 1); "mypt" divides by max(sum w of the
    micro-batch, 1) * grad_accum_steps;
  * torch.nn.utils.clip_grad_norm_, then torch.optim.AdamW with two groups
    (no decay for 1-D tensors and names containing "embedding" or "ln");
  * the logged step loss is sum(w*CE) / max(sum w, 1) over the accumulated
    batch; evals at step 0, every eval_interval and at the end walk the val
    episodes once, in file order, in batches of batch_size, and report
    sum(w*CE) / max(sum w, 1) over all of them.

The model (both architectures) is conformance/golden/gen_golden.py's
independent float64 implementation of MyPT's network.

Run:  /usr/bin/python3 core/train/testdata/reference/gen_reference.py
"""
import json
import math
import os
import sys

import numpy as np
import torch

sys.dont_write_bytecode = True  # do not litter the imported modules' directories
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", "..", "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "conformance", "golden"))
sys.path.insert(0, os.path.join(ROOT, "core", "checkpoint", "testdata"))
import gen_golden as gg  # noqa: E402  (sets the default dtype to float64)
import reference as ckref  # noqa: E402

torch.set_default_dtype(torch.float64)

DATA = os.path.join(HERE, "data")
VOCAB_DATA = 96  # token ids in the dataset are < 96 (both models' vocab is >= 96)
PAD = 0

# ---------------------------------------------------------------------------
# dataset


def make_dataset(rng):
    """Episodes of varied length with a prompt (mask 0) / answer (mask 1)
    structure; ids 1..95 (0 is the pad id, so padding is distinguishable)."""

    def episode(n):
        toks = rng.randint(1, VOCAB_DATA, size=n).astype(np.uint32)
        mask = np.zeros(n, dtype=np.uint8)
        if n >= 2:
            p = rng.randint(1, n)  # prompt length
            mask[p:] = 1
            if n > 6 and rng.rand() < 0.4:  # a second unsupervised stretch
                a = rng.randint(p, n)
                mask[a:min(n, a + 3)] = 0
        return toks, mask

    # 40 train episodes: lengths 1 (skipped by episode_min_tokens=2) to 40
    # (block+1 = 17, so many are truncated to their last 17 tokens).
    train_lens = [1, 2, 3, 17, 18, 40] + list(rng.randint(2, 36, size=34))
    val_lens = [5, 17, 30, 9, 2, 12, 25, 16]
    out = {}
    for split, lens in (("train", train_lens), ("val", val_lens)):
        eps = [episode(int(n)) for n in lens]
        d = os.path.join(DATA, split)
        os.makedirs(d, exist_ok=True)
        toks = np.concatenate([e[0] for e in eps]).astype("<u4")
        mask = np.concatenate([e[1] for e in eps]).astype(np.uint8)
        idx, start = [], 0
        for n in lens:
            idx += [start, int(n)]
            start += int(n)
        toks.tofile(os.path.join(d, "tokens.bin"))
        mask.tofile(os.path.join(d, "mask.bin"))
        np.array(idx, dtype="<u8").tofile(os.path.join(d, "episodes.idx"))
        out[split] = eps
    with open(os.path.join(DATA, "dataset_metadata.json"), "w") as f:
        json.dump({"schema": "episode_indexed_sft_v1", "num_train_episodes": len(train_lens),
                   "num_val_episodes": len(val_lens), "has_loss_mask": True,
                   "comment": "written by core/train/testdata/reference/gen_reference.py"}, f, indent=1)
        f.write("\n")
    return out


class Sampler:
    """MyPT's GPTEpisodeDataLoader, epoch mode (or a sequential walk)."""

    def __init__(self, eps, cfg, shuffle_seed=None):
        self.eps = [e for e in eps if len(e[0]) >= cfg["episode_min_tokens"]]
        self.cfg = cfg
        self.seed = shuffle_seed
        self.epoch, self.pos = 0, 0
        self.order = self._order(0)

    def _order(self, e):
        n = len(self.eps)
        if self.seed is None:
            return np.arange(n)
        return np.random.RandomState(self.seed + e).permutation(n)

    def row(self, ep):
        L = self.cfg["block_size"] + 1
        toks, mask = ep
        if len(toks) > L:
            toks, mask = toks[-L:], mask[-L:]
        n = len(toks)
        t = np.full(L, self.cfg["pad_token_id"], dtype=np.int64)
        m = np.zeros(L, dtype=np.float64)
        t[:n] = toks
        m[:n] = mask
        x, y = t[:-1], t[1:]
        w = m[1:] if self.cfg["use_loss_mask"] else np.ones(L - 1)
        return x, y, w

    def next(self, B):
        xs, ys, ws = [], [], []
        for _ in range(B):
            if self.pos == len(self.eps):
                self.epoch += 1
                self.pos = 0
                self.order = self._order(self.epoch)
            x, y, w = self.row(self.eps[self.order[self.pos]])
            self.pos += 1
            xs.append(x)
            ys.append(y)
            ws.append(w)
        return dict(tokens=torch.tensor(np.stack(xs)), targets=torch.tensor(np.stack(ys)),
                    weights=torch.tensor(np.stack(ws)), seg=None)


# ---------------------------------------------------------------------------
# model config and weights


def model_cfg(style):
    if style == "gpt2":
        return gg.gpt2(vocab_size=96, block_size=16, n_layer=2, n_head=4, n_embd=32, bias=True, tie_weights=False)
    return gg.llama(vocab_size=128, block_size=16, n_layer=2, n_head=4, n_embd=32, bias=False, tie_weights=True)


def write_init_checkpoint(d, mcfg, P):
    """Our checkpoint format, params only, via core/checkpoint's independent writer."""
    os.makedirs(d, exist_ok=True)
    for f in os.listdir(d):
        os.remove(os.path.join(d, f))
    tensors = [(n, P[n].to(torch.float32)) for n, _ in gg.param_defs(mcfg)]
    man = {"format": "mypt-checkpoint", "format_version": 1, "files": {}, "safetensors": {}}
    man["safetensors"]["model.safetensors"] = ckref.write_safetensors(
        os.path.join(d, "model.safetensors"), tensors,
        {"format": "pt", "tie_weights": "true" if mcfg["tie_weights"] else "false"})
    keys = ["vocab_size", "block_size", "n_layer", "n_head", "n_embd", "bias", "tie_weights",
            "pos_encoding", "mlp_type", "norm_type", "rope_theta", "rope_scale", "dropout"]
    man["files"]["config.json"] = ckref.write_json(os.path.join(d, "config.json"), {k: mcfg[k] for k in keys})
    man["files"]["training_state.json"] = ckref.write_json(
        os.path.join(d, "training_state.json"), {"format_version": 1, "optimizer_steps": 0, "step": 0})
    ckref.write_json(os.path.join(d, "manifest.json"), man)


# ---------------------------------------------------------------------------
# the training loop


def lr_at(step, peak, warmup, max_iters, min_ratio):
    if step < warmup:
        return peak * (step + 1) / warmup
    min_lr = min_ratio * peak
    progress = min((step - warmup) / max(1, max_iters - warmup), 1.0)
    return min_lr + 0.5 * (peak - min_lr) * (1 + math.cos(math.pi * progress))


def ce_sum(mcfg, P, batch):
    logits = gg.forward(mcfg, P, batch["tokens"], None)
    V = mcfg["vocab_size"]
    ce = torch.nn.functional.cross_entropy(logits.reshape(-1, V), batch["targets"].reshape(-1), reduction="none")
    w = batch["weights"].reshape(-1)
    return (ce * w).sum(), w.sum()


def evaluate(mcfg, P, val_eps, cfg):
    s = Sampler(val_eps, cfg, shuffle_seed=None)  # file order
    n = len(s.eps)
    B = cfg["batch_size"]
    assert n % B == 0, "keep the val set a whole number of batches"
    ls, ws = 0.0, 0.0
    with torch.no_grad():
        for _ in range(n // B):
            l, w = ce_sum(mcfg, P, s.next(B))
            ls += float(l)
            ws += float(w)
    return ls / max(ws, 1.0)


def train(case, cfg, mcfg, P0, data):
    params = {n: torch.nn.Parameter(P0[n].clone()) for n, _ in gg.param_defs(mcfg)}
    names = list(params)
    decay = [params[n] for n, s in gg.param_defs(mcfg) if gg.decays(n, s)]
    no_decay = [params[n] for n, s in gg.param_defs(mcfg) if not gg.decays(n, s)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg["weight_decay"]},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=cfg["learning_rate"], betas=(cfg["beta1"], cfg["beta2"]), eps=cfg["adam_eps"])
    sampler = Sampler(data["train"], cfg, shuffle_seed=cfg["epoch_seed"])
    warmup = int(cfg["warmup_iters"])
    steps, evals = [], []
    B, A = cfg["batch_size"], cfg["grad_accum_steps"]
    for it in range(cfg["max_iters"]):
        if it % cfg["eval_interval"] == 0:
            evals.append({"step": it, "val_loss": evaluate(mcfg, params, data["val"], cfg)})
        lr = lr_at(it, cfg["learning_rate"], warmup, cfg["max_iters"], cfg["min_lr_ratio"])
        for g in opt.param_groups:
            g["lr"] = lr
        opt.zero_grad(set_to_none=True)
        micro = [sampler.next(B) for _ in range(A)]
        total_w = sum(float(m["weights"].sum()) for m in micro)
        loss_sum = 0.0
        for m in micro:
            ls, ws = ce_sum(mcfg, params, m)
            if cfg["loss_normalization"] == "global":
                loss = ls / max(total_w, 1.0)
            else:  # MyPT: mean of the micro-batches' own masked means
                loss = ls / max(float(ws), 1.0) / A
            loss.backward()
            loss_sum += float(ls)
        norm = float(torch.nn.utils.clip_grad_norm_([params[n] for n in names], cfg["grad_clip"]))
        opt.step()
        steps.append({"step": it + 1, "loss": loss_sum / max(total_w, 1.0), "lr": lr, "grad_norm": norm})
    evals.append({"step": cfg["max_iters"], "val_loss": evaluate(mcfg, params, data["val"], cfg)})
    clipped = sum(s["grad_norm"] > cfg["grad_clip"] for s in steps)
    assert clipped >= len(steps) // 2, f"{case}: clipping active on only {clipped} steps"
    print(f"{case}: loss {steps[0]['loss']:.4f} -> {steps[-1]['loss']:.4f}, "
          f"val {evals[0]['val_loss']:.4f} -> {evals[-1]['val_loss']:.4f}, clipped {clipped}/{len(steps)}")
    return steps, evals


def run_config(style, **kw):
    mcfg = model_cfg(style)
    c = {k: mcfg[k] for k in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd", "bias", "tie_weights",
                              "pos_encoding", "mlp_type", "norm_type", "rope_theta", "rope_scale")}
    c.update(batch_size=4, dropout=0.0, use_loss_mask=True, batch_sampling_mode="epoch", pad_token_id=PAD,
             episode_min_tokens=2, epoch_seed=4242, epoch_shuffle=True,
             learning_rate=1e-2, max_iters=12, eval_interval=6, eval_iters=200, warmup_iters=3,
             grad_clip=0.5, weight_decay=0.3, grad_accum_steps=2, beta1=0.9, beta2=0.95, adam_eps=1e-8,
             min_lr_ratio=0.1, loss_normalization="global", truncation="tail", seed=7)
    c.update(kw)
    return c


def main():
    data = make_dataset(np.random.RandomState(20240605))
    inits = {}
    for i, style in enumerate(("gpt2", "llama")):
        mcfg = model_cfg(style)
        P = gg.init_params(mcfg, torch.Generator().manual_seed(5000 + i))  # float32-representable
        write_init_checkpoint(os.path.join(HERE, "init_" + style), mcfg, P)
        inits[style] = P
    cases = {
        "gpt2_global": ("gpt2", run_config("gpt2")),
        "llama_global": ("llama", run_config("llama")),
        "gpt2_mypt_norm": ("gpt2", run_config("gpt2", loss_normalization="mypt")),
        "llama_nomask": ("llama", run_config("llama", use_loss_mask=False, warmup_iters=4, grad_clip=1.0)),
    }
    out = {}
    for name, (style, cfg) in cases.items():
        steps, evals = train(name, cfg, model_cfg(style), inits[style], data)
        out[name] = {"init": "init_" + style, "config": cfg, "steps": steps, "evals": evals}
    with open(os.path.join(HERE, "expected.json"), "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()

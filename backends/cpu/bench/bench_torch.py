#!/usr/bin/env python3
"""PyTorch CPU twin of bench/main.go: the same MyPT GPT-2 style models (learned positions,
LayerNorm, GELU MLP with biases, attention without biases, untied lm_head with bias), the
same batch shapes, loss, clipping and AdamW step. Prints ms/iter and tokens/s per setting.

Run through run.sh, which pins OPENBLAS_NUM_THREADS=2 and OMP_WAIT_POLICY=PASSIVE."""
import argparse
import math
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

SETTINGS = [  # name, vocab, block, layers, heads, width, batch
    ("shakespeare-char", 65, 64, 4, 4, 128, 12),
    ("gpt2-2L-64w-50304v", 50304, 64, 2, 4, 64, 4),
]


class Block(nn.Module):
    def __init__(self, C, nh):
        super().__init__()
        self.nh = nh
        self.ln1, self.ln2 = nn.LayerNorm(C), nn.LayerNorm(C)
        self.qkv = nn.Linear(C, 3 * C, bias=False)
        self.proj = nn.Linear(C, C, bias=False)
        self.net = nn.Sequential(nn.Linear(C, 4 * C), nn.GELU(), nn.Linear(4 * C, C))

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, self.nh, C // self.nh).transpose(1, 2) for t in (q, k, v))
        if hasattr(F, "scaled_dot_product_attention"):
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:  # torch < 2.0 (Debian bookworm ships 1.13)
            att = (q @ k.transpose(-2, -1)) / math.sqrt(k.size(-1))
            att = att.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
            y = F.softmax(att, dim=-1) @ v
        x = x + self.proj(y.transpose(1, 2).reshape(B, T, C))
        return x + self.net(self.ln2(x))


class GPT(nn.Module):
    def __init__(self, V, T, L, nh, C):
        super().__init__()
        self.tok = nn.Embedding(V, C)
        self.pos = nn.Embedding(T, C)
        self.blocks = nn.ModuleList([Block(C, nh) for _ in range(L)])
        self.ln_f = nn.LayerNorm(C)
        self.lm_head = nn.Linear(C, V)
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.normal_(p, std=0.02)

    def forward(self, idx, targets):
        T = idx.shape[1]
        x = self.tok(idx) + self.pos(torch.arange(T))
        for b in self.blocks:
            x = b(x)
        logits = self.lm_head(self.ln_f(x))
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--setting", default="")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    for name, V, T, L, nh, C, B in SETTINGS:
        if args.setting and args.setting != name:
            continue
        model = GPT(V, T, L, nh, C)
        decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "tok" not in n and "pos" not in n]
        other = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and "tok" not in n and "pos" not in n)]
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": other, "weight_decay": 0.0}],
                                lr=1e-3, betas=(0.9, 0.95), eps=1e-8)
        for it in range(args.warmup + args.steps):
            if it == args.warmup:
                start = time.perf_counter()
            x = torch.randint(0, V, (B, T))
            y = torch.randint(0, V, (B, T))
            loss = model(x, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
        ms = (time.perf_counter() - start) * 1000 / args.steps
        print(f"torch {name}: {ms:.2f} ms/iter, {B * T / ms * 1000:.0f} tokens/s (loss {loss.item():.3f})")


if __name__ == "__main__":
    main()

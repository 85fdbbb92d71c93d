"""PyTorch references for ``python -m minilm bench``: the same work as minilm's contenders, in torch.

Run by the benchmark in a process of its own, one contender per process:

    python benchmarks/torch_ref.py WORKLOAD --steps 30 --warmup 10

and prints one JSON line (minilm.fast.bench reads it).  Needs torch; minilm
itself never imports it.  Each model mirrors its minilm counterpart:

    transformer   minilm.transformer's pre-LN causal LM (biases, GELU tanh form, tied
                  embeddings, learned positions), fused causal attention
                  (scaled_dot_product_attention), fused AdamW with clipping
    lstm          nn.LSTM, forward and backward with a fixed upstream gradient
    ngram-V       the MLP n-gram LM of minilm.ngram (embedding, tanh hidden layer,
                  output layer, cross-entropy), fused AdamW
    transformer-floor   the matrix products of minilm's fast Transformer step alone
                  (minilm.fast.bench.matmul_floor's list, same shapes), each one torch.matmul
                  on torch's own threads: how fast torch's BLAS makes the products both sides need
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    """x + MHA(LN1(x)), then + FFN(LN2(.)): the pre-LN block of minilm.transformer."""

    def __init__(self, C: int, H: int):
        super().__init__()
        self.H = H
        self.ln1, self.ln2 = nn.LayerNorm(C), nn.LayerNorm(C)
        self.qkv, self.proj = nn.Linear(C, 3 * C), nn.Linear(C, C)
        self.fc1, self.fc2 = nn.Linear(C, 4 * C), nn.Linear(4 * C, C)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(C, dim=2)  # (B, T, C) each
        q, k, v = (a.view(B, T, self.H, C // self.H).transpose(1, 2) for a in (q, k, v))  # (B, H, T, hs)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, H, T, hs)
        x = x + self.proj(y.transpose(1, 2).reshape(B, T, C))
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x)), approximate="tanh"))


class GPT(nn.Module):
    def __init__(self, V: int, T: int, C: int, H: int, L: int):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(V, C), nn.Embedding(T, C)
        self.blocks = nn.ModuleList(Block(C, H) for _ in range(L))
        self.ln_f = nn.LayerNorm(C)
        self.head_b = nn.Parameter(torch.zeros(V))

    def forward(self, idx):
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1]))  # (B, T, C)
        for b in self.blocks:
            x = b(x)
        return self.ln_f(x) @ self.wte.weight.T + self.head_b  # (B, T, V), tied head

    def loss(self, idx, targets):
        logits = self(idx)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


def adamw(params, lr=1e-3, betas=(0.9, 0.99), wd=0.1):
    """AdamW with decay on matrices only, as minilm.optim; torch's fused kernel where this build has it."""
    params = list(params)
    decay = [p for p in params if p.ndim >= 2]
    rest = [p for p in params if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": wd}, {"params": rest, "weight_decay": 0.0}]
    try:
        return torch.optim.AdamW(groups, lr=lr, betas=betas, fused=True)
    except (RuntimeError, TypeError, ValueError):  # a build without the fused CPU kernel
        return torch.optim.AdamW(groups, lr=lr, betas=betas)


class NGram(nn.Module):
    """logits = tanh(Concat(e) W_hidden + b_hidden) W_out + b_out (minilm.ngram)."""

    def __init__(self, V: int, N: int, E: int, Hd: int):
        super().__init__()
        self.embed = nn.Embedding(V, E)
        self.hidden, self.out = nn.Linear(N * E, Hd), nn.Linear(Hd, V)

    def forward(self, ctx):
        return self.out(torch.tanh(self.hidden(self.embed(ctx).flatten(1))))


def matmul_floor(g, B=12, T=64, C=128, H=4, L=4, V=65):
    """minilm.fast.bench.matmul_floor in torch: per layer the four linear layers' forward, input-gradient
    and weight-gradient products and six batched attention products, then the tied output layer's three."""
    M, Fw, hs = B * T, 4 * C, C // H
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    x, xF, x3, logits, dx = r(M, C), r(M, Fw), r(M, 3 * C), r(M, V), r(M, C)
    lin = [(x, r(C, 3 * C), x3), (x, r(C, C), x.clone()), (x, r(C, Fw), xF), (xF, r(Fw, C), x.clone())]
    grads = [(r(*a.shape), r(*w.shape)) for a, w, _ in lin]  # (da, dw): outputs never read back, all finite
    qkv, S, E, dE = r(M, 3 * C), r(B, H, T, T), r(V, C), r(V, C)
    q, k, v = (qkv[:, i * C:(i + 1) * C].reshape(B, T, H, hs).transpose(1, 2) for i in range(3))
    out = r(B, H, T, hs)

    def step():
        with torch.no_grad():
            for _ in range(L):
                for (a, w, o), (da, dw) in zip(lin, grads, strict=True):
                    torch.matmul(a, w, out=o)  # forward
                    torch.matmul(o, w.T, out=da)  # input gradient
                    torch.matmul(a.T, o, out=dw)  # weight gradient
                torch.matmul(q, k.transpose(-1, -2), out=S)  # scores
                torch.matmul(S, v, out=out)  # heads
                torch.matmul(S.transpose(-1, -2), q, out=out)  # dv
                torch.matmul(q, k.transpose(-1, -2), out=S)  # dP
                torch.matmul(S, k, out=out)  # dq
                torch.matmul(S.transpose(-1, -2), q, out=out)  # dk
            torch.matmul(x, E.T, out=logits)
            torch.matmul(logits, E, out=dx)
            torch.matmul(logits.T, x, out=dE)

    return step


def workload(name: str):
    """(step function, tokens per step, description) for a benchmark workload."""
    g = torch.Generator().manual_seed(0)
    if name == "transformer":
        B, T, V = 12, 64, 65
        model = GPT(V, T, 128, 4, 4)
        opt = adamw(model.parameters())
        idx, tgt = torch.randint(0, V, (B, T), generator=g), torch.randint(0, V, (B, T), generator=g)

        def step():
            loss = model.loss(idx, tgt)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()

        return step, B * T
    if name == "transformer-floor":
        return matmul_floor(g), 12 * 64
    if name == "lstm":
        B, T, D, Hd = 32, 64, 128, 128
        lstm = nn.LSTM(D, Hd, batch_first=True)
        x = torch.randn(B, T, D, generator=g, requires_grad=True)
        dout = torch.randn(B, T, Hd, generator=g)

        def step():
            lstm.zero_grad(set_to_none=True)
            x.grad = None
            out, _ = lstm(x)
            out.backward(dout)

        return step, B * T
    if name.startswith("ngram-"):
        V, B = int(name.split("-")[1]), 32
        model = NGram(V, 3, 30, 200)
        opt = adamw(model.parameters())
        ctx, tgt = torch.randint(0, V, (B, 3), generator=g), torch.randint(0, V, (B,), generator=g)

        def step():
            loss = F.cross_entropy(model(ctx), tgt)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()

        return step, B
    raise SystemExit(f"unknown workload {name!r}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("workload")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=10)
    a = p.parse_args(argv)
    torch.manual_seed(0)
    step, tokens = workload(a.workload)
    for _ in range(a.warmup):
        step()
    times = []
    for _ in range(a.steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    times.sort()
    print(json.dumps({"times": times, "tokens": tokens, "threads": torch.get_num_threads(),
                      "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

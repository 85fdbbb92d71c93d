"""The MLP n-gram LM of minilm.ngram, trained fast: same parameters, same numbers.

    logits = tanh(x W_hidden + b_hidden) W_out + b_out  [+ x W_direct],   x = Concat(e_{i-n}, ..., e_{i-1})

What differs from minilm.ngram (tests/test_fast.py checks they agree):

* parameters, gradients and AdamW moments are flat buffers (minilm.fast.flat);
  with a large vocabulary the AdamW step over W_out and the embeddings is most
  of the work, and there it runs in blocks on two threads;
* every activation goes into a buffer reused by the next step;
* the embedding gradient is zeroed only on the rows the previous step touched;
* cross-entropy overwrites the logits with their gradient (minilm.fast.kernels).
"""

from __future__ import annotations

import math

import numpy as np

from minilm.fast import kernels as K
from minilm.fast.blas import on_one_thread
from minilm.fast.flat import FlatModel, FlatParams
from minilm.fast.threads import n_threads
from minilm.ngram import check_context, param_shapes
from minilm.validate import check_ids


class FastNgram(FlatModel):
    """Flat buffers for one NgramConfig; ``step`` trains, ``loss_and_grads`` checks."""

    def __init__(self, cfg, params: dict | None = None, dtype=np.float32):
        if cfg.activation not in ("tanh", "relu"):
            raise ValueError(f"activation must be tanh or relu, got {cfg.activation!r}")
        self.cfg = cfg
        entries = [(k, s, len(s) >= 2) for k, s in param_shapes(cfg).items()]
        self._ws, self._touched = None, None
        self._init_flat(FlatParams(entries, dtype=dtype), params)

    def _workspace(self, B: int):
        if self._ws is None or self._ws["x"].shape[0] != B:
            cfg, e = self.cfg, lambda *s: np.empty(s, self.dtype)  # noqa: E731
            NE, Hd, V = cfg.context * cfg.n_embd, cfg.n_hidden, cfg.vocab_size
            self._ws = dict(x=e(B, NE), a=e(B, Hd), logits=e(B, V), da=e(B, Hd), dx=e(B, NE),
                            ones_b=np.ones(B, self.dtype), ones_v=np.ones(V, self.dtype))
        return self._ws

    @on_one_thread
    def forward_backward(self, ctx, targets) -> float:
        """Mean cross-entropy of targets (B,) given ctx (B, N); fills ``grads``."""
        cfg, P, G = self.cfg, self.params, self.grads
        ctx = check_context(ctx, cfg)
        targets = check_ids(targets, cfg.vocab_size, "targets")
        if targets.shape != ctx.shape[:1]:
            raise ValueError(f"targets must have shape ({ctx.shape[0]},), got {targets.shape}")
        B = ctx.shape[0]
        ws = self._workspace(B)
        x, a, logits = ws["x"], ws["a"], ws["logits"]
        ids = ctx.reshape(-1)
        np.take(P["embed"], ids, axis=0, out=x.reshape(-1, cfg.n_embd))  # (B N, E) = (B, N E): Concat(e)
        np.matmul(x, P["W_hidden"], out=a)  # (B, NE) x (NE, Hd) -> (B, Hd)
        a += P["b_hidden"]
        if cfg.activation == "tanh":
            np.tanh(a, out=a)
        else:
            np.maximum(a, 0, out=a)
        mm = K.matmul_split if n_threads() == 2 else K.matmul  # the products over V: two threads
        mm(a, P["W_out"], logits)  # (B, Hd) x (Hd, V) -> (B, V)
        logits += P["b_out"]
        if cfg.direct:
            logits += x @ P["W_direct"]  # (B, NE) x (NE, V) -> (B, V)
        loss = K.cross_entropy_inplace(logits, targets, ws["ones_v"])  # logits -> dlogits
        dlogits, da, dx, ones_b = logits, ws["da"], ws["dx"], ws["ones_b"]
        np.matmul(ones_b, dlogits, out=G["b_out"])  # (V,)
        mm(a.T, dlogits, G["W_out"])  # (Hd, B) x (B, V) -> (Hd, V)
        np.matmul(dlogits, P["W_out"].T, out=da)  # (B, V) x (V, Hd) -> (B, Hd)
        if cfg.activation == "tanh":
            np.multiply(a, a, out=a)
            np.subtract(self.dtype.type(1), a, out=a)  # 1 - tanh^2
            da *= a
        else:
            da *= a > 0
        np.matmul(ones_b, da, out=G["b_hidden"])  # (Hd,)
        np.matmul(x.T, da, out=G["W_hidden"])  # (NE, B) x (B, Hd) -> (NE, Hd)
        np.matmul(da, P["W_hidden"].T, out=dx)  # (B, Hd) x (Hd, NE) -> (B, NE)
        if cfg.direct:
            np.matmul(x.T, dlogits, out=G["W_direct"])  # (NE, B) x (B, V) -> (NE, V)
            dx += dlogits @ P["W_direct"].T  # (B, V) x (V, NE) -> (B, NE)
        dembed = G["embed"]
        if self._touched is None:
            dembed.fill(0)
        else:
            dembed[self._touched] = 0  # only these rows are non-zero from the previous step
        np.add.at(dembed, ids, dx.reshape(-1, cfg.n_embd))  # (V, E), repeated ids accumulate
        self._touched = ids.copy()
        return loss

    def loss_and_grads(self, ctx, targets) -> tuple[float, dict[str, np.ndarray]]:
        """(loss, grads) like minilm.ngram.loss_and_grads; the grads are copies."""
        loss = self.forward_backward(ctx, targets)
        return loss, {k: g.copy() for k, g in self.grads.items()}

    @on_one_thread
    def step(self, ctx, targets, lr, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01,
             max_norm=0.0) -> tuple[float, float]:
        """Loss and gradients, clipping, AdamW; returns (loss, gradient norm).  Non-finite: no update."""
        self._share_optimizer()
        loss = self.forward_backward(ctx, targets)
        norm = self.flat.grad_norm()
        if math.isfinite(loss) and math.isfinite(norm):
            self.flat.adamw_step(lr, beta1, beta2, eps, weight_decay, max_norm, norm)
        return loss, norm

"""The LSTM LM of minilm.lstm_lm, trained fast: same parameters, same numbers.

    e = embed[idx];  hs, state' = LSTM_n(e, state);  logits = hs W_out + b_out;  loss = cross-entropy

What differs from minilm.lstm_lm (tests/test_fast.py checks the loss, every
gradient, the final state and whole AdamW steps against it in float64):

* the whole model works time-major, (T, B, .): the embedding lookup reads
  idx^T, each layer's H[1:] (minilm.fast.lstm.lstm_forward_tm) is the next
  layer's input as it lies in memory, and the output layer and the loss see
  (T B, Hd) rows; the loss is a mean over all positions, so their order does
  not change it;
* the layers are minilm.fast.lstm's (one exponential for all gates, per-step
  buffers, stacked products outside the loop);
* parameters, gradients and AdamW moments are flat buffers (minilm.fast.flat);
* cross-entropy overwrites the logits with their gradient (minilm.fast.kernels).

As in the plain model, the carried state gets no gradient (truncated BPTT).
"""

from __future__ import annotations

import math

import numpy as np

from minilm.fast import kernels as K
from minilm.fast import lstm as L
from minilm.fast.flat import FlatModel, FlatParams
from minilm.lstm_lm import check_state, param_shapes, zero_state
from minilm.validate import check_ids


class FastLSTMLM(FlatModel):
    """Flat buffers for one LSTMConfig; ``step`` trains, ``loss_grads_and_state`` checks."""

    def __init__(self, cfg, params: dict | None = None, dtype=np.float32):
        self.cfg = cfg
        entries = [(k, s, len(s) >= 2) for k, s in param_shapes(cfg).items()]  # matrices decay (minilm.optim)
        self._init_flat(FlatParams(entries, dtype=dtype), params)
        self._ws = [L.Workspace() for _ in range(cfg.n_layer)]  # each layer's arrays, reused by every call

    def forward_backward(self, idx, targets, state=None):
        """minilm.lstm_lm.loss_grads_and_state without the grads dict: fills ``grads``, returns (loss, final state)."""
        cfg, P, G = self.cfg, self.params, self.grads
        idx = check_ids(idx, cfg.vocab_size, "idx")
        targets = check_ids(targets, cfg.vocab_size, "targets")
        if idx.ndim != 2 or idx.shape[1] == 0 or targets.shape != idx.shape:
            raise ValueError(f"idx and targets must both have shape (B, T), T >= 1; got {idx.shape} and "
                             f"{targets.shape}")
        B, T = idx.shape
        state = zero_state(cfg, B, self.dtype) if state is None else check_state(state, cfg, B, self.dtype)
        ids = idx.T.reshape(-1)  # (T B,), time-major
        x = np.take(P["embed"], ids, axis=0)  # (T B, E): e = embed[idx], time-major
        caches, final = [], []
        for l in range(cfg.n_layer):
            H, cache = L.lstm_forward_tm(x, T, *state[l], P[f"lstm.{l}.Wx"], P[f"lstm.{l}.Wh"], P[f"lstm.{l}.b"],
                                         self._ws[l])
            caches.append(cache)
            final.append((H[T].copy(), self._ws[l].C[T].copy()))  # (h_T, c_T), each (B, Hd)
            x = H[1:].reshape(T * B, cfg.n_hidden)  # (T B, Hd) view: the next layer's input
        logits = x @ P["W_out"]  # (T B, Hd) x (Hd, V) -> (T B, V)
        logits += P["b_out"]
        loss = K.cross_entropy_inplace(logits, targets.T.reshape(-1), np.ones(cfg.vocab_size, self.dtype))
        dlogits = logits  # (T B, V)
        dlogits.sum(axis=0, out=G["b_out"])  # (V,)
        np.matmul(x.T, dlogits, out=G["W_out"])  # (Hd, T B) x (T B, V) -> (Hd, V)
        dx = dlogits @ P["W_out"].T  # (T B, V) x (V, Hd) -> (T B, Hd)
        for l in reversed(range(cfg.n_layer)):
            dx, _, _, dWx, dWh, db = L.lstm_backward_tm(dx.reshape(T, B, -1), caches[l])  # dh0, dc0 dropped
            G[f"lstm.{l}.Wx"][...], G[f"lstm.{l}.Wh"][...], G[f"lstm.{l}.b"][...] = dWx, dWh, db
        G["embed"].fill(0)
        np.add.at(G["embed"], ids, dx)  # (V, E), repeated ids accumulate
        return loss, final

    def loss_grads_and_state(self, idx, targets, state=None):
        """(loss, grads, final state) like minilm.lstm_lm.loss_grads_and_state; the grads are copies."""
        loss, final = self.forward_backward(idx, targets, state)
        return loss, {k: g.copy() for k, g in self.grads.items()}, final

    def step(self, idx, targets, lr, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01, max_norm=0.0,
             state=None):
        """Loss and gradients, clipping, AdamW; returns (loss, gradient norm, final state).  Non-finite: no update."""
        loss, final = self.forward_backward(idx, targets, state)
        norm = self.flat.grad_norm()
        if math.isfinite(loss) and math.isfinite(norm):
            self.flat.adamw_step(lr, beta1, beta2, eps, weight_decay, max_norm, norm)
        return loss, norm, final

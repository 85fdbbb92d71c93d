"""The LSTM LM of minilm.lstm_lm, trained fast: same parameters, same numbers.

    e = embed[idx];  hs, state' = LSTM_n(e, state);  logits = hs W_out + b_out;  loss = cross-entropy

What differs from minilm.lstm_lm (tests/test_fast.py checks the loss, every
gradient, the final state and whole AdamW steps against it in float64):

* the whole model works time-major, (T, B, .): the embedding lookup reads
  idx^T, each layer's H[1:] (minilm.fast.lstm.stack_forward_tm) is the next
  layer's input as it lies in memory, and the output layer and the loss see
  (T B, Hd) rows; the loss is a mean over all positions, so their order does
  not change it;
* the layers are minilm.fast.lstm's (one tanh for all gates, a Workspace per
  layer, the large products off the recurrence's thread);
* parameters, gradients and AdamW moments are flat buffers (minilm.fast.flat);
* cross-entropy overwrites the logits with their gradient, and the embeddings' gradient is a
  product with a one-hot matrix (minilm.fast.kernels): for a small vocabulary (one_hot_first)
  (onehot dA_0) W_x0^T, which never makes layer 0's input gradient dx (T B, E);
* with two or more layers, the layers run on two threads one chunk of steps behind each other
  (minilm.fast.lstm.stack_forward_tm / stack_backward_tm).

As in the plain model, the carried state gets no gradient (truncated BPTT).
"""

from __future__ import annotations

import math

import numpy as np

from minilm.fast import kernels as K
from minilm.fast import lstm as L
from minilm.fast import procs
from minilm.fast.blas import on_one_thread
from minilm.fast.flat import FlatModel, FlatParams
from minilm.fast.threads import n_threads
from minilm.lstm_lm import check_state, param_shapes, zero_state
from minilm.validate import check_ids


def _peer(cfg):
    """The second process for two or more layers on two cores (minilm.fast.procs), or None."""
    return procs.peer() if cfg.n_layer >= 2 and n_threads() == 2 else None


def one_hot_first(V: int, rows: int, E: int, Hd: int) -> bool:
    """Whether the embeddings' gradient onehot dx, dx = dA_0 W_x0^T, is cheaper as (onehot dA_0) W_x0^T:
    V rows 4Hd + V 4Hd E multiply-adds against rows 4Hd E + V rows E (a character vocabulary: yes)."""
    return V * rows * 4 * Hd + V * 4 * Hd * E < rows * 4 * Hd * E + V * rows * E


class FastLSTMLM(FlatModel):
    """Flat buffers for one LSTMConfig; ``step`` trains, ``loss_grads_and_state`` checks."""

    def __init__(self, cfg, params: dict | None = None, dtype=np.float32):
        self.cfg = cfg
        entries = [(k, s, len(s) >= 2) for k, s in param_shapes(cfg).items()]  # matrices decay (minilm.optim)
        self._init_flat(FlatParams(entries, dtype=dtype), params)
        self._ws = [L.Workspace() for _ in range(cfg.n_layer)]  # each layer's arrays, reused by every call

    @on_one_thread
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
        weights = [(P[f"lstm.{l}.Wx"], P[f"lstm.{l}.Wh"], P[f"lstm.{l}.b"]) for l in range(cfg.n_layer)]
        layers = L.stack_forward_tm(x, T, state, weights, self._ws, _peer(cfg))  # [(H, cache)] per layer
        caches = [cache for _, cache in layers]
        final = [(H[T].copy(), ws.C[T].copy()) for (H, _), ws in zip(layers, self._ws, strict=True)]  # (h_T, c_T)
        x = layers[-1][0][1:].reshape(T * B, cfg.n_hidden)  # (T B, Hd) view: the top layer's outputs
        logits = x @ P["W_out"]  # (T B, Hd) x (Hd, V) -> (T B, V)
        logits += P["b_out"]
        loss = K.cross_entropy_inplace(logits, targets.T.reshape(-1), np.ones(cfg.vocab_size, self.dtype))
        dlogits = logits  # (T B, V)
        dlogits.sum(axis=0, out=G["b_out"])  # (V,)
        np.matmul(x.T, dlogits, out=G["W_out"])  # (Hd, T B) x (T B, V) -> (Hd, V)
        dx = dlogits @ P["W_out"].T  # (T B, V) x (V, Hd) -> (T B, Hd)
        onehot = self._onehot(len(ids))
        first = onehot is not None and one_hot_first(cfg.vocab_size, T * B, cfg.n_embd, cfg.n_hidden)
        left = K.fill_onehot(onehot, ids) if first else None  # (V, T B): onehot dA_0 made behind the loop
        grads = L.stack_backward_tm(dx.reshape(T, B, -1), caches, input_grad=not first, left=left)  # no dh0, dc0
        for l, (_, _, _, dWx, dWh, db) in enumerate(grads):
            G[f"lstm.{l}.Wx"][...], G[f"lstm.{l}.Wh"][...], G[f"lstm.{l}.b"][...] = dWx, dWh, db
        if first:  # d embed = onehot dx = (onehot dA_0) W_x0^T, without dx (T B, E)
            np.copyto(G["embed"], L.input_gradient_product(self._ws[0], left))
        else:
            G["embed"].fill(0)
            K.embedding_backward_add(G["embed"], ids, grads[0][0], onehot)  # (V, E), repeated ids accumulate
        return loss, final

    @on_one_thread
    def logits(self, idx, state=None):
        """minilm.lstm_lm.forward without a cache (evaluation): (B, T) ids -> logits (B, T, V), final state.

        Runs in Workspaces of its own, so the training step's stay as they are.
        """
        cfg, P = self.cfg, self.params
        idx = check_ids(idx, cfg.vocab_size, "idx")
        if idx.ndim != 2 or idx.shape[1] == 0:
            raise ValueError(f"idx must have shape (B, T) with T >= 1, got shape {idx.shape}")
        B, T = idx.shape
        state = zero_state(cfg, B, self.dtype) if state is None else check_state(state, cfg, B, self.dtype)
        if not hasattr(self, "_eval_ws"):
            self._eval_ws = [L.Workspace() for _ in range(cfg.n_layer)]
        x = np.take(P["embed"], idx.T.reshape(-1), axis=0)  # (T B, E), time-major
        weights = [(P[f"lstm.{l}.Wx"], P[f"lstm.{l}.Wh"], P[f"lstm.{l}.b"]) for l in range(cfg.n_layer)]
        layers = L.stack_forward_tm(x, T, state, weights, self._eval_ws, _peer(cfg))
        final = [(H[T].copy(), ws.C[T].copy()) for (H, _), ws in zip(layers, self._eval_ws, strict=True)]
        top = layers[-1][0][1:]  # (T, B, Hd)
        logits = top.reshape(T * B, -1) @ P["W_out"]  # (T B, Hd) x (Hd, V) -> (T B, V)
        logits += P["b_out"]
        return logits.reshape(T, B, -1).transpose(1, 0, 2), final  # (B, T, V) view, [(h_T, c_T)]

    def _onehot(self, M: int):
        """(V, M) scratch for the embedding gradient as one product (minilm.fast.kernels), or None for a large V."""
        if self.cfg.vocab_size > K.ONEHOT_MAX_V:
            return None
        if getattr(self, "_onehot_buf", None) is None or self._onehot_buf.shape[1] != M:
            self._onehot_buf = np.empty((self.cfg.vocab_size, M), self.dtype)
        return self._onehot_buf

    def loss_grads_and_state(self, idx, targets, state=None):
        """(loss, grads, final state) like minilm.lstm_lm.loss_grads_and_state; the grads are copies."""
        loss, final = self.forward_backward(idx, targets, state)
        return loss, {k: g.copy() for k, g in self.grads.items()}, final

    @on_one_thread
    def step(self, idx, targets, lr, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01, max_norm=0.0,
             state=None):
        """Loss and gradients, clipping, AdamW; returns (loss, gradient norm, final state).  Non-finite: no update."""
        self._share_optimizer()
        loss, final = self.forward_backward(idx, targets, state)
        norm = self.flat.grad_norm()
        if math.isfinite(loss) and math.isfinite(norm):
            self.flat.adamw_step(lr, beta1, beta2, eps, weight_decay, max_norm, norm)
        return loss, norm, final

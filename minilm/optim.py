"""Optimisers, gradient clipping and the learning-rate schedule.

Parameters and gradients are ``dict[str, np.ndarray]`` with the same keys.
Optimiser state is a plain dict too (``init_state``), so a checkpoint can
save it.  Each ``*_step`` updates the parameter *arrays* in place (the dict
itself is not changed) and returns nothing.

    SGD + momentum:  u <- mu u + g;              p <- p - lr u
    Adam:            m <- b1 m + (1-b1) g;       v <- b2 v + (1-b2) g^2
                     mhat = m / (1-b1^t);        vhat = v / (1-b2^t)
                     p <- p - lr mhat / (sqrt(vhat) + eps)
    AdamW:           p <- p - lr wd p   (decoupled: not through m and v), then Adam
                     (weight decay only on matrices: biases, LayerNorm gains
                     and other 1-D parameters are not decayed)
"""

from __future__ import annotations

import math

import numpy as np


def init_state(params: dict[str, np.ndarray]) -> dict:
    """Zero first and second moments (or momentum buffers) and a step count t = 0."""
    return {
        "t": 0,
        "m": {k: np.zeros_like(p) for k, p in params.items()},
        "v": {k: np.zeros_like(p) for k, p in params.items()},
    }


def decays(name: str, p: np.ndarray) -> bool:
    """Weight decay applies to matrices (ndim >= 2: weights, embeddings), not to biases or gains."""
    return p.ndim >= 2


def sgd_step(params, grads, state, lr: float, momentum: float = 0.9) -> None:
    """u <- momentum * u + g;  p <- p - lr * u  (torch.optim.SGD's form)."""
    state["t"] += 1
    for k, p in params.items():
        u = state["m"][k]
        u *= momentum
        u += grads[k]
        p -= p.dtype.type(lr) * u


def adam_step(params, grads, state, lr: float, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0,
              decoupled: bool = False) -> None:
    """Adam; with ``decoupled=True`` and ``weight_decay > 0`` it is AdamW."""
    state["t"] += 1
    t = state["t"]
    bc1, bc2 = 1 - beta1**t, 1 - beta2**t  # bias corrections
    for k, p in params.items():
        g, m, v = grads[k], state["m"][k], state["v"][k]
        f = p.dtype.type  # keep float32 parameters in float32
        if weight_decay and decays(k, p):
            if decoupled:
                p *= f(1 - lr * weight_decay)  # AdamW: shrink the weight itself
            else:
                g = g + f(weight_decay) * p  # Adam's L2: the decay goes through m and v
        m *= f(beta1)
        m += f(1 - beta1) * g
        v *= f(beta2)
        v += f(1 - beta2) * g * g
        p -= f(lr / bc1) * m / (np.sqrt(v / f(bc2)) + f(eps))


def adamw_step(params, grads, state, lr: float, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01) -> None:
    """AdamW (Loshchilov & Hutter): decoupled weight decay on matrices, then the Adam update."""
    adam_step(params, grads, state, lr, beta1, beta2, eps, weight_decay, decoupled=True)


def clip_grad_norm(grads: dict[str, np.ndarray], max_norm: float) -> float:
    """Scale all gradients in place so their global L2 norm is at most ``max_norm``.

    Returns the norm before clipping: sqrt(sum_k ||g_k||^2).
    """
    total = math.sqrt(sum(float(np.vdot(g, g)) for g in grads.values()))
    if max_norm > 0 and total > max_norm:
        scale = max_norm / (total + 1e-6)
        for g in grads.values():
            g *= g.dtype.type(scale)
    return total


def lr_at(step: int, max_lr: float, min_lr: float, warmup: int, total: int) -> float:
    """Linear warmup for ``warmup`` steps, then cosine decay from max_lr to min_lr at ``total``.

        step < warmup:  lr = max_lr (step + 1) / warmup
        otherwise:      r = min(1, (step - warmup) / (total - warmup))
                        lr = min_lr + (max_lr - min_lr) (1 + cos(pi r)) / 2
    """
    if step < warmup:
        return max_lr * (step + 1) / warmup
    r = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_lr + (max_lr - min_lr) * 0.5 * (1 + math.cos(math.pi * r))

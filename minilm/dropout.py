"""Inverted dropout: zero each entry with probability p, scale the rest by 1/(1-p).

    y = x * m / (1 - p),   m_i ~ Bernoulli(1 - p)     (training)
    y = x                                            (evaluation, or p = 0)

The expected value of y equals x, so nothing changes at evaluation time.
"""

from __future__ import annotations

import numpy as np

from minilm.validate import check_float


def dropout_forward(x: np.ndarray, p: float, rng: np.random.Generator | None = None, train: bool = True):
    """Inputs: x (...); p in [0, 1); rng required when training with p > 0.  Returns y (...), cache."""
    check_float(x, "x", min_ndim=0)
    if not 0 <= p < 1:
        raise ValueError(f"dropout probability p must be in [0, 1), got {p}")
    if not train or p == 0:
        return x, None
    if rng is None:
        raise ValueError("dropout in training mode needs an explicit np.random.Generator (rng=...)")
    mask = (rng.random(x.shape) >= p).astype(x.dtype) / x.dtype.type(1 - p)  # (...), 0 or 1/(1-p)
    return x * mask, mask


def dropout_backward(dy: np.ndarray, cache):
    """dx = dy * m / (1 - p)  (the same mask), or dy when the forward was the identity."""
    mask = cache
    ### BEGIN SOLUTION
    dx = dy if mask is None else dy * mask  # (...)
    ### END SOLUTION
    return dx

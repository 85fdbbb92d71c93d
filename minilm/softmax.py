"""Softmax, log-softmax and cross-entropy over the last axis.

    softmax(x)_j     = e^{x_j - m} / sum_k e^{x_k - m},   m = max_k x_k
    log_softmax(x)_j = x_j - m - log sum_k e^{x_k - m}
    cross_entropy    = -(1/M) sum_{tokens t} log softmax(logits_t)[y_t]

Subtracting the row maximum m changes nothing mathematically and keeps every
exponent <= 0, so logits of +-1e4 neither overflow nor produce NaN.  The
softmax turns scores into the probabilities of §4.1 (attention weights) and of
§4.2 (the next word); cross-entropy is the negative log-likelihood whose
exponential is the perplexity of §9.6.
"""

from __future__ import annotations

import numpy as np

from minilm.validate import check_float, check_ids


def softmax_forward(x: np.ndarray):
    """y = softmax(x) over the last axis.  x, y: (..., V)."""
    check_float(x, "x")
    z = x - x.max(axis=-1, keepdims=True)  # (..., V), every entry <= 0
    e = np.exp(z)  # (..., V)
    y = e / e.sum(axis=-1, keepdims=True)  # (..., V)
    return y, y


def softmax_backward(dy: np.ndarray, cache):
    """dx_j = y_j (dy_j - sum_k dy_k y_k)   (the Jacobian diag(y) - y y^T applied to dy)."""
    y = cache
    ### BEGIN SOLUTION
    dx = y * (dy - (dy * y).sum(axis=-1, keepdims=True))  # (..., V)
    ### END SOLUTION
    return dx


def log_softmax_forward(x: np.ndarray):
    """y = log softmax(x) over the last axis.  x, y: (..., V)."""
    check_float(x, "x")
    z = x - x.max(axis=-1, keepdims=True)  # (..., V)
    y = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))  # (..., V)
    return y, y


def log_softmax_backward(dy: np.ndarray, cache):
    """dx_j = dy_j - softmax(x)_j sum_k dy_k,   softmax(x) = exp(y)."""
    y = cache
    ### BEGIN SOLUTION
    dx = dy - np.exp(y) * dy.sum(axis=-1, keepdims=True)  # (..., V)
    ### END SOLUTION
    return dx


def cross_entropy_forward(logits: np.ndarray, targets: np.ndarray, ignore_index: int | None = None):
    """Mean negative log-likelihood of integer targets.

    Inputs:  logits (..., V); targets (...) integer ids in [0, V), or
             ``ignore_index`` for positions that do not count (the masked LM's
             unmasked positions, padding).
    Returns: loss (a float: the mean over counted positions; 0.0 if none), cache.
    """
    check_float(logits, "logits")
    targets = np.asarray(targets)
    if targets.shape != logits.shape[:-1]:
        raise ValueError(f"targets must have shape {logits.shape[:-1]} (logits without V), got {targets.shape}")
    keep = np.ones(targets.shape, bool) if ignore_index is None else targets != ignore_index  # (...)
    check_ids(targets[keep], logits.shape[-1], "targets")
    logp, _ = log_softmax_forward(logits)  # (..., V)
    safe = np.where(keep, targets, 0)  # (...), ignored positions point at id 0
    nll = -np.take_along_axis(logp, safe[..., None], axis=-1)[..., 0]  # (...)
    count = max(int(keep.sum()), 1)
    loss = float((nll * keep).sum() / count)
    return loss, (logp, safe, keep, count)


def cross_entropy_backward(dloss, cache):
    """dlogits = (softmax(logits) - onehot(targets)) * dloss / M on counted positions, 0 elsewhere.

    The cache: logp (..., V), the log-probabilities (softmax(logits) = exp(logp));
    safe (...), the targets with ignored positions set to 0; keep (...), True
    where a position counts; count, the number M of counted positions (at least 1).
    Returns dlogits (..., V) in the dtype of logp (float32 logits: float32).
    """
    logp, safe, keep, count = cache
    ### BEGIN SOLUTION
    dlogits = np.exp(logp)  # (..., V), the probabilities
    np.put_along_axis(dlogits, safe[..., None], np.take_along_axis(dlogits, safe[..., None], -1) - 1, -1)
    dlogits *= (keep * (np.asarray(dloss) / count))[..., None].astype(dlogits.dtype)  # (..., V)
    ### END SOLUTION
    return dlogits

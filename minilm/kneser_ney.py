"""Interpolated Kneser-Ney: the counting n-gram model that the MLP of §4.2 (Bengio et al. 2003) is measured against.

A counting model of context length N predicts w from the N previous tokens h by counts c(h, w) in the
training text.  Kneser-Ney (Kneser & Ney 1995; interpolated, as in Chen & Goodman 1998) does two things:

1. **Absolute discounting, interpolated.**  Every seen count gives up a discount D in (0, 1), and the mass
   taken is handed to the next shorter context h' (h without its oldest token):

       P(w | h) = max(c(h, w) - D, 0) / c(h)  +  D N1+(h .) / c(h) * P(w | h')

   with c(h) = sum_w c(h, w) and N1+(h .) the number of distinct w seen after h.  The weights sum to 1:
   the first term sums to (c(h) - D N1+(h .)) / c(h).  A context never seen (c(h) = 0) uses P(w | h').

2. **Continuation counts below the top.**  P(w | h') is only consulted when the longer context was rare,
   so at the lower orders the count of h'w is replaced by the number of distinct tokens seen *before* it,
   N1+(. h' w): "Francisco" is frequent but follows almost only "San", so it should get little of the
   mass handed down from contexts that were not "San".  At the bottom, the empty context is interpolated
   with the uniform 1/V, so no token has probability 0.

One discount per order, D = n1 / (n1 + 2 n2) (Ney, Essen & Kneser 1994), n1 and n2 the numbers of
n-grams of that order whose (raw or continuation) count is exactly 1 and 2 (D = 1/2 when either is 0,
where the estimate would give 0 or 1).

Shapes: ids (M,) token ids in [0, V); contexts (B, N), oldest first; probabilities (B, V).
An n-gram of k tokens is stored as one integer, its digits in base V (so V^(N+1) must fit in an int64).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Order:
    """The counts of one order: contexts of k tokens, n-grams of k + 1."""

    keys: np.ndarray  # (G,) sorted keys of the (k+1)-grams h w: those of one context h are contiguous
    counts: np.ndarray  # (G,) their counts: raw c(h, w) at the top order, continuation N1+(. h w) below
    discount: float


@dataclass(frozen=True)
class KneserNey:
    vocab_size: int  # V
    context: int  # N
    orders: tuple[Order, ...]  # orders[k]: contexts of k tokens, k = 0 .. N


def _keys(grams: np.ndarray, V: int) -> np.ndarray:
    """(M, k) token ids -> (M,) integer keys, the oldest token the most significant digit."""
    return grams.astype(np.int64) @ (np.int64(V) ** np.arange(grams.shape[1] - 1, -1, -1, dtype=np.int64))


def _grams(ids: np.ndarray, k: int, V: int) -> np.ndarray:
    """The keys of every k-gram of ids, in text order: (M - k + 1,)."""
    return _keys(np.lib.stride_tricks.sliding_window_view(ids, k), V)


def _order(keys: np.ndarray, counts: np.ndarray, discount: float | None) -> Order:
    if discount is None:
        n1, n2 = int(np.sum(counts == 1)), int(np.sum(counts == 2))
        discount = n1 / (n1 + 2 * n2) if n1 > 0 and n2 > 0 else 0.5  # the estimate needs both to lie in (0, 1)
    return Order(keys, counts, float(discount))


def kneser_ney_fit(ids: np.ndarray, vocab_size: int, context: int, discount: float | None = None) -> KneserNey:
    """Count the training ids (M,) into an interpolated Kneser-Ney model with contexts of N = context tokens.

    discount: one D for every order, or None for Ney's estimate n1 / (n1 + 2 n2) per order.
    """
    ids = np.asarray(ids)
    V, N = int(vocab_size), int(context)
    if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"ids must be a 1-D array of integer token ids, got {ids.dtype} of shape {ids.shape}")
    if N < 0 or V < 1:
        raise ValueError(f"need context >= 0 and vocab_size >= 1, got context = {N}, vocab_size = {V}")
    if len(ids) <= N:
        raise ValueError(f"need more than context = {N} tokens, got {len(ids)}")
    if ids.min() < 0 or ids.max() >= V:
        raise ValueError(f"token ids must lie in [0, {V}), got ids from {ids.min()} to {ids.max()}")
    if float(V) ** (N + 1) >= 2.0**62:
        raise ValueError(f"V^(N+1) = {V}^{N + 1} does not fit in an int64 key: use a shorter context")
    if discount is not None and not 0 < discount < 1:
        raise ValueError(f"discount must lie in (0, 1), got {discount}")
    orders = []
    for k in range(N + 1):
        if k == N:  # the top order: raw counts of the (N+1)-grams
            keys, counts = np.unique(_grams(ids, N + 1, V), return_counts=True)
        else:  # continuation counts: distinct (k+2)-grams x h w, grouped by their suffix h w
            keys, counts = np.unique(np.unique(_grams(ids, k + 2, V)) % np.int64(V) ** (k + 1), return_counts=True)
        orders.append(_order(keys, counts, discount))
    return KneserNey(V, N, tuple(orders))


def _counts_after(o: Order, h: np.ndarray, V: int):
    """The counts of every (h, w) of this order as a dense (B, V) array, and c(h) = their sum, N1+(h .) = the
    number of w with a count (each (B,)).  The keys of context h are the sorted run [h V, h V + V)."""
    lo, hi = np.searchsorted(o.keys, h * V), np.searchsorted(o.keys, h * V + V)  # (B,) each
    n = hi - lo  # (B,) N1+(h .)
    rows = np.repeat(np.arange(len(h)), n)  # (S,), S = n.sum(): one entry per seen (h, w)
    pos = np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n) + np.repeat(lo, n)  # (S,) its index in keys
    c_hw = np.zeros((len(h), V))  # (B, V)
    c_hw[rows, o.keys[pos] % V] = o.counts[pos]
    return c_hw, c_hw.sum(axis=1), n.astype(np.float64)


def kneser_ney_probs(model: KneserNey, ctx: np.ndarray) -> np.ndarray:
    """P(w | h) for every w: ctx (B, N) token ids, oldest first -> (B, V), each row summing to 1.

    From the bottom up:  P_{-1} = 1/V;  P_k(w | h_k) = (max(c_k(h_k, w) - D_k, 0) + D_k N1+(h_k .) P_{k-1}(w | h_{k-1}))
    / c_k(h_k) for a seen context h_k (its last k tokens), P_{k-1} for an unseen one.
    """
    V, N = model.vocab_size, model.context
    ctx = np.asarray(ctx)
    if ctx.ndim != 2 or ctx.shape[1] != N:
        raise ValueError(f"ctx must have shape (B, {N}), got {ctx.shape}")
    B = ctx.shape[0]
    p = np.full((B, V), 1.0 / V)  # (B, V): below the empty context, the uniform distribution
    for k, o in enumerate(model.orders):
        h = _keys(ctx[:, N - k :], V) if k else np.zeros(B, dtype=np.int64)  # (B,) key of the last k tokens
        c_hw, total, types = _counts_after(o, h, V)  # (B, V), (B,) c_k(h), (B,) N1+(h .)
        seen = (total > 0)[:, None]  # (B, 1)
        mixed = (np.maximum(c_hw - o.discount, 0) + o.discount * types[:, None] * p) / np.where(seen, total[:, None], 1)
        p = np.where(seen, mixed, p)  # (B, V)
    return p


def kneser_ney_log_probs(model: KneserNey, ctx: np.ndarray) -> np.ndarray:
    """ln P(w | h): (B, N) -> (B, V), the form the evaluation code takes as logits."""
    return np.log(kneser_ney_probs(model, ctx))

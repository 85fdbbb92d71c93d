"""Text generation (§6.3): greedy, temperature, top-k and top-p sampling; filling in [MASK] positions.

One token at a time, w_{t+1} ~ p(. | w_1 .. w_t), with the distribution reshaped first:

    greedy          w = argmax_j z_j                       (temperature 0)
    temperature     p_j = softmax(z / tau)_j               (tau < 1 sharper, tau > 1 flatter)
    top-k           keep the k largest z_j, renormalise over them
    top-p (nucleus) keep the smallest set of likeliest tokens whose mass is >= p, renormalise over it
                    (Holtzman et al. 2020); applied after temperature and top-k

A model enters as ``next_logits(history, carry) -> (z (V,), carry)``; the
factories below build it for each family: a causal model crops the history
to its block_size, the n-gram model reads the last N tokens, a recurrent
model carries its state and reads only the newest token.

A causal Transformer reads either way: recomputing its window at every step
(``window_next``), or keeping each layer's keys and values, the KV cache
(``cached_next``), so that a step computes the newest position only.  Both
read the same window of the history and give the same logits.

Past block_size tokens the window is *cropped and recomputed*: when the
cache is full it restarts from the last ``keep`` tokens, read in one
forward pass at positions 0 .. keep-1, and grows again one token at a time.
Not a rolling cache: with absolute positions (learned or sinusoidal) a key
holds the position it was computed at, and sliding the window by one token
moves every token to a new position, so every cached key and value would
be stale; keeping them would show the model positions past block_size (no
row of a learned table) or pairs of positions it never saw in training.
The window thus holds between keep and block_size tokens:

    start(n) = 0                                     n <= T
    start(n) = (k + 1)(T + 1 - keep),  k = floor((n - T - 1) / (T + 1 - keep))     n > T

for a history of n tokens and T = block_size.  keep = T is the plain
sliding window (recompute every step past T: exact but slow); the default
keep = T // 2 recomputes once every T // 2 + 1 tokens.
"""

from __future__ import annotations

import numpy as np


def check_sampling(temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None) -> None:
    """Raise ValueError naming the first bad sampling argument."""
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")


def sampling_distribution(logits: np.ndarray, temperature: float = 1.0, top_k: int | None = None,
                          top_p: float | None = None) -> np.ndarray:
    """The distribution (V,) a token is drawn from: softmax(z / tau), cut to the top k, then to the top-p nucleus.

    Temperature 0 is greedy: all the mass on the argmax.  Top-p keeps the likeliest tokens, in order, until their
    mass first reaches p:  S = the smallest {j : p_j >= p_(n)} with sum_{j in S} p_j >= p.  A token tied with the
    last one kept is kept too (as at the k-th value of top-k), so the set never depends on how ties are ordered.
    """
    check_sampling(temperature, top_k, top_p)
    z = np.asarray(logits, dtype=np.float64).reshape(-1)  # (V,)
    if temperature == 0:
        return (np.arange(z.size) == z.argmax()).astype(np.float64)  # (V,) one-hot
    if top_k is not None and top_k < z.size:
        kth = np.partition(z, -top_k)[-top_k]  # the k-th largest logit
        z = np.where(z >= kth, z, -np.inf)  # (V,), ties at the k-th value are all kept
    z = z / temperature  # (V,)
    p = np.exp(z - z.max())  # (V,)
    p /= p.sum()
    if top_p is not None and top_p < 1:
        desc = np.sort(p)[::-1]  # (V,) largest first
        n = min(int(np.searchsorted(np.cumsum(desc), top_p * (1 - 1e-12))) + 1, z.size)  # first n with mass >= p
        p = np.where(p >= desc[n - 1], p, 0.0)  # (V,) the nucleus, ties at its edge kept
        p /= p.sum()
    return p


def sample_next(logits: np.ndarray, rng: np.random.Generator, temperature: float = 1.0,
                top_k: int | None = None, top_p: float | None = None) -> int:
    """One token id from logits (V,): argmax when temperature is 0, else a draw from ``sampling_distribution``."""
    p = sampling_distribution(logits, temperature, top_k, top_p)  # (V,)
    if temperature == 0:
        return int(p.argmax())
    return int(min(np.searchsorted(np.cumsum(p), rng.random() * p.sum(), side="right"), p.size - 1))


def generate(next_logits, prompt: np.ndarray, n_tokens: int, rng: np.random.Generator,
             temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None) -> np.ndarray:
    """The prompt's ids followed by ``n_tokens`` new ones.  prompt: (t,) ints, at least one."""
    check_sampling(temperature, top_k, top_p)
    ids = [int(i) for i in np.asarray(prompt).reshape(-1)]
    if not ids:
        raise ValueError("generation needs a prompt of at least one token")
    carry = None
    for _ in range(n_tokens):
        z, carry = next_logits(np.array(ids, dtype=np.int64), carry)
        ids.append(sample_next(z, rng, temperature, top_k, top_p))
    return np.array(ids, dtype=np.int64)


def window_start(n: int, block_size: int, keep: int | None = None) -> int:
    """The first token of the window a causal model reads after n tokens (the formula above).

    keep None means block_size: the last block_size tokens, a sliding window.
    """
    T = block_size
    keep = T if keep is None else keep
    if not 1 <= keep <= T:
        raise ValueError(f"keep must be in [1, block_size = {T}], got {keep}")
    if n <= T:
        return 0
    period = T + 1 - keep  # new tokens between two crops
    return ((n - T - 1) // period + 1) * period


def window_next(logits_fn, block_size: int, keep: int | None = None):
    """Causal model, recomputed each step: logits_fn(x (1, t)) -> (1, t, V) on the window
    history[window_start(n):] (keep None: the last block_size tokens)."""

    def next_logits(history, carry):
        x = history[window_start(len(history), block_size, keep):][None, :]  # (1, t), t <= T
        return logits_fn(x)[0, -1], None

    return next_logits


def cached_next(step_fn, block_size: int, keep: int | None = None):
    """Causal model with a KV cache: step_fn(x (1, T), past) -> (logits (1, T, V), present).

    The carry is (start, past): the window's first token and the cache of
    the tokens start .. n-2 (past None: empty).  Each step feeds only the
    newest token; when window_start moves, the cache is dropped and the new
    window is read in one call.  keep None is block_size // 2.  The logits
    equal ``window_next(..., keep)``'s on every step.
    """
    keep = block_size // 2 if keep is None else keep

    def next_logits(history, carry):
        start = window_start(len(history), block_size, max(1, keep))
        if carry is not None and carry[0] == start and carry[1] is not None:
            logits, past = step_fn(history[None, -1:], carry[1])  # (1, 1, V): the newest token only
        else:  # the first call, or a crop: read the whole window
            logits, past = step_fn(history[None, start:], None)  # (1, t, V)
        return logits[0, -1], (start, past)

    return next_logits


def context_next(logits_fn, n: int, pad_id: int):
    """n-gram model: logits_fn(ctx (1, N)) -> (1, V) on the last N tokens, left-padded with ``pad_id``."""

    def next_logits(history, carry):
        ctx = np.concatenate([np.full(max(0, n - len(history)), pad_id, np.int64), history[-n:]])  # (N,)
        return logits_fn(ctx[None, :])[0], None

    return next_logits


def recurrent_next(step_fn):
    """Recurrent model: step_fn(x (1, t), state) -> (logits (1, t, V), state).

    The first call reads the whole prompt; later calls feed only the newest token.
    """

    def next_logits(history, state):
        x = history[None, :] if state is None else history[None, -1:]  # (1, t) or (1, 1)
        logits, state = step_fn(x, state)
        return logits[0, -1], state

    return next_logits


def fill_masks(logits_fn, ids: np.ndarray, mask_id: int, rng: np.random.Generator,
               temperature: float = 0.0, top_k: int | None = None, top_p: float | None = None) -> np.ndarray:
    """The masked LM fills each [MASK] in turn, left to right, each choice seen by the next.

    logits_fn(x (1, t)) -> (1, t, V).  ids (t,) holds ``mask_id`` where a token is missing.
    """
    ids = np.array(ids, dtype=np.int64).reshape(-1)  # (t,), a copy
    if not (ids == mask_id).any():
        raise ValueError("the prompt has no [MASK] to fill in")
    for pos in np.flatnonzero(ids == mask_id):
        z = logits_fn(ids[None, :])[0, pos].copy()  # (V,)
        z[mask_id] = -np.inf  # never "fill" a mask with a mask
        ids[pos] = sample_next(z, rng, temperature, top_k, top_p)
    return ids

"""Loss, perplexity and bits per character over a whole split (§9.6).

For a text of M predicted tokens w_1 .. w_M,

    loss       = -(1/M) sum_i log p(w_i | context_i)      (mean negative log-likelihood, nats)
    perplexity = exp(loss)                                 (困惑度: the model is as unsure as a
                                                            uniform choice among this many tokens)
    bits/char  = loss / ln 2                               (for a character model)
    bits/char  = M loss / (N ln 2)                         (any tokenizer: the N characters the
                                                            M predicted tokens spell, e.g. BPE)

Every token of the split is predicted exactly once: no random sample of
batches, so two runs give the same number.  A model enters as a function
from token ids to logits; each family (windowed, n-gram, recurrent, masked)
reads the split in its own way.  For the masked LM the loss counts only
the masked positions (§3.2), and the accuracy is the share of them it
restores.
"""

from __future__ import annotations

import math

import numpy as np

from minilm.softmax import log_softmax_forward
from minilm.training.data import eval_streams, eval_windows, ngram_contexts


def nll_sum(logits: np.ndarray, targets: np.ndarray, ignore_index: int | None = None):
    """Sum of -log p(target) over counted positions, their number, and how many the argmax gets right.

    logits (..., V), targets (...) ints; ``ignore_index`` marks positions that do not count.
    """
    logp, _ = log_softmax_forward(logits)  # (..., V)
    keep = np.ones(targets.shape, bool) if ignore_index is None else targets != ignore_index  # (...)
    safe = np.where(keep, targets, 0)  # (...)
    nll = -np.take_along_axis(logp, safe[..., None], axis=-1)[..., 0]  # (...)
    correct = (logp.argmax(axis=-1) == safe) & keep  # (...)
    return float(nll[keep].sum(dtype=np.float64)), int(keep.sum()), int(correct.sum())


def summary(total: float, count: int, correct: int | None = None, char_level: bool = False) -> dict:
    """loss, perplexity, tokens (and bits_per_char, accuracy when they apply) from the sums."""
    if count == 0:
        raise ValueError("nothing to evaluate: the split has no predicted tokens")
    loss = total / count
    out = {"loss": loss, "perplexity": math.exp(min(loss, 700.0)), "tokens": count}
    if char_level:
        out["bits_per_char"] = loss / math.log(2)
    if correct is not None:
        out["accuracy"] = correct / count
    return out


def per_character(r: dict, n_chars: int) -> dict:
    """``r`` with bits_per_char = (total nats) / (n_chars ln 2): the score of a text, whatever its tokens (§9.6)."""
    if n_chars < 1:
        raise ValueError("nothing to evaluate: the predicted tokens spell no characters")
    return {**r, "bits_per_char": r["loss"] * r["tokens"] / (n_chars * math.log(2))}


def evaluate_windows(logits_fn, ids: np.ndarray, block_size: int, batch_size: int, char_level=False) -> dict:
    """A causal sequence model: logits_fn(x (B, T)) -> (B, T, V), over consecutive windows of T tokens."""
    total, count = 0.0, 0
    for x, y in eval_windows(ids, block_size, batch_size):
        s, n, _ = nll_sum(logits_fn(x), y)
        total, count = total + s, count + n
    return summary(total, count, char_level=char_level)


def evaluate_contexts(logits_fn, ids: np.ndarray, n: int, batch_size: int, char_level=False) -> dict:
    """The n-gram model: logits_fn(ctx (B, N)) -> (B, V), for every position that has N tokens before it."""
    ctx, y = ngram_contexts(ids, n)  # (M, N), (M,)
    total, count = 0.0, 0
    for i in range(0, len(y), batch_size):
        s, c, _ = nll_sum(logits_fn(ctx[i : i + batch_size]), y[i : i + batch_size])
        total, count = total + s, count + c
    return summary(total, count, char_level=char_level)


def evaluate_streams(step_fn, ids: np.ndarray, block_size: int, batch_size: int, char_level=False) -> dict:
    """A recurrent model: step_fn(x (B, t), state) -> (logits (B, t, V), state), carried along B streams.

    The streams are read T tokens at a time with the state carried over, so
    each prediction sees everything before it in its stream (``eval_streams``).
    """
    X, Y, tail_x, tail_y = eval_streams(ids, batch_size)
    total, count, state = 0.0, 0, None
    for t in range(0, X.shape[1], block_size):
        logits, state = step_fn(X[:, t : t + block_size], state)
        s, c, _ = nll_sum(logits, Y[:, t : t + block_size])
        total, count = total + s, count + c
    if tail_x.size:  # the tail continues the last stream
        last = None if state is None else _take_row(state, -1)
        for t in range(0, tail_x.shape[1], block_size):
            logits, last = step_fn(tail_x[:, t : t + block_size], last)
            s, c, _ = nll_sum(logits, tail_y[:, t : t + block_size])
            total, count = total + s, count + c
    return summary(total, count, char_level=char_level)


def _take_row(state, b: int):
    """Row b of every array in a (nested) recurrent state, keeping the batch axis."""
    if isinstance(state, np.ndarray):
        return state[b : b + 1] if b != -1 else state[-1:]
    if isinstance(state, dict):
        return {k: _take_row(v, b) for k, v in state.items()}
    return type(state)(_take_row(v, b) for v in state)


def evaluate_masked(logits_fn, mask_fn, ids: np.ndarray, block_size: int, batch_size: int, seed: int = 0) -> dict:
    """The masked LM: masked-token loss, perplexity and accuracy over every window of the split.

    mask_fn(x, rng) -> (inputs, targets, ignore_index) chooses the positions
    to predict; its generator is seeded with ``seed`` so the score is repeatable.
    """
    rng = np.random.default_rng(seed)
    total, count, correct = 0.0, 0, 0
    for x, _ in eval_windows(ids, block_size, batch_size):
        inputs, targets, ignore = mask_fn(x, rng)
        s, c, k = nll_sum(logits_fn(inputs), targets, ignore)
        total, count, correct = total + s, count + c, correct + k
    return summary(total, count, correct)

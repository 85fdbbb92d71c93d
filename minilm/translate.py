"""Decoding a translation and scoring it (§6.1 机器翻译, machine translation).

A decoder writes the target one token at a time, each token chosen from
p(y_t | y_<t, x).  Two ways to choose:

    greedy (贪心解码)        y_t = argmax_j p(j | y_<t, x)
    beam search (束搜索)     keep the K prefixes with the largest log p(y_<=t | x) = sum_s log p(y_s | y_<s, x);
                             a prefix that has written <eos> is finished and keeps its score

Greedy can be led astray: a first token with p = 0.6 whose continuations are
all unsure loses to one with p = 0.4 that is surely followed by <eos>.  Beam
search keeps both and compares whole translations.  With K = 1 it is greedy.
Among the K finished translations the one with the largest
log p / lp(|y|) wins, with the length penalty lp(n) = ((5 + n) / 6)^alpha of
GNMT (Wu et al. 2016); alpha = 0 (the default) compares plain log p.

A model enters as ``next_logits(prefix (N, t), rows (N,)) -> (N, V)``: the
logits of the next token after each prefix, where ``rows[i]`` says which
source sentence prefix i translates (beam search asks about K prefixes of
each sentence at once).  minilm.seq2seq.next_logits_fn builds it.

Scores on a set of (hypothesis, reference) strings:

    exact match          share of hypotheses equal to their reference
    edit distance        Levenshtein distance in characters (insertions,
                         deletions, substitutions), averaged over sentences
    character error rate sum of edit distances / sum of reference lengths
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from minilm.softmax import log_softmax_forward


def greedy_decode(next_logits: Callable, n: int, bos: int, eos: int, max_len: int) -> np.ndarray:
    """Translate n sentences by taking the argmax token each step.

    Returns ids (n, L), L <= max_len, without <bos>; after a row's <eos> come
    further <eos> ids (read up to the first one).
    """
    rows = np.arange(n)  # (n,)
    ys = np.full((n, 1), bos, dtype=np.int64)  # (n, 1), every prefix starts with <bos>
    done = np.zeros(n, dtype=bool)  # (n,)
    for _ in range(max_len):
        nxt = next_logits(ys, rows).argmax(axis=-1)  # (n, V) -> (n,)
        nxt = np.where(done, eos, nxt)  # (n,), a finished row keeps writing <eos>
        ys = np.concatenate([ys, nxt[:, None]], axis=1)  # (n, t + 1)
        done |= nxt == eos
        if done.all():
            break
    return ys[:, 1:]


def beam_search(next_logits: Callable, n: int, bos: int, eos: int, max_len: int, beam_size: int = 4,
                alpha: float = 0.0) -> np.ndarray:
    """Translate n sentences keeping the ``beam_size`` = K most probable prefixes of each.

    All n K prefixes go through the model in one batch per step.  Returns ids
    (n, L) as greedy_decode (the best finished translation of each sentence,
    padded with <eos>).
    """
    if beam_size < 1:
        raise ValueError(f"beam_size must be >= 1, got {beam_size}")
    K = beam_size
    rows = np.repeat(np.arange(n), K)  # (n K,), the sentence of each prefix
    ys = np.full((n, K, 1), bos, dtype=np.int64)  # (n, K, 1)
    score = np.full((n, K), -np.inf)  # (n, K), log p of each prefix; float64
    score[:, 0] = 0.0  # one live prefix to start: the K copies of <bos> must not all be kept
    done = np.zeros((n, K), dtype=bool)  # (n, K)
    for _ in range(max_len):
        logits = next_logits(ys.reshape(n * K, -1), rows)  # (n K, V)
        logp, _ = log_softmax_forward(logits.astype(np.float64))  # (n K, V)
        V = logp.shape[-1]
        logp = logp.reshape(n, K, V)  # (n, K, V)
        frozen = np.full(V, -np.inf)  # a finished prefix may only "write" <eos> again, at no cost
        frozen[eos] = 0.0
        logp = np.where(done[:, :, None], frozen, logp)  # (n, K, V)
        cand = (score[:, :, None] + logp).reshape(n, K * V)  # (n, K V), log p of every one-token extension
        top = np.argsort(-cand, axis=1, kind="stable")[:, :K]  # (n, K), the K best extensions
        beam, tok = top // V, top % V  # (n, K) each: which prefix, which token
        score = np.take_along_axis(cand, top, axis=1)  # (n, K)
        ys = np.concatenate([np.take_along_axis(ys, beam[:, :, None], axis=1), tok[:, :, None]], axis=2)  # (n, K, t+1)
        done = np.take_along_axis(done, beam, axis=1) | (tok == eos)  # (n, K)
        if done[np.isfinite(score)].all():
            break
    length = (ys[:, :, 1:] != eos).sum(axis=2) + 1  # (n, K), tokens up to and including <eos>
    ranked = np.where(done, score / ((5 + length) / 6) ** alpha, -np.inf)  # (n, K), only finished ones
    ranked = np.where(done.any(axis=1, keepdims=True), ranked, score)  # no prefix finished: take the best one
    best = ranked.argmax(axis=1)  # (n,)
    return ys[np.arange(n), best, 1:]


def strip_eos(ids: Sequence[int], eos: int) -> list[int]:
    """The ids before the first <eos>."""
    out = []
    for i in ids:
        if int(i) == eos:
            break
        out.append(int(i))
    return out


def edit_distance(a: Sequence, b: Sequence) -> int:
    """Levenshtein distance: the fewest insertions, deletions and substitutions that turn a into b.

        D[i][j] = min(D[i-1][j] + 1, D[i][j-1] + 1, D[i-1][j-1] + [a_i != b_j]),  D[i][0] = i,  D[0][j] = j
    """
    if a == b:
        return 0
    prev = list(range(len(b) + 1))  # D[0][.]
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def translation_scores(hypotheses: Sequence[str], references: Sequence[str]) -> dict:
    """exact_match, edit_distance (mean characters per sentence) and char_error_rate of hypotheses."""
    if len(hypotheses) != len(references) or not references:
        raise ValueError(f"need as many hypotheses as references (at least one), got {len(hypotheses)} and "
                         f"{len(references)}")
    dist = [edit_distance(h, r) for h, r in zip(hypotheses, references, strict=True)]
    return {
        "exact_match": sum(h == r for h, r in zip(hypotheses, references, strict=True)) / len(references),
        "edit_distance": sum(dist) / len(dist),
        "char_error_rate": sum(dist) / max(1, sum(len(r) for r in references)),
        "sentences": len(references),
    }

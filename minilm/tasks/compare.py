"""Is "17>9" true?  A generated sentence-classification task (§7: GLUE 通用语言理解评估, General Language
Understanding Evaluation, whose tasks classify sentences or sentence pairs).

A statement compares two different numbers a, b in 0 .. max_number:

    [CLS] 1 7 > 9        true       (numerically 17 > 9, though the character '1' < '9')
    [CLS] 4 0 < 3 9      false

one token per character.  The label needs context: neither number alone, nor
its first digit, nor its length decides it; the classifier must compare the
two numbers across the relation sign, digit by digit when they have the same
length and by length when they do not.

Two kinds of data, from one split of the unordered pairs {a, b} (a pair and
its reverse fall on the same side, and held-out pairs appear in neither):

* unlabelled text for pre-training (预训练): true statements only, "a<b" or
  "a>b", as a corpus of correct sentences would hold them.  The masked LM
  learns from it by filling in hidden characters (§3.2);
* labelled statements for fine-tuning (微调) and testing: the sign drawn at
  random, half of the statements true, label 1 = true, 0 = false.
"""

from __future__ import annotations

import numpy as np

from minilm.tasks.vocab import Vocab, pad_batch

SPECIALS = ["[PAD]", "[CLS]"]  # [MASK] is added by minilm.mlm.mlm_config, after these tokens
CHARS = list("0123456789<>")
VOCAB = Vocab(SPECIALS + CHARS)
CLS = VOCAB.ids["[CLS]"]


def statement(a: int, b: int, sign: str) -> list[str]:
    """[CLS] digits of a, the sign, digits of b."""
    if sign not in "<>" or len(sign) != 1:
        raise ValueError(f"sign must be '<' or '>', got {sign!r}")
    return ["[CLS]", *str(int(a)), sign, *str(int(b))]


def is_true(a: int, b: int, sign: str) -> bool:
    return a < b if sign == "<" else a > b


def split_pairs(max_number: int = 999, held_out: float = 0.2, seed: int = 0):
    """The unordered pairs a < b of 0 .. max_number, split once by a seeded permutation.

    Returns (train, held) int arrays of shape (M, 2), each row (a, b) with a < b.
    """
    if max_number < 2 or not 0 < held_out < 1:
        raise ValueError(f"need max_number >= 2 and held_out in (0, 1), got {max_number} and {held_out}")
    a, b = np.triu_indices(max_number + 1, k=1)  # every pair a < b
    pairs = np.stack([a, b], axis=1)  # (M, 2)
    perm = np.random.default_rng(seed).permutation(len(pairs))
    k = max(1, round(held_out * len(pairs)))
    return pairs[np.sort(perm[k:])], pairs[np.sort(perm[:k])]


def _orient(pairs, rng):
    """Each pair (a, b) with a < b, swapped to (b, a) with probability 1/2."""
    swap = rng.random(len(pairs)) < 0.5  # (M,)
    return np.where(swap[:, None], pairs[:, ::-1], pairs)  # (M, 2)


def encode(statements) -> tuple[np.ndarray, np.ndarray]:
    """Token lists -> (ids (B, T) right-padded with [PAD] = 0, pad_mask (B, T), True = real token)."""
    ids = pad_batch([VOCAB.encode(s) for s in statements])  # (B, T)
    return ids, ids != 0


def true_statements(pairs, rng: np.random.Generator):
    """Pre-training text: for each pair, a true statement in a random orientation.  Returns (ids, pad_mask)."""
    oriented = _orient(np.asarray(pairs), rng)
    return encode([statement(a, b, "<" if a < b else ">") for a, b in oriented])


def labelled_statements(pairs, rng: np.random.Generator):
    """Fine-tuning and test data: a random orientation and a random sign per pair.

    Returns (ids (B, T), pad_mask (B, T), labels (B,) with 1 = true, 0 = false).
    """
    oriented = _orient(np.asarray(pairs), rng)
    signs = np.where(rng.random(len(oriented)) < 0.5, "<", ">")  # (B,)
    ids, pad = encode([statement(a, b, s) for (a, b), s in zip(oriented, signs, strict=True)])
    labels = np.array([is_true(a, b, s) for (a, b), s in zip(oriented, signs, strict=True)], dtype=np.int64)
    return ids, pad, labels

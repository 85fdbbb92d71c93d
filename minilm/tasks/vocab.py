"""A fixed token list and the two maps token <-> id, for the generated tasks.

Id 0 is always the padding token, so a batch padded with zeros is padded with
it, and every model can tell real tokens from padding by ``ids != 0``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

PAD = 0  # the id of the padding token in every vocabulary of minilm.tasks


class Vocab:
    """``tokens[i]`` is the token with id i; ``tokens[0]`` is the padding token."""

    def __init__(self, tokens: Sequence[str]):
        tokens = list(tokens)
        if len(set(tokens)) != len(tokens):
            dup = sorted({t for t in tokens if tokens.count(t) > 1})
            raise ValueError(f"vocabulary has repeated tokens {dup}")
        self.tokens = tokens
        self.ids = {t: i for i, t in enumerate(tokens)}

    def __len__(self) -> int:
        return len(self.tokens)

    def __eq__(self, other) -> bool:
        return isinstance(other, Vocab) and self.tokens == other.tokens

    def encode(self, tokens: Iterable[str]) -> list[int]:
        """Token strings -> ids; an unknown token is a ValueError that names it."""
        out = []
        for t in tokens:
            if t not in self.ids:
                raise ValueError(f"unknown token {t!r} (not in the vocabulary of {len(self)} tokens)")
            out.append(self.ids[t])
        return out

    def decode(self, ids: Iterable[int]) -> list[str]:
        """Ids -> token strings; an id outside [0, len) is a ValueError."""
        out = []
        for i in ids:
            if not 0 <= int(i) < len(self):
                raise ValueError(f"token id {int(i)} is outside [0, {len(self)})")
            out.append(self.tokens[int(i)])
        return out


def pad_batch(rows: Sequence[Sequence[int]], length: int | None = None) -> np.ndarray:
    """Stack id lists into a (B, T) int64 array, padded on the right with PAD.

    T is the longest row, or ``length`` if given (a row longer than it is a ValueError).
    """
    T = max((len(r) for r in rows), default=0) if length is None else length
    out = np.full((len(rows), T), PAD, dtype=np.int64)  # (B, T)
    for b, r in enumerate(rows):
        if len(r) > T:
            raise ValueError(f"row {b} has {len(r)} tokens, more than the padded length {T}")
        out[b, : len(r)] = r
    return out

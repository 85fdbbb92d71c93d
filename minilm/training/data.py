"""Text to token ids and back, the train/validation split, and batches.

Tokenizers (each saves to and loads from a JSON-ready dict, so a checkpoint
carries its own vocabulary):

    CharTokenizer   one id per Unicode character: any UTF-8 text, Chinese included
    WordTokenizer   words, punctuation and newlines; the most frequent
                    ``max_vocab`` entries, everything else <unk>.  CJK
                    characters count as words of their own (Chinese has no spaces).
    BPETokenizer    byte-level byte-pair encoding, GPT-2's (minilm/bpe.py): UTF-8
                    bytes joined by learned merges; any text, exactly restored.

Either may carry special tokens such as "[MASK]" (the masked LM's, §3.2);
they come after the ordinary entries and are recognised inside text.

Batches (token ids are int64 arrays):

    random_windows    x (B, T), y (B, T): random contiguous windows, y = x shifted by one
    eval_windows      the whole split as consecutive windows: every target exactly once
    ngram_contexts    ctx (M, N), y (M,): the N previous tokens of each position (§4.2)
    stream_windows    B contiguous streams read T tokens at a time, for a recurrent
                      model that carries its state from one batch to the next (§5.2)
"""

from __future__ import annotations

import re
from collections import Counter

import numpy as np

from minilm.bpe import BPETokenizer

UNK = "<unk>"


def _special_splitter(specials) -> re.Pattern | None:
    return re.compile("(" + "|".join(re.escape(s) for s in specials) + ")") if specials else None


class CharTokenizer:
    """One id per character; ``specials`` (e.g. "[MASK]") get the ids after the characters."""

    kind = "char"

    def __init__(self, chars, specials=()):
        self.itos = list(chars) + list(specials)
        self.specials = list(specials)
        self.stoi = {s: i for i, s in enumerate(self.itos)}
        if len(self.stoi) != len(self.itos):
            raise ValueError("tokenizer entries must be distinct")
        self._split = _special_splitter(self.specials)

    @classmethod
    def build(cls, text: str, specials=()) -> CharTokenizer:
        """The sorted set of characters of ``text``."""
        if not text:
            raise ValueError("cannot build a vocabulary from empty text")
        return cls(sorted(set(text)), specials)

    @property
    def vocab_size(self) -> int:
        return len(self.itos)

    def pieces(self, text: str) -> list[str]:
        parts = self._split.split(text) if self._split else [text]
        return [p for part in parts for p in ([part] if part in self.specials else part)]

    def encode(self, text: str) -> np.ndarray:
        if not (self._split and self._split.search(text)):  # the fast path: one lookup over all code points
            return self._encode_chars(text)
        ids = []
        for p in self.pieces(text):
            if p not in self.stoi:
                raise ValueError(f"character {p!r} (U+{ord(p[0]):04X}) is not in the vocabulary of "
                                 f"{self.vocab_size} tokens")
            ids.append(self.stoi[p])
        return np.array(ids, dtype=np.int64)

    def _encode_chars(self, text: str) -> np.ndarray:
        codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)  # (L,) Unicode code points
        chars = self.itos[: len(self.itos) - len(self.specials)]
        known = np.array([ord(c) for c in chars], dtype=np.uint32)  # (V0,)
        order = np.argsort(known)
        pos = np.minimum(np.searchsorted(known[order], codes), len(known) - 1)  # (L,)
        ok = known[order][pos] == codes  # (L,)
        if not ok.all():
            bad = chr(int(codes[np.argmin(ok)]))
            raise ValueError(f"character {bad!r} (U+{ord(bad):04X}) is not in the vocabulary of "
                             f"{self.vocab_size} tokens")
        return order[pos].astype(np.int64)

    def decode(self, ids) -> str:
        return "".join(self.itos[int(i)] for i in np.asarray(ids).reshape(-1))

    def to_dict(self) -> dict:
        return {"kind": self.kind, "itos": self.itos[: len(self.itos) - len(self.specials)],
                "specials": self.specials}


WORD_PATTERN = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]|[^\W\u3400-\u9fff\uf900-\ufaff]+|[^\w\s]|\n")


class WordTokenizer:
    """Words, single punctuation marks and newlines; ids beyond the vocabulary map to <unk>.

    Decoding joins words with single spaces, so it restores the tokens, not the exact spacing.
    """

    kind = "word"

    def __init__(self, words, specials=()):
        words = list(words)
        if UNK not in words:
            words = [UNK] + words
        self.itos = words + list(specials)
        self.specials = list(specials)
        self.stoi = {s: i for i, s in enumerate(self.itos)}
        if len(self.stoi) != len(self.itos):
            raise ValueError("tokenizer entries must be distinct")
        self.unk = self.stoi[UNK]
        self._split = _special_splitter(self.specials)

    @classmethod
    def build(cls, text: str, max_vocab: int = 10000, specials=()) -> WordTokenizer:
        """<unk> plus the ``max_vocab - 1 - len(specials)`` most frequent words (ties: first seen first)."""
        n = max_vocab - 1 - len(specials)
        if n < 1:
            raise ValueError(f"max_vocab must leave room for at least one word, got {max_vocab}")
        counts = Counter(WORD_PATTERN.findall(text))
        if not counts:
            raise ValueError("cannot build a vocabulary from text without words")
        return cls([w for w, _ in counts.most_common(n) if w != UNK], specials)

    @property
    def vocab_size(self) -> int:
        return len(self.itos)

    def pieces(self, text: str) -> list[str]:
        parts = self._split.split(text) if self._split else [text]
        return [p for part in parts for p in ([part] if part in self.specials else WORD_PATTERN.findall(part))]

    def encode(self, text: str) -> np.ndarray:
        return np.array([self.stoi.get(p, self.unk) for p in self.pieces(text)], dtype=np.int64)

    def decode(self, ids) -> str:
        out = ""
        for i in np.asarray(ids).reshape(-1):
            w = self.itos[int(i)]
            out += w if (w == "\n" or not out or out.endswith("\n")) else " " + w
        return out

    def to_dict(self) -> dict:
        return {"kind": self.kind, "itos": self.itos[: len(self.itos) - len(self.specials)],
                "specials": self.specials}


def tokenizer_from_dict(d: dict):
    """Rebuild a tokenizer saved by ``to_dict`` (as stored in a checkpoint)."""
    if isinstance(d, dict) and d.get("kind") == BPETokenizer.kind:
        return BPETokenizer.from_dict(d)
    kinds = {"char": CharTokenizer, "word": WordTokenizer}
    if not isinstance(d, dict) or d.get("kind") not in kinds or not isinstance(d.get("itos"), list):
        raise ValueError(f"not a saved tokenizer: {str(d)[:80]}")
    return kinds[d["kind"]](d["itos"], d.get("specials", []))


def split(ids: np.ndarray, val_fraction: float = 0.1):
    """The first (1 - val_fraction) of the tokens for training, the last val_fraction for validation."""
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    cut = int(len(ids) * (1 - val_fraction))
    return ids[:cut], ids[cut:]


def random_windows(ids: np.ndarray, batch_size: int, block_size: int, rng: np.random.Generator):
    """B random windows of T + 1 consecutive tokens: x = window[:-1], y = window[1:].

    Returns x (B, T), y (B, T).
    """
    if len(ids) < block_size + 1:
        raise ValueError(f"need at least block_size + 1 = {block_size + 1} tokens, got {len(ids)}")
    starts = rng.integers(0, len(ids) - block_size, size=batch_size)  # (B,)
    rows = starts[:, None] + np.arange(block_size + 1)  # (B, T + 1)
    w = ids[rows]  # (B, T + 1)
    return w[:, :-1], w[:, 1:]


def eval_windows(ids: np.ndarray, block_size: int, batch_size: int):
    """Yield (x (b, t), y (b, t)) covering ``ids`` in consecutive windows.

    Window j predicts tokens j T + 1 ... (j + 1) T, so every token after the
    first is a target exactly once; the last window may be shorter.
    """
    n = (len(ids) - 1) // block_size  # full windows
    full = np.arange(n)[:, None] * block_size + np.arange(block_size + 1)  # (n, T + 1)
    for i in range(0, n, batch_size):
        w = ids[full[i : i + batch_size]]  # (b, T + 1)
        yield w[:, :-1], w[:, 1:]
    rest = ids[n * block_size :]
    if len(rest) > 1:
        yield rest[None, :-1], rest[None, 1:]


def ngram_contexts(ids: np.ndarray, n: int, positions: np.ndarray | None = None):
    """The N = n tokens before each target position (default: every position >= n).

    Returns ctx (M, N), y (M,).
    """
    if len(ids) <= n:
        raise ValueError(f"need more than context = {n} tokens, got {len(ids)}")
    if positions is None:
        positions = np.arange(n, len(ids))  # (M,)
    ctx = ids[positions[:, None] - n + np.arange(n)]  # (M, N)
    return ctx, ids[positions]


def random_contexts(ids: np.ndarray, n: int, batch_size: int, rng: np.random.Generator):
    """B random (context, target) pairs: ctx (B, N), y (B,)."""
    if len(ids) <= n:
        raise ValueError(f"need more than context = {n} tokens, got {len(ids)}")
    return ngram_contexts(ids, n, rng.integers(n, len(ids), size=batch_size))


def stream_windows(ids: np.ndarray, batch_size: int, block_size: int, step: int):
    """Window ``step`` of B contiguous streams (truncated backpropagation through time).

    The tokens are cut into B streams of equal length; batch s holds tokens
    s T ... (s + 1) T of every stream, so row b of batch s + 1 continues row b
    of batch s and a recurrent model may carry its state across.  After the
    last full window the streams start again.  Returns x (B, T), y (B, T) and
    ``fresh``: True when this batch starts the streams (the state must be reset).
    """
    L = len(ids) // batch_size  # stream length
    per_pass = (L - 1) // block_size
    if per_pass < 1:
        raise ValueError(f"{len(ids)} tokens are too few for {batch_size} streams of block_size + 1 = "
                         f"{block_size + 1} tokens")
    s = step % per_pass
    streams = ids[: batch_size * L].reshape(batch_size, L)  # (B, L)
    w = streams[:, s * block_size : (s + 1) * block_size + 1]  # (B, T + 1)
    return w[:, :-1], w[:, 1:], s == 0


def eval_streams(ids: np.ndarray, batch_size: int):
    """The whole split as B contiguous streams plus a tail, for evaluating a recurrent model.

    Stream b reads inputs ids[b L : (b + 1) L] and predicts the next token of
    each, L = (len - 1) // B.  The tail continues the last stream up to the end.
    Together every token after the first is predicted exactly once.
    Returns X (B, L), Y (B, L), tail_x (1, r), tail_y (1, r).
    """
    if len(ids) < 2:
        raise ValueError(f"need at least 2 tokens to evaluate, got {len(ids)}")
    B = min(batch_size, len(ids) - 1)
    L = (len(ids) - 1) // B
    X = ids[: B * L].reshape(B, L)  # (B, L)
    Y = ids[1 : B * L + 1].reshape(B, L)  # (B, L)
    return X, Y, ids[None, B * L : -1], ids[None, B * L + 1 :]

"""Byte-level byte-pair encoding (BPE), the tokenizer of GPT-2 (§2.2, §7).

Text becomes its UTF-8 bytes, so the 256 byte values are the base vocabulary
and every string (English, Chinese, emoji) encodes without an unknown token.
Training then learns merges: the most frequent adjacent pair of tokens
becomes one new token, again and again, until the vocabulary has ``vocab_size``
entries.  Encoding replays the merges in the order they were learned.

Pre-tokenisation: the text is first cut into words with GPT-2's pattern
(contractions, a space plus letters, a space plus digits, a space plus other
symbols, runs of white space).  Merges never cross a word boundary, so
training only needs each distinct word once, with its count.

Training keeps the pair counts up to date instead of recounting the corpus
for every merge:

    count(a, b)  = sum over words w of  n_w * #{i : w_i = a, w_{i+1} = b}
    where(a, b)  = the words that may hold the pair
    heap         = (-count, pair) entries, each an upper bound on its pair's
                   count: a count that falls leaves its entry stale, a count
                   that rises gets a new entry.  So the top entry whose count
                   is still current is the most frequent pair; a stale one is
                   pushed back with the current count.

Merging (a, b) -> c rewrites only the words in where(a, b) and adds to the
counts the difference between each rewritten word's pairs and its old pairs.
A merge costs time in proportion to the words that hold the pair, not to
the corpus (benchmarks/bpe.py measures both ways).

Files: ``save_hf`` / ``load_hf`` read and write GPT-2's ``vocab.json`` (token
string -> id) and ``merges.txt`` (one merge "left right" per line, in order).
Their token strings spell bytes through GPT-2's byte-to-unicode table: the
printable bytes stand for themselves, the others (space, control bytes, ...)
for the code points 256, 257, ... (space is "Ġ").
"""

from __future__ import annotations

import heapq
import json
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import regex

# GPT-2's pre-tokenisation pattern (its encoder.py; the same in Hugging Face's ByteLevel pre-tokenizer)
GPT2_PATTERN = regex.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's table from the 256 byte values to printable characters.

    The bytes that print as themselves in Latin-1 ('!'..'~', '¡'..'¬', '®'..'ÿ')
    keep their own character; the other 68 get chr(256), chr(257), ... in order.
    """
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


BYTE_TO_CHAR = bytes_to_unicode()
CHAR_TO_BYTE = {c: b for b, c in BYTE_TO_CHAR.items()}
# GPT-2's ids of the 256 bytes: the order of the characters that spell them ("!" is 0, "Ġ", the space, 220)
GPT2_BYTE_ORDER = sorted(range(256), key=lambda b: ord(BYTE_TO_CHAR[b]))


def _spell(token: bytes) -> str:
    """A token's bytes as the string of GPT-2's files ("Ġthe" for b" the")."""
    return "".join(BYTE_TO_CHAR[b] for b in token)


def _unspell(s: str, where: str) -> bytes:
    try:
        return bytes(CHAR_TO_BYTE[c] for c in s)
    except KeyError as e:
        raise ValueError(f"{where}: {s!r} is not a byte-level token (character {e.args[0]!r})") from None


def _merge_word(word: tuple, a: int, b: int, c: int) -> tuple:
    """Replace every non-overlapping (a, b), left to right, by c."""
    out, i, n = [], 0, len(word)
    while i < n:
        if i + 1 < n and word[i] == a and word[i + 1] == b:
            out.append(c)
            i += 2
        else:
            out.append(word[i])
            i += 1
    return tuple(out)


class BPETokenizer:
    """Byte-level BPE.

    vocab    list: id -> the token's bytes (the 256 single bytes among them), or a
             str for a special token such as "<|endoftext|>" or "[MASK]", which
             has an id of its own and is recognised whole inside text
    merges   list of (a, b) id pairs, in the order learned; merge r joins a and b
             into the token whose bytes are vocab[a] + vocab[b]
    """

    kind = "bpe"

    def __init__(self, vocab: list[bytes | str], merges: list[tuple[int, int]]):
        self.vocab = [t if isinstance(t, str) else bytes(t) for t in vocab]
        self.merges = [(int(a), int(b)) for a, b in merges]
        self.special_id = {t: i for i, t in enumerate(self.vocab) if isinstance(t, str)}
        self.specials = list(self.special_id)
        self.id_of = {t: i for i, t in enumerate(self.vocab) if isinstance(t, bytes)}
        if len(self.id_of) + len(self.special_id) != len(self.vocab):
            raise ValueError("BPE vocabulary entries must be distinct")
        missing = [b for b in range(256) if bytes([b]) not in self.id_of]
        if missing:
            raise ValueError(f"BPE vocabulary lacks {len(missing)} of the 256 bytes (first: {missing[0]:#04x})")
        self.byte_id = np.array([self.id_of[bytes([b])] for b in range(256)], dtype=np.int64)  # (256,)
        self.rank = {}  # (a, b) -> (rank, merged id)
        for r, (a, b) in enumerate(self.merges):
            if not (0 <= a < len(self.vocab) and 0 <= b < len(self.vocab)
                    and isinstance(self.vocab[a], bytes) and isinstance(self.vocab[b], bytes)):
                raise ValueError(f"BPE merge {r} refers to a token outside the byte-level vocabulary")
            c = self.id_of.get(self.vocab[a] + self.vocab[b])
            if c is None:
                raise ValueError(f"BPE merge {r} makes {self.vocab[a] + self.vocab[b]!r}, which is not in the "
                                 f"vocabulary")
            self.rank.setdefault((a, b), (r, c))
        self._split = (regex.compile("(" + "|".join(regex.escape(s) for s in self.specials) + ")")
                       if self.specials else None)
        self._cache: dict[str, list[int]] = {}
        self._bytes = [t.encode("utf-8") if isinstance(t, str) else t for t in self.vocab]  # id -> bytes
        # strings that are one token each: "\n", " ", "[MASK]", ... (the loop and the sampler look some up)
        self.stoi = {}
        for t, i in self.id_of.items():
            try:
                self.stoi.setdefault(t.decode("utf-8"), i)
            except UnicodeDecodeError:
                pass
        self.stoi.update(self.special_id)
        # characters each token starts: its bytes that are not UTF-8 continuation bytes (10xxxxxx)
        self._starts = np.array([sum((b & 0xC0) != 0x80 for b in t) for t in self._bytes], dtype=np.int64)  # (V,)

    # ---------------------------------------------------------------- training
    @classmethod
    def train(cls, text: str, vocab_size: int, specials=()) -> BPETokenizer:
        """Learn merges on ``text`` until there are ``vocab_size`` tokens (256 bytes + merges + specials).

        The bytes take GPT-2's ids (``GPT2_BYTE_ORDER``), merge r makes id 256 + r
        (unless its bytes already have an id).  Ties between equally frequent
        pairs go to the smaller (a, b), as in Hugging Face's trainer, so that both
        learn the same merges.  Stops early when no pair occurs any more.
        """
        specials = list(specials)
        n_merges = vocab_size - 256 - len(specials)
        if n_merges < 0:
            raise ValueError(f"a byte-level BPE needs vocab_size >= {256 + len(specials)} (256 bytes"
                             f"{' + specials' if specials else ''}), got {vocab_size}")
        if not text:
            raise ValueError("cannot train a BPE tokenizer on empty text")
        vocab = [bytes([b]) for b in GPT2_BYTE_ORDER]
        id_of = {t: i for i, t in enumerate(vocab)}
        byte_id = [id_of[bytes([b])] for b in range(256)]
        counts = Counter()
        for part in (regex.split("|".join(regex.escape(t) for t in specials), text) if specials else [text]):
            counts.update(GPT2_PATTERN.findall(part))  # special tokens in the text are not learned from
        words = [tuple(byte_id[b] for b in w.encode("utf-8")) for w in counts]  # distinct words as token ids
        n_w = list(counts.values())  # how often each occurs

        pair_count: dict[tuple[int, int], int] = defaultdict(int)
        where: dict[tuple[int, int], set[int]] = defaultdict(set)
        for k, w in enumerate(words):
            for p in zip(w[:-1], w[1:], strict=True):
                pair_count[p] += n_w[k]
                where[p].add(k)
        heap = [(-c, p) for p, c in pair_count.items()]
        heapq.heapify(heap)

        merges = []
        while len(merges) < n_merges and heap:
            neg, p = heapq.heappop(heap)
            cur = pair_count.get(p, 0)
            if cur <= 0:
                continue
            if -neg != cur:  # stale: the pair has fallen since this entry was pushed
                heapq.heappush(heap, (-cur, p))
                continue
            a, b = p
            new = vocab[a] + vocab[b]
            c = id_of.get(new)
            if c is None:  # the same bytes may already exist, made by other merges
                c = id_of[new] = len(vocab)
                vocab.append(new)
            merges.append(p)
            changed: dict[tuple[int, int], int] = defaultdict(int)  # pair -> change of its count
            for k in where.pop(p):
                w = words[k]
                nw = _merge_word(w, a, b, c)
                if len(nw) == len(w):  # a stale entry: the word no longer holds the pair
                    continue
                words[k] = nw
                n = n_w[k]
                for q in zip(w[:-1], w[1:], strict=True):  # the old word's pairs leave the counts ...
                    changed[q] -= n
                for q in zip(nw[:-1], nw[1:], strict=True):  # ... and the new word's come in
                    changed[q] += n
                    where[q].add(k)
            for q, d in changed.items():
                if d == 0:
                    continue
                left = pair_count[q] = pair_count[q] + d
                if left <= 0:
                    del pair_count[q]
                elif d > 0:  # a count that rose needs an entry of its own on the heap
                    heapq.heappush(heap, (-left, q))
            pair_count.pop(p, None)
        if len(set(specials)) != len(specials):
            raise ValueError("special tokens must be distinct")
        return cls(vocab + list(specials), merges)

    # ---------------------------------------------------------------- encoding
    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def _encode_word(self, word: str) -> list[int]:
        """One pre-tokenised word: its bytes, then the lowest-ranked merge present, until none applies."""
        ids = self._cache.get(word)
        if ids is not None:
            return ids
        ids = [int(i) for i in self.byte_id[np.frombuffer(word.encode("utf-8"), dtype=np.uint8)]]
        rank = self.rank
        while len(ids) > 1:
            best = min(zip(ids[:-1], ids[1:], strict=True), key=lambda p: rank.get(p, (1 << 62,))[0])
            if best not in rank:
                break
            ids = list(_merge_word(tuple(ids), best[0], best[1], rank[best][1]))
        if len(self._cache) < 1_000_000:
            self._cache[word] = ids
        return ids

    def encode(self, text: str) -> np.ndarray:
        """Token ids (L,) int64 of ``text``."""
        parts = self._split.split(text) if self._split else [text]
        ids: list[int] = []
        for part in parts:
            if part in self.special_id:
                ids.append(self.special_id[part])
                continue
            try:
                part.encode("utf-8")
            except UnicodeEncodeError as e:
                raise ValueError(f"text is not valid Unicode for UTF-8 ({e.reason} at character {e.start})") from None
            for w in GPT2_PATTERN.findall(part):
                ids.extend(self._encode_word(w))
        return np.array(ids, dtype=np.int64)

    def token_bytes(self, i: int) -> bytes:
        if not 0 <= int(i) < len(self.vocab):
            raise ValueError(f"token id {int(i)} is outside the vocabulary of {self.vocab_size} tokens")
        return self._bytes[int(i)]

    def n_chars(self, ids) -> int:
        """How many characters of text ``ids`` spell (a character split across tokens counts once)."""
        return int(self._starts[np.asarray(ids, dtype=np.int64).reshape(-1)].sum())

    def decode(self, ids) -> str:
        """The text of ``ids``; byte sequences that are not whole UTF-8 characters become U+FFFD."""
        return b"".join(self.token_bytes(i) for i in np.asarray(ids).reshape(-1)).decode("utf-8", errors="replace")

    # ---------------------------------------------------------------- saving
    def to_dict(self) -> dict:
        """JSON-ready: the tokens in id order (bytes in GPT-2's spelling), the special ids, merges as id pairs."""
        return {"kind": self.kind, "vocab": [t if isinstance(t, str) else _spell(t) for t in self.vocab],
                "special_ids": list(self.special_id.values()), "merges": [list(m) for m in self.merges]}

    @classmethod
    def from_dict(cls, d: dict) -> BPETokenizer:
        if not isinstance(d, dict) or d.get("kind") != cls.kind or not isinstance(d.get("vocab"), list) \
                or not isinstance(d.get("merges"), list):
            raise ValueError(f"not a saved BPE tokenizer: {str(d)[:80]}")
        special = set(d.get("special_ids", []))
        vocab = [s if i in special else _unspell(s, "saved BPE tokenizer") for i, s in enumerate(d["vocab"])]
        return cls(vocab, [tuple(m) for m in d["merges"]])

    def save_hf(self, directory) -> None:
        """Write GPT-2's ``vocab.json`` and ``merges.txt`` into ``directory`` (created if needed)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        vocab = {t if isinstance(t, str) else _spell(t): i for i, t in enumerate(self.vocab)}
        if len(vocab) != len(self.vocab):
            raise ValueError("a special token is spelled like an ordinary token; vocab.json cannot hold both")
        (directory / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
        lines = ["#version: 0.2"] + [f"{_spell(self.vocab[a])} {_spell(self.vocab[b])}" for a, b in self.merges]
        (directory / "merges.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")

    @classmethod
    def load_hf(cls, directory) -> BPETokenizer:
        """Read GPT-2's ``vocab.json`` + ``merges.txt``.

        Entries of vocab.json that are neither a byte nor made by a merge (such
        as GPT-2's "<|endoftext|>", or "<s>", "<pad>" before the bytes in a
        RoBERTa-style file) become special tokens, with their ids.
        """
        directory = Path(directory)
        for name in ("vocab.json", "merges.txt"):
            if not (directory / name).is_file():
                raise ValueError(f"{directory}: no {name}")
        try:
            table = json.loads((directory / "vocab.json").read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ValueError(f"{directory / 'vocab.json'}: not JSON ({e.msg}, line {e.lineno})") from None
        if not isinstance(table, dict) or sorted(table.values()) != list(range(len(table))):
            raise ValueError(f"{directory / 'vocab.json'}: ids must be 0 ... {len(table) - 1}, each once")
        by_id = sorted(table, key=table.get)
        merge_lines = [ln for ln in (directory / "merges.txt").read_text(encoding="utf-8").splitlines()
                       if ln and not ln.startswith("#version")]
        made = {ln.replace(" ", "", 1) for ln in merge_lines}  # the tokens the merges make

        def ordinary(t: str) -> bool:
            return all(c in CHAR_TO_BYTE for c in t) and (len(t) == 1 or t in made)

        vocab = [_unspell(t, str(directory / "vocab.json")) if ordinary(t) else t for t in by_id]
        merges = []
        for r, ln in enumerate(merge_lines):
            parts = ln.split(" ")
            if len(parts) != 2 or parts[0] not in table or parts[1] not in table:
                raise ValueError(f"{directory / 'merges.txt'}: merge {r + 1} {ln!r} is not two tokens of vocab.json")
            merges.append((table[parts[0]], table[parts[1]]))
        return cls(vocab, merges)

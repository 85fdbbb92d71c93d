"""Spoken digits: the speech-recognition task of §6.2 (语音识别), on the Free Spoken Digit Dataset.

The Free Spoken Digit Dataset (FSDD, version v1.0.10, by Zohar Jackson and
contributors, licence CC BY-SA 4.0) holds 3,000 recordings of the digits 0-9
by 6 speakers, 50 of each digit per speaker, 8 kHz mono 16-bit PCM, named
``{digit}_{speaker}_{index}.wav``.  The official split: indices 0-4 are the
test set (300 recordings), 5-49 the training set (2,700).

Getting it: ``fetch`` downloads the dataset repository's v1.0.10 tag archive
once into $MINILM_CACHE (or ~/.cache/minilm), unpacks its recordings into a
temporary folder there, checks them and only then renames the folder into
place.  The check rebuilds the file SHA256SUMS ("sha256  name" per recording,
sorted by name) from the unpacked recordings and compares its sha256 with
SHA256SUMS_DIGEST: the bytes of a tag archive may change from one download to
the next, the recordings do not.  ``open_recordings(DIR)`` uses a copy the
user already has (the same check).

Utterances: 1 to N digits (default 1-3), each a recording of one split, joined
with 50-200 ms of low-level Gaussian noise (standard deviation NOISE) between
them.  The transcript is the words, "three one four", spelled with the
characters of ALPHABET; the model writes <eos> (id 0) after the last one.
Everything is drawn from a seed, so the same seed gives the same utterances.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from minilm.audio import RATE, FeatureConfig, features, read_wav

VERSION = "v1.0.10"
URL = "https://github.com/Jakobovski/free-spoken-digit-dataset/archive/refs/tags/v1.0.10.zip"
SHA256SUMS_DIGEST = "1801eae019c063377d98f831d3f93574f259475df7332bb0e3d1b080fb5e6959"
N_RECORDINGS = 3000
SPEAKERS = ("george", "jackson", "lucas", "nicolas", "theo", "yweweler")
TEST_INDICES = range(0, 5)  # the official test split: indices 0-4 of each speaker and digit
WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
NAME = re.compile(r"^([0-9])_([a-z]+)_([0-9]+)\.wav$")

EOS = 0  # <eos>, also the speller's start symbol
ALPHABET = " abcdefghijklmnopqrstuvwxyz"  # ids 1 .. 27
VOCAB_SIZE = 1 + len(ALPHABET)  # V = 28
NOISE = 1e-3  # standard deviation of the noise between digits (about -60 dB of full scale)
GAP_MS = (50, 200)


# ---- the transcript alphabet ----

def encode(text: str) -> np.ndarray:
    """'one two' -> ids (len + 1,) ending in EOS; a ValueError for a character outside ALPHABET."""
    bad = sorted(set(text) - set(ALPHABET))
    if bad:
        raise ValueError(f"transcript {text!r} has characters outside a-z and space: {bad}")
    return np.array([ALPHABET.index(ch) + 1 for ch in text] + [EOS], dtype=np.int64)


def decode(ids) -> str:
    """ids -> text, up to the first EOS."""
    out = []
    for i in ids:
        if int(i) == EOS:
            break
        out.append(ALPHABET[int(i) - 1])
    return "".join(out)


def words_of(digits) -> str:
    return " ".join(WORDS[d] for d in digits)


# ---- the recordings: verified download or a local copy ----

def cache_dir() -> Path:
    return Path(os.environ.get("MINILM_CACHE") or Path.home() / ".cache" / "minilm")


def sha256sums(folder: Path) -> str:
    """The text of SHA256SUMS rebuilt from the recordings in ``folder``: 'sha256  name\\n', sorted by name."""
    names = sorted(p.name for p in folder.iterdir() if NAME.match(p.name))
    return "".join(f"{hashlib.sha256((folder / n).read_bytes()).hexdigest()}  {n}\n" for n in names)


def verify(folder: Path) -> None:
    """A ValueError unless the recordings in ``folder`` are exactly FSDD v1.0.10's."""
    if not folder.is_dir():
        raise ValueError(f"no such folder: {folder}")
    sums = sha256sums(folder)
    n = sums.count("\n")
    digest = hashlib.sha256(sums.encode()).hexdigest()
    if n != N_RECORDINGS or digest != SHA256SUMS_DIGEST:
        raise ValueError(f"{folder} does not hold the FSDD {VERSION} recordings: {n} recordings whose SHA256SUMS "
                         f"has sha256 {digest[:16]}..., expected {N_RECORDINGS} and {SHA256SUMS_DIGEST[:16]}...")


def _recordings_in(root: Path) -> Path:
    """``root`` itself, or ``root/recordings`` when that holds the files."""
    sub = root / "recordings"
    return sub if sub.is_dir() else root


def fetch(url: str | None = None, cache: str | Path | None = None, log=print) -> Path:
    """The folder of verified recordings in the cache, downloading and unpacking the archive first if needed.

    ``url`` replaces the public address (mirrors, tests); so does $MINILM_FSDD_URL.
    Nothing lands in the cache unless it passed the check.
    """
    folder = Path(cache) if cache is not None else cache_dir()
    target = folder / f"fsdd-{VERSION}"
    if target.exists():
        try:
            verify(target / "recordings")
            return target / "recordings"
        except ValueError:
            log(f"cached {target} is damaged (SHA256SUMS mismatch); downloading it again")
            shutil.rmtree(target)
    url = url or os.environ.get("MINILM_FSDD_URL") or URL
    folder.mkdir(parents=True, exist_ok=True)
    log(f"downloading FSDD {VERSION} from {url} to {target}")
    tmp = Path(tempfile.mkdtemp(dir=folder, prefix=".fsdd."))
    try:
        with urllib.request.urlopen(url, timeout=120) as resp:
            blob = resp.read()
        try:
            archive = zipfile.ZipFile(io.BytesIO(blob))
        except zipfile.BadZipFile:
            raise ValueError(f"download of FSDD from {url} is not a zip archive ({len(blob)} bytes)") from None
        rec = tmp / "recordings"
        rec.mkdir()
        for info in archive.infolist():
            parts = info.filename.split("/")
            if len(parts) >= 2 and parts[-2] == "recordings" and NAME.match(parts[-1]):
                (rec / parts[-1]).write_bytes(archive.read(info))
        try:
            verify(rec)
        except ValueError as e:
            raise ValueError(f"download of FSDD from {url} is corrupt ({e}); it was deleted") from None
        (tmp / "SHA256SUMS").write_text(sha256sums(rec))
        os.replace(tmp, target)  # atomic: the folder appears whole or not at all
    except OSError as e:  # network errors (urllib.error.URLError is an OSError) and disk errors
        raise ValueError(f"could not download FSDD from {url}: {e}") from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return target / "recordings"


def open_recordings(data_dir: str | Path | None = None, url: str | None = None, log=print) -> Path:
    """The verified recordings folder: ``data_dir`` (the folder or its parent holding recordings/), else
    the cached download (fetched if missing)."""
    if data_dir is None:
        return fetch(url=url, log=log)
    folder = _recordings_in(Path(data_dir))
    verify(folder)
    return folder


@dataclass(frozen=True)
class Recording:
    path: Path
    digit: int
    speaker: str
    index: int

    @property
    def split(self) -> str:
        return "test" if self.index in TEST_INDICES else "train"


def recordings(folder: Path, split: str | None = None, speakers=None, exclude_speakers=()) -> list[Recording]:
    """The recordings of ``folder`` sorted by name, optionally of one split ('train' or 'test') and speakers."""
    if split not in (None, "train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    out = []
    for p in sorted(Path(folder).iterdir()):
        m = NAME.match(p.name)
        if m:
            r = Recording(p, int(m.group(1)), m.group(2), int(m.group(3)))
            if (split is None or r.split == split) and (speakers is None or r.speaker in speakers) \
                    and r.speaker not in exclude_speakers:
                out.append(r)
    return out


# ---- utterances ----

@dataclass
class Utterance:
    audio: np.ndarray  # (N,) float32 samples at 8 kHz
    sources: tuple  # the Recording of each digit, in order
    starts: tuple = (0,)  # the sample where each recording begins

    @property
    def digits(self) -> tuple:
        return tuple(r.digit for r in self.sources)

    @property
    def speakers(self) -> tuple:
        return tuple(r.speaker for r in self.sources)

    @property
    def text(self) -> str:
        return words_of(self.digits)


def join(clips: list[np.ndarray], rng: np.random.Generator):
    """The clips with 50-200 ms of Gaussian noise (std NOISE) between each two:  -> (N,) float32, and the
    sample where each clip begins."""
    parts, starts, n = [clips[0]], [0], len(clips[0])
    for clip in clips[1:]:
        gap = int(rng.integers(GAP_MS[0] * RATE // 1000, GAP_MS[1] * RATE // 1000 + 1))
        parts += [(NOISE * rng.standard_normal(gap)).astype(np.float32), clip]
        starts.append(n + gap)
        n += gap + len(clip)
    return np.concatenate(parts), tuple(starts)


def utterances(recs: list[Recording], n: int, seed: int, min_digits: int = 1, max_digits: int = 3) -> list[Utterance]:
    """n utterances of min_digits .. max_digits recordings drawn (uniformly, with replacement) from ``recs``;
    the same seed gives the same utterances."""
    if not recs:
        raise ValueError("no recordings to build utterances from")
    if not 1 <= min_digits <= max_digits:
        raise ValueError(f"need 1 <= min_digits <= max_digits, got {min_digits} and {max_digits}")
    if len({r.split for r in recs}) > 1:
        raise ValueError("an utterance joins recordings of one split only")
    rng = np.random.default_rng(seed)
    audio = {}
    out = []
    for _ in range(n):
        k = int(rng.integers(min_digits, max_digits + 1))
        chosen = [recs[i] for i in rng.integers(0, len(recs), k)]
        clips = []
        for r in chosen:
            if r.path not in audio:
                audio[r.path] = read_wav(r.path)
            clips.append(audio[r.path])
        samples, starts = join(clips, rng)
        out.append(Utterance(samples, tuple(chosen), starts))
    return out


def single(recs: list[Recording]) -> list[Utterance]:
    """Each recording on its own, as a one-digit utterance (the single-digit test)."""
    return [Utterance(read_wav(r.path), (r,)) for r in recs]


@dataclass
class Dataset:
    """Features and transcripts ready for the model: feats[i] (T_i, M), targets[i] (len_i + 1,) ending in EOS."""

    feats: list
    targets: list
    texts: list
    speakers: list


def dataset(utts: list[Utterance], cfg: FeatureConfig | None = None) -> Dataset:
    return Dataset([features(u.audio, cfg) for u in utts], [encode(u.text) for u in utts], [u.text for u in utts],
                   [u.speakers for u in utts])


def pad_batch(feats: list, targets: list | None = None, ignore: int = -100):
    """Pad to the longest in the batch.

    Returns x (B, T, M) float32 (zeros after each end), lengths (B,), and with targets
    y_in (B, S) = EOS y_1 .. y_{S-1} (the speller's input; EOS is its start symbol) and
    y_out (B, S) = y_1 .. <eos>, padded with ``ignore``.
    """
    B, M = len(feats), feats[0].shape[1]
    lengths = np.array([len(f) for f in feats], dtype=np.int64)  # (B,)
    x = np.zeros((B, int(lengths.max()), M), dtype=np.float32)  # (B, T, M)
    for b, f in enumerate(feats):
        x[b, : len(f)] = f
    if targets is None:
        return x, lengths
    S = max(len(t) for t in targets)
    y_in = np.full((B, S), EOS, dtype=np.int64)  # (B, S)
    y_out = np.full((B, S), ignore, dtype=np.int64)  # (B, S)
    for b, t in enumerate(targets):
        y_out[b, : len(t)] = t
        y_in[b, 1 : len(t)] = t[:-1]
    return x, lengths, y_in, y_out


# ---- scores ----

def word_errors(hypothesis: str, reference: str) -> int:
    """Edit distance over words: the fewest word insertions, deletions and substitutions."""
    from minilm.translate import edit_distance

    return edit_distance(hypothesis.split(), reference.split())


def scores(hypotheses: list, references: list) -> dict:
    """word_error_rate = sum of word edit distances / reference words; exact_match = share of utterances
    transcribed exactly; n utterances and reference words."""
    if len(hypotheses) != len(references) or not references:
        raise ValueError(f"need as many hypotheses as references (at least one), got {len(hypotheses)} and "
                         f"{len(references)}")
    words = sum(len(r.split()) for r in references)
    return {"word_error_rate": sum(word_errors(h, r) for h, r in zip(hypotheses, references, strict=True)) / words,
            "exact_match": sum(h == r for h, r in zip(hypotheses, references, strict=True)) / len(references),
            "utterances": len(references), "words": words}


def per_speaker(hypotheses: list, references: list, speakers: list) -> dict:
    """scores() of each speaker's utterances (one-digit utterances: exact match is the digit accuracy)."""
    out = {}
    for s in sorted({sp[0] for sp in speakers}):
        idx = [i for i, sp in enumerate(speakers) if sp[0] == s]
        out[s] = scores([hypotheses[i] for i in idx], [references[i] for i in idx])
    return out

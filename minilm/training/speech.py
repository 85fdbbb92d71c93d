"""The spoken-digit task (§6.2 语音识别) for the training loop: data, scores and transcription.

    python -m minilm train --model las --task digits --out runs/digits
    python -m minilm eval --checkpoint runs/digits/checkpoint.npz
    python -m minilm transcribe --checkpoint runs/digits/checkpoint.npz FILE.wav ...

Training is minilm.training.loop's, like every model's: the ``las`` adapter
(minilm.training.adapters) draws each batch from a pool of ``train_size``
utterances of 1 .. max_digits training recordings (minilm.tasks.digits, from
the run's seed), taking neighbours in length order so that little of a batch
is padding.  Every evaluation scores ``eval_size`` utterances of 1 ..
max_digits *test* recordings (never trained on): the teacher-forced loss,
then greedy transcripts (word error rate, exact match), and every one of the
300 official test recordings on its own (single-digit accuracy).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass

import numpy as np

from minilm import las
from minilm.audio import features, read_wav
from minilm.tasks import digits as D
from minilm.translate import beam_search, greedy_decode

TASKS = ("digits",)
MAX_CHARS = 6  # the longest digit word ("three", "seven", "eight") and a space


@dataclass
class Vocab:
    """The speller's characters: <eos> and a-z plus space (minilm.tasks.digits.ALPHABET)."""

    alphabet: str = D.ALPHABET

    @property
    def vocab_size(self) -> int:
        return 1 + len(self.alphabet)

    def to_dict(self) -> dict:
        return {"kind": "characters", "alphabet": self.alphabet}


@dataclass
class Evaluation:
    """What an evaluation scores: utterances of test recordings, and each test recording on its own."""

    utterances: D.Dataset
    singles: D.Dataset

    def __len__(self) -> int:
        return len(self.utterances.feats)


@dataclass
class Pool:
    """The training utterances and their order by length (shortest first)."""

    data: D.Dataset
    order: np.ndarray  # (n,)

    def __len__(self) -> int:
        return len(self.order)


@dataclass
class Task:
    vocab: Vocab
    train: Pool
    val: Evaluation
    source: str
    fingerprint: str


def make_task(o, log=print) -> Task:
    """The task the options describe (``task``, ``data_dir``, ``max_digits``, ``train_size``, ``eval_size``,
    ``seed``); a ValueError names a bad one."""
    if o.task not in TASKS:
        raise ValueError(f"--task must be one of {', '.join(TASKS)} for --model las, got {o.task!r}")
    for k in ("max_digits", "train_size", "eval_size"):
        if not isinstance(getattr(o, k), int) or getattr(o, k) < 1:
            raise ValueError(f"--{k.replace('_', '-')} must be a positive integer, got {getattr(o, k)}")
    who = o.held_out_speaker
    if who is not None and who not in D.SPEAKERS:
        raise ValueError(f"--held-out-speaker must be one of {', '.join(D.SPEAKERS)}, got {who!r}")
    folder = D.open_recordings(o.data_dir, log=log)
    train = D.dataset(D.utterances(D.recordings(folder, "train", exclude_speakers=(who,)), o.train_size,
                                   seed=o.seed, max_digits=o.max_digits))
    test = D.recordings(folder, "test") if who is None else D.recordings(folder, "test", speakers=(who,))
    singles = test if who is None else D.recordings(folder, speakers=(who,))
    val = Evaluation(D.dataset(D.utterances(test, o.eval_size, seed=o.seed + 1, max_digits=o.max_digits)),
                     D.dataset(D.single(singles)))
    meta = json.dumps({"fsdd": D.SHA256SUMS_DIGEST, "max_digits": o.max_digits, "train_size": o.train_size,
                       "eval_size": o.eval_size, "seed": o.seed, "held_out_speaker": who})
    order = np.argsort([len(f) for f in train.feats], kind="stable")  # (n,)
    return Task(Vocab(), Pool(train, order), val, f"FSDD {D.VERSION} ({folder})",
                hashlib.sha256(meta.encode()).hexdigest())


def spec_augment(x: np.ndarray, lengths: np.ndarray, rng: np.random.Generator, max_bands: int = 8,
                 max_frames: int = 6) -> np.ndarray:
    """SpecAugment's masks (Park et al. 2019), on a copy: in each row, a band of f ~ U{0..max_bands} mel
    bands and a stretch of t ~ U{0..max_frames} frames set to 0 (the utterance's mean after normalisation).
    The model cannot rely on any one band or instant; 2,700 training recordings are learned by heart
    without it.  x (B, T, M) -> (B, T, M)."""
    x = x.copy()
    M = x.shape[2]
    for b, L in enumerate(lengths):
        f = int(rng.integers(0, max_bands + 1))
        f0 = int(rng.integers(0, M - f + 1))
        x[b, :L, f0 : f0 + f] = 0
        t = int(rng.integers(0, min(max_frames, L - 1) + 1))
        t0 = int(rng.integers(0, L - t + 1))
        x[b, t0 : t0 + t] = 0
    return x


def length_batch(pool: Pool, batch_size: int, rng: np.random.Generator, augment: bool = True):
    """batch_size utterances of similar length: a random run of neighbours in length order, padded
    (minilm.tasks.digits.pad_batch), masked by spec_augment if ``augment``
    -> x (B, T, M), lengths (B,), y_in (B, S), y_out (B, S)."""
    B = min(batch_size, len(pool))
    start = int(rng.integers(0, len(pool) - B + 1))
    idx = pool.order[start : start + B]
    x, lengths, y_in, y_out = D.pad_batch([pool.data.feats[i] for i in idx], [pool.data.targets[i] for i in idx],
                                          las.IGNORE_INDEX)
    return (spec_augment(x, lengths, rng) if augment else x), lengths, y_in, y_out


def transcribe_features(params, cfg, feats: list, beam_size: int = 1, batch_size: int = 100,
                        max_digits: int = 3) -> list[str]:
    """Greedy (beam_size 1) or beam-search transcripts of feature arrays (T_i, M)."""
    out = []
    for i in range(0, len(feats), batch_size):
        x, lengths = D.pad_batch(feats[i : i + batch_size])
        fn = las.next_logits_fn(params, cfg, x.astype(params["out.W"].dtype), lengths)
        max_len = MAX_CHARS * max_digits + 2
        ids = (greedy_decode(fn, len(lengths), D.EOS, D.EOS, max_len) if beam_size == 1
               else beam_search(fn, len(lengths), D.EOS, D.EOS, max_len, beam_size))
        out += [D.decode(r) for r in ids]
    return out


def teacher_forced_loss(params, cfg, ds: D.Dataset, batch_size: int = 100) -> float:
    total, count = 0.0, 0
    for i in range(0, len(ds.feats), batch_size):
        x, lengths, y_in, y_out = D.pad_batch(ds.feats[i : i + batch_size], ds.targets[i : i + batch_size],
                                              las.IGNORE_INDEX)
        n = int((y_out != las.IGNORE_INDEX).sum())
        total, count = total + las.loss(params, cfg, x.astype(params["out.W"].dtype), lengths, y_in, y_out) * n, \
            count + n
    return total / count


def score(params, cfg, ev: Evaluation, max_digits: int = 3, beam_size: int = 1) -> dict:
    """Loss and perplexity per character (teacher forcing); word error rate and exact match of the
    utterances; single-digit accuracy over the test recordings; the first 20 errors of each."""
    loss = teacher_forced_loss(params, cfg, ev.utterances)
    hyps = transcribe_features(params, cfg, ev.utterances.feats, beam_size, max_digits=max_digits)
    single = transcribe_features(params, cfg, ev.singles.feats, beam_size, max_digits=1)
    u = D.scores(hyps, ev.utterances.texts)
    s = D.scores(single, ev.singles.texts)
    return {"loss": loss, "perplexity": math.exp(min(loss, 700.0)), "word_error_rate": u["word_error_rate"],
            "exact_match": u["exact_match"], "digit_accuracy": s["exact_match"], "sentences": u["utterances"],
            "wrong": [[h, r] for h, r in zip(hyps, ev.utterances.texts, strict=True) if h != r][:20],
            "wrong_digits": [[h, r] for h, r in zip(single, ev.singles.texts, strict=True) if h != r][:20]}


def transcribe_files(run, paths, beam: int = 1) -> list[str]:
    """Transcripts of WAV files (8 kHz mono 16-bit PCM) with a loaded las checkpoint."""
    run.require("transcribe")
    if beam < 1:
        raise ValueError(f"--beam must be >= 1, got {beam}")
    feats = [features(read_wav(p)) for p in paths]  # a bad file stops here, with its name
    return transcribe_features(run.params, run.cfg, feats, beam, max_digits=run.opts.max_digits + 2)

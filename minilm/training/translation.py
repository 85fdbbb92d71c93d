"""The seq2seq task (§6.1 机器翻译): English number words <-> Chinese numerals, scored and translated.

    python -m minilm train --model seq2seq --task numbers --out runs/numbers
    python -m minilm translate --checkpoint runs/numbers/checkpoint.npz "three thousand and forty-two"

Training is minilm.training.loop's, like every model's: the ``seq2seq``
adapter (minilm.training.adapters) draws each batch of training numbers from
the ``Task`` below, teacher-forces the decoder and takes the loop's clipped
AdamW step.  Every ``eval_every`` steps ``score`` rates the same seeded
sample of ``eval_size`` held-out numbers (loss and perplexity under teacher
forcing, then greedy translations: exact match, character edit distance);
at the end it translates *every* held-out number.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from minilm import seq2seq as S
from minilm.tasks import numbers as N
from minilm.tasks.vocab import Vocab
from minilm.translate import beam_search, greedy_decode, translation_scores

TASKS = ("numbers",)


@dataclass
class Task:
    direction: str
    src_vocab: Vocab
    tgt_vocab: Vocab
    train: np.ndarray  # training numbers
    held: np.ndarray  # held-out numbers

    @property
    def languages(self) -> tuple[str, str]:
        src, tgt = self.direction.split("-")
        return src, tgt

    @property
    def vocab_size(self) -> int:
        return len(self.tgt_vocab)

    def encode(self, numbers):
        return N.encode_numbers(numbers, self.src_vocab, self.tgt_vocab, self.direction)

    def to_dict(self) -> dict:
        """What a checkpoint stores of the task: its direction and both vocabularies."""
        return {"kind": "numbers", "direction": self.direction, "src": self.src_vocab.tokens,
                "tgt": self.tgt_vocab.tokens}


def make_task(o) -> Task:
    """The task the options describe (``task``, ``direction``, ``max_number``, ``held_out``, ``share_vocab``,
    ``seed``); a ValueError names a bad one."""
    if o.task not in TASKS:
        raise ValueError(f"--task must be one of {', '.join(TASKS)}, got {o.task!r}")
    if o.direction not in N.DIRECTIONS:
        raise ValueError(f"--direction must be one of {', '.join(N.DIRECTIONS)}, got {o.direction!r}")
    if not 1 <= o.max_number < N.LIMIT:
        raise ValueError(f"--max-number must be in 1 .. {N.LIMIT - 1}, got {o.max_number}")
    if not 0 < o.held_out < 1:
        raise ValueError(f"--held-out must be a fraction in (0, 1), got {o.held_out}")
    if not isinstance(o.eval_size, int) or o.eval_size < 1:
        raise ValueError(f"--eval-size must be a positive integer, got {o.eval_size}")
    train, held = N.split_numbers(o.max_number, o.held_out, o.seed)
    return Task(o.direction, *N.vocabularies(o.direction, o.share_vocab), train, held)


def make_config(o, task: Task) -> S.Seq2SeqConfig:
    """block_size 4 D + 8 for D-digit numbers: English needs at most 7 tokens per group of three digits
    ("seven hundred and seventy - seven thousand") plus one "and", Chinese two characters per digit."""
    return S.Seq2SeqConfig(vocab_size=len(task.tgt_vocab), src_vocab_size=len(task.src_vocab),
                           block_size=4 * len(str(o.max_number)) + 8, n_layer=o.layers, n_dec_layer=o.layers,
                           n_head=o.heads, n_embd=o.width, ffn=o.activation, norm=o.norm, dropout=o.dropout,
                           share_embeddings=o.share_vocab)


def translate_numbers(params, cfg, task: Task, numbers, beam_size: int = 1, batch_size: int = 500) -> list[str]:
    """The model's translations of ``numbers`` (greedy, or beam search with beam_size > 1)."""
    out = []
    for i in range(0, len(numbers), batch_size):
        src, _ = task.encode(numbers[i : i + batch_size])
        out += translate_ids(params, cfg, task.tgt_vocab, task.languages[1], src, beam_size)
    return out


def translate_ids(params, cfg, tgt_vocab: Vocab, language: str, src, beam_size: int = 1) -> list[str]:
    fn = S.next_logits_fn(params, cfg, src)
    max_len = cfg.block_size - 1
    ids = (greedy_decode(fn, len(src), N.BOS, N.EOS, max_len) if beam_size == 1
           else beam_search(fn, len(src), N.BOS, N.EOS, max_len, beam_size))
    return [N.decode_target(r, tgt_vocab, language) for r in ids]


def score(params, cfg, task: Task, numbers, beam_size: int = 1, batch_size: int = 500) -> dict:
    """Teacher-forced loss and perplexity, then exact match and edit distance of the translations,
    and the first 50 numbers translated wrongly as [number, translation, reference]."""
    total, count = 0.0, 0
    for i in range(0, len(numbers), batch_size):
        src, tgt = task.encode(numbers[i : i + batch_size])
        n = int((tgt[:, 1:] != 0).sum())
        total, count = total + S.loss(params, cfg, src, tgt) * n, count + n
    hyps = translate_numbers(params, cfg, task, numbers, beam_size, batch_size)
    refs = [N.target_text(int(n), task.direction) for n in numbers]
    wrong = [[int(n), h, r] for n, h, r in zip(numbers, hyps, refs, strict=True) if h != r]
    loss = total / count
    return {"loss": loss, "perplexity": math.exp(min(loss, 700.0)), **translation_scores(hyps, refs),
            "wrong": wrong[:50]}


def eval_sample(task: Task, o) -> np.ndarray:
    """The same ``eval_size`` held-out numbers at every evaluation (seeded), sorted."""
    k = min(o.eval_size, len(task.held))
    return np.sort(np.random.default_rng(o.seed + 1).choice(task.held, size=k, replace=False))



def translate_texts(run, texts, beam: int = 1) -> list[str]:
    """Translations of ``texts`` with a loaded seq2seq checkpoint (minilm.training.adapters.load_run)."""
    run.require("translate")
    task, lang = run.tokenizer, run.tokenizer.languages[0]
    if beam < 1:
        raise ValueError(f"--beam must be >= 1, got {beam}")
    rows = []
    for text in texts:
        tokens = N.tokenize(text, lang)
        if not tokens:
            raise ValueError(f"nothing to translate in {text!r}")
        if len(tokens) > run.cfg.block_size:
            raise ValueError(f"{text!r} has {len(tokens)} tokens, more than the model's {run.cfg.block_size}")
        rows.append(task.src_vocab.encode(tokens))
    src = np.zeros((len(rows), max(map(len, rows))), np.int64)  # (n, S), padded with 0
    for i, r in enumerate(rows):
        src[i, : len(r)] = r
    return translate_ids(run.params, run.cfg, task.tgt_vocab, task.languages[1], src, beam)

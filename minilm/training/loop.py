"""The training loop, one for every model: AdamW, clipping, warmup + cosine, full validation, checkpoints, resume.

    for step in 0 .. steps-1:
        batch            = adapter.batch(...)            (random windows, contexts, streams or task examples)
        loss, grads      = adapter.step(...)             (the model's forward and hand-written backward)
        clip the global gradient norm;  lr = warmup + cosine schedule (minilm.optim.lr_at)
        AdamW update
        every eval_every steps and at the end: score the validation set, save a checkpoint

Every model, the language models and the seq2seq translator alike, is an
adapter (minilm.training.adapters): this loop, its checkpoints, its resume
and its metrics file are the same for all of them.

Reproducible to the bit: one np.random.Generator draws every batch (and
dropout mask); its state is saved in the checkpoint with the step, the
parameters, AdamW's moments and a recurrent model's carried state, so
``resume`` continues exactly where an uninterrupted run would be.  A resumed
run reads everything else from its checkpoint: ``--resume --out DIR`` is enough.

Safe: a checkpoint is written atomically (minilm.training.checkpoint); Ctrl-C
finishes the current step, saves and stops; a NaN or infinite loss or
gradient stops the run before the update and leaves the last good
checkpoint untouched; a run never overwrites a checkpoint it did not resume.

Writes into ``out``: checkpoint.npz, metrics.json, loss.png.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from minilm import optim
from minilm.training import adapters as models
from minilm.training import checkpoint
from minilm.training.paths import output_dir, publish
from minilm.training.threads import blas_threads, choose


@dataclass
class TrainOptions:
    """Everything that defines a run.  None means: the model's default (minilm.training.adapters)."""

    model: str = "transformer"
    data: str | None = None  # a UTF-8 text file ...
    corpus: str | None = None  # ... or a named corpus (default: the built-in one)
    task: str | None = None  # ... or a generated task (seq2seq: "numbers")
    out: str = "runs/demo"
    steps: int | None = None
    seed: int = 0
    batch_size: int | None = None
    block_size: int | None = None  # T, sequence models
    context: int | None = None  # N, the n-gram model's previous tokens
    layers: int | None = None
    heads: int | None = None
    width: int | None = None  # C (Transformer) or E (embedding size of the n-gram and LSTM models)
    hidden: int | None = None  # Hd, hidden units of the n-gram MLP and the LSTM
    dropout: float | None = None
    norm: str | None = None  # "post" (the text's) or "pre" LayerNorm
    activation: str | None = None  # Transformer: "relu" (the text's) or "gelu"; n-gram: "tanh" or "relu"
    positions: str | None = None  # "sinusoidal" (the text's) or "learned"
    scale_embed: bool | None = None  # multiply token embeddings by sqrt(C) before adding positions (the text's)
    tie_weights: bool | None = None  # output projection = token embedding transposed
    causal: bool | None = None  # False removes the causal mask: the text's bug (each position sees its target)
    head_bias: bool | None = None  # the output layer's bias b_head (GPT-2 has none)
    init_from: str | None = None  # a GPT-2 directory (config.json, model.safetensors, vocab.json, merges.txt)
    tokenizer: str = "char"  # "char", "word" or "bpe"
    max_vocab: int = 10000  # word tokenizer's vocabulary cap, <unk> included
    vocab_size: int = 1000  # bpe: 256 bytes + learned merges (+ the model's special tokens)
    lr: float | None = None
    min_lr: float | None = None  # default lr / 10
    warmup: int | None = None  # default steps / 20
    weight_decay: float | None = None  # default 0.1 (seq2seq 0)
    beta1: float = 0.9
    beta2: float = 0.99
    clip: float = 1.0  # global gradient-norm limit; 0 turns clipping off
    eval_every: int | None = None  # default steps / 5
    val_fraction: float = 0.1
    stop_after: int | None = None  # pause after this step (checkpoint saved); continue with resume
    fast: bool = False  # train with minilm.fast (same formulas, same checkpoint; refused where there is none)
    threads: int | None = None  # BLAS threads; None: chosen from the model's products (minilm.training.threads)
    # the seq2seq numbers task (minilm.training.translation)
    direction: str | None = None  # "en-zh": English words -> Chinese numerals, or "zh-en"
    max_number: int | None = None  # the task's numbers are 0 .. max_number
    held_out: float | None = None  # fraction of them never trained on
    share_vocab: bool | None = None  # one joint vocabulary and embedding table for both languages
    eval_size: int | None = None  # held-out numbers scored at each evaluation (all of them at the end)
    # the las spoken-digits task (minilm.training.speech)
    data_dir: str | None = None  # a copy of the FSDD recordings the user has (default: the verified download)
    max_digits: int | None = None  # utterances of 1 .. max_digits digits
    train_size: int | None = None  # training utterances drawn once from the seed
    held_out_speaker: str | None = None  # never train on this speaker; evaluate on all of their recordings
    spec_augment: bool | None = None  # mask a random band and stretch of each training utterance's features


# options that only some models use: a model uses those its adapter has a default for
MODEL_OPTIONS = ("block_size", "context", "layers", "heads", "width", "hidden", "dropout", "norm", "activation",
                 "positions", "scale_embed", "tie_weights", "causal", "head_bias", "task", "direction", "max_number",
                 "held_out", "share_vocab", "eval_size", "data_dir", "max_digits", "train_size",
                 "held_out_speaker", "spec_augment")
TEXT_OPTIONS = ("data", "corpus", "tokenizer", "max_vocab", "vocab_size", "val_fraction")  # models that read a text
RESUME_MAY_CHANGE = ("steps", "eval_every", "stop_after", "out", "fast", "threads", "data_dir")  # data_dir: sha256


class TrainingDiverged(RuntimeError):
    """The loss or the gradient became NaN or infinite."""


def resolve(opts: TrainOptions, explicit=()) -> TrainOptions:
    """Fill in the model's defaults and check every value; a ValueError names the bad option.
    ``explicit`` names the options the user gave: those that do not apply to the model are refused."""
    a = models.get(opts.model)
    o = dataclasses.replace(opts)
    for k in MODEL_OPTIONS:
        if k not in a.defaults and getattr(o, k) is not None:
            raise ValueError(f"--{k.replace('_', '-')} does not apply to --model {o.model}")
    if not a.reads_text:
        for k in TEXT_OPTIONS:
            if k in explicit or (k in ("data", "corpus") and getattr(o, k) is not None):
                raise ValueError(f"--{k.replace('_', '-')} does not apply to --model {o.model}, which trains on "
                                 f"a generated task (--task {a.defaults.get('task')})")
    for k, v in a.defaults.items():
        if getattr(o, k) is None:
            setattr(o, k, v)
    o.lr = 3e-3 if o.lr is None else o.lr
    o.weight_decay = 0.1 if o.weight_decay is None else o.weight_decay
    o.min_lr = o.lr / 10 if o.min_lr is None else o.min_lr
    o.warmup = max(1, o.steps // 20) if o.warmup is None else o.warmup
    o.eval_every = max(1, o.steps // 5) if o.eval_every is None else o.eval_every
    positive = ["steps", "batch_size", "eval_every", "max_vocab"] + [
        k for k in ("block_size", "context", "layers", "heads", "width", "hidden", "max_number", "eval_size",
                  "max_digits", "train_size") if k in a.defaults]
    for k in positive:
        if not isinstance(getattr(o, k), int) or getattr(o, k) < 1:
            raise ValueError(f"--{k.replace('_', '-')} must be a positive integer, got {getattr(o, k)}")
    for k in ("lr", "min_lr", "weight_decay", "clip"):
        if not math.isfinite(getattr(o, k)) or getattr(o, k) < 0:
            raise ValueError(f"--{k.replace('_', '-')} must be a finite number >= 0, got {getattr(o, k)}")
    if o.lr == 0:
        raise ValueError("--lr must be > 0")
    if not 0 <= o.beta1 < 1 or not 0 <= o.beta2 < 1:
        raise ValueError(f"--beta1 and --beta2 must be in [0, 1), got {o.beta1} and {o.beta2}")
    if o.warmup < 0:
        raise ValueError(f"--warmup must be >= 0, got {o.warmup}")
    if o.dropout is not None and not 0 <= o.dropout < 1:
        raise ValueError(f"--dropout must be in [0, 1), got {o.dropout}")
    if o.stop_after is not None and o.stop_after < 1:
        raise ValueError(f"--stop-after must be a positive integer, got {o.stop_after}")
    if o.tokenizer not in ("char", "word", "bpe"):
        raise ValueError(f"--tokenizer must be char, word or bpe, got {o.tokenizer!r}")
    if o.tokenizer == "bpe" and (not isinstance(o.vocab_size, int) or o.vocab_size < 256 + len(a.specials)):
        raise ValueError(f"--vocab-size must be an integer >= {256 + len(a.specials)} for --tokenizer bpe "
                         f"(256 bytes{' + ' + ', '.join(a.specials) if a.specials else ''}), got {o.vocab_size}")
    if o.data is not None and o.corpus is not None:
        raise ValueError("give --data FILE or --corpus NAME, not both")
    return o


class StopOnSigint:
    """While active, Ctrl-C (SIGINT) sets ``requested`` instead of raising; a second Ctrl-C raises at once."""

    def __init__(self):
        self.requested, self._old = False, None

    def _handler(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self):
        try:
            self._old = signal.signal(signal.SIGINT, self._handler)
        except ValueError:  # not the main thread: leave Ctrl-C alone
            self._old = None
        return self

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)
        return False


def _write_atomic(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        publish(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def plot_losses(history: dict, path: Path, title: str) -> None:
    """Training loss per step and validation loss at each evaluation, on one chart."""
    from matplotlib.figure import Figure  # no pyplot: leaves the caller's backend (a notebook's) alone

    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    ax.plot(np.arange(1, len(history["train_loss"]) + 1), history["train_loss"], lw=0.8, alpha=0.7, label="train")
    ax.plot(history["eval_step"], history["val_loss"], "o-", label="validation (whole split)")
    ax.set(xlabel="step", ylabel="loss (nats per token)", title=title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    _write_atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))


@dataclass
class Session:
    """A run in progress: what the loop reads and updates, and what a checkpoint saves."""

    o: TrainOptions
    adapter: models.Adapter
    mod: object
    cfg: object
    data: models.Data
    params: dict
    opt_state: dict
    rng: np.random.Generator  # draws every batch and dropout mask
    carry: list | None = None  # a recurrent model's state, carried to the next batch
    step: int = 0
    history: dict = dataclasses.field(default_factory=lambda: {"train_loss": [], "eval_step": [], "val_loss": [],
                                                               "train_seconds": []})
    spent: dict = dataclasses.field(default_factory=lambda: {"seconds": 0.0, "train_seconds": 0.0, "tokens": 0})
    last_eval: dict | None = None
    last_saved: int | None = None  # the step of the checkpoint on disk, if any

    @property
    def ckpt_path(self) -> Path:
        return Path(self.o.out) / "checkpoint.npz"

    @property
    def tok(self):
        return self.data.vocab


def start(opts: TrainOptions, resume: bool = False, explicit=None, log=print, force: bool = False) -> Session:
    """Check everything and build the session (fresh, or from the checkpoint in ``opts.out``).

    Nothing is written here: a ValueError stops a bad run before it can touch a file.
    A fresh run refuses an ``out`` that holds a checkpoint unless ``force``; even
    then the old one stays until the new run saves its first.
    ``explicit`` names the options the user set (default: those that differ
    from TrainOptions' defaults); when resuming they must agree with the
    checkpoint's, except steps, eval_every, stop_after and out.  Everything
    else, the model included, comes from the checkpoint.
    """
    if explicit is None:
        explicit = {f.name for f in dataclasses.fields(opts) if getattr(opts, f.name) != f.default}
    output_dir(opts.out)
    ckpt_path = Path(opts.out) / "checkpoint.npz"
    if resume:
        if not ckpt_path.exists():
            raise ValueError(f"--resume: there is no checkpoint in {opts.out} to continue")
        run = models.load_run(ckpt_path)
        try:
            saved = TrainOptions(**run.meta["options"])
        except TypeError as e:
            raise ValueError(f"corrupt checkpoint {ckpt_path}: its options are not minilm's ({e})") from None
        for k in sorted(set(explicit) - set(RESUME_MAY_CHANGE)):
            if getattr(opts, k) != getattr(saved, k):
                raise ValueError(f"--{k.replace('_', '-')} {getattr(opts, k)} differs from the checkpoint's "
                                 f"{getattr(saved, k)}; a resumed run keeps its settings")
        o = resolve(dataclasses.replace(saved, out=opts.out, stop_after=opts.stop_after, fast=opts.fast,
                                        threads=opts.threads,
                                        **{k: getattr(opts, k) for k in ("steps", "eval_every") if k in explicit}))
        adapter, mod = run.adapter, run.module
        d = adapter.prepare(o, log, run.tokenizer)
        if d.fingerprint != run.meta.get("text_sha256"):
            raise ValueError(f"the training data ({d.source}) is not the one checkpoint {ckpt_path} was trained on")
    else:
        if ckpt_path.exists() and not force:
            raise ValueError(f"{ckpt_path} exists; continue it with --resume, start afresh with --force, "
                             f"or choose another --out")
        o = resolve(opts, explicit)
        adapter = models.get(o.model)
        mod = adapter.load()
        init = init_from(o, explicit) if o.init_from is not None else None  # (cfg, params, tokenizer)
        d = adapter.prepare(o, log, None if init is None else init[2])
    init_rng, rng = (np.random.default_rng(s) for s in np.random.SeedSequence(o.seed).spawn(2))
    if not resume:
        cfg = adapter.make_config(mod, o, d) if init is None else init[0]
        params = mod.init_params(cfg, init_rng) if init is None else init[1]
        return Session(o, adapter, mod, cfg, d, params, optim.init_state(params), rng)
    meta = run.meta
    if run.opt_state is None:
        raise ValueError(f"checkpoint {ckpt_path} has no optimiser state and cannot be resumed")
    if meta["step"] >= o.steps:
        raise ValueError(f"checkpoint {ckpt_path} is at step {meta['step']} of --steps {o.steps}; "
                         f"give a larger --steps")
    if o.stop_after is not None and o.stop_after <= meta["step"]:
        raise ValueError(f"--stop-after {o.stop_after} is not after the checkpoint's step {meta['step']}")
    rng.bit_generator.state = meta["rng"]
    return Session(o, adapter, mod, run.cfg, d, run.params, run.opt_state, rng, run.carry, int(meta["step"]),
                   meta["history"], meta["spent"], meta.get("last_eval"), last_saved=int(meta["step"]))


FROM_GPT2 = ("layers", "heads", "width", "norm", "activation", "positions", "scale_embed", "tie_weights", "causal",
             "head_bias", "tokenizer", "vocab_size", "max_vocab")  # what --init-from DIR's files decide


def init_from(o: TrainOptions, explicit) -> tuple:
    """(cfg, params, tokenizer) of the GPT-2 directory ``o.init_from`` (minilm.hub.gpt2), to fine-tune.

    The architecture and the tokenizer are the directory's; ``o`` is made to say so (its checkpoint
    then records them).  Training windows are --block-size tokens, at most its n_positions.
    """
    from minilm.hub import gpt2

    if o.model != "transformer":
        raise ValueError(f"--init-from reads a GPT-2, a causal Transformer: it does not apply to --model {o.model}")
    given = [k for k in FROM_GPT2 if k in explicit]
    if given:
        raise ValueError(f"--{given[0].replace('_', '-')} comes from {o.init_from} with --init-from")
    cfg, params, tok = gpt2.load(o.init_from)
    if o.block_size > cfg.block_size:
        raise ValueError(f"--block-size {o.block_size} exceeds the {cfg.block_size} positions of {o.init_from}")
    cfg = dataclasses.replace(cfg, dropout=o.dropout)
    o.layers, o.heads, o.width, o.norm, o.activation, o.positions = (cfg.n_layer, cfg.n_head, cfg.n_embd, cfg.norm,
                                                                     cfg.ffn, cfg.pos)
    o.scale_embed, o.tie_weights, o.causal, o.head_bias = cfg.scale_embed, cfg.tie_weights, cfg.causal, cfg.head_bias
    o.tokenizer, o.vocab_size = "bpe", tok.vocab_size
    return cfg, params, tok


def evaluate(s: Session) -> dict:
    """Score the validation set (at the last step, the final one: every held-out example) and record it."""
    d = s.data
    examples = d.val_final if s.step >= s.o.steps and d.val_final is not None else d.val
    with np.errstate(over="ignore", invalid="ignore"):  # a diverged model is reported by the caller
        r = s.adapter.evaluate(s.mod, s.params, s.cfg, examples, s.o, d.vocab)
    s.history["eval_step"].append(s.step)
    s.history["val_loss"].append(r["loss"])
    s.history.setdefault("train_seconds", []).append(s.spent["train_seconds"])  # time in training steps so far
    if "exact_match" in r:
        s.history.setdefault("exact_match", []).append(r["exact_match"])
    s.last_eval = r
    return r


def save(s: Session, seconds: float) -> dict:
    """Write checkpoint.npz and metrics.json (each atomically); returns the metrics."""
    o = s.o
    meta = {"model": o.model, "config": dataclasses.asdict(s.cfg), "tokenizer": s.data.vocab.to_dict(),
            "options": dataclasses.asdict(dataclasses.replace(o, stop_after=None)), "step": s.step,
            "rng": s.rng.bit_generator.state, "history": s.history, "text_sha256": s.data.fingerprint,
            "source": s.data.source, "spent": {**s.spent, "seconds": seconds}, "last_eval": s.last_eval}
    checkpoint.save(s.ckpt_path, meta, s.params, s.opt_state, s.carry)
    s.last_saved = s.step
    metrics = _metrics(s, seconds)
    _write_atomic(Path(o.out) / "metrics.json", lambda tmp: Path(tmp).write_text(json.dumps(metrics, indent=2) + "\n"))
    return metrics


def _metrics(s: Session, seconds: float) -> dict:
    recent, ev, sp = s.history["train_loss"][-s.o.eval_every :], s.last_eval, s.spent
    unit = s.adapter.unit
    m = {"model": s.o.model, "steps": s.step, "of_steps": s.o.steps,
         "train_loss": float(np.mean(recent)) if recent else None,  # mean over the last eval_every steps
         "val_loss": ev["loss"] if ev else None, "val_perplexity": ev["perplexity"] if ev else None,
         "eval_step": s.history["eval_step"][-1] if s.history["eval_step"] else None,
         f"{unit}_per_second": sp["tokens"] / sp["train_seconds"] if sp["train_seconds"] else None,
         "seconds": seconds, "train_seconds": sp["train_seconds"], "n_params": models.n_params(s.params)}
    from minilm.fast import procs

    second = procs.peak_kb()  # --fast on two cores: the second process's peak resident size
    if second is not None:
        m["second_process_peak_mb"] = second / 1024
    for k, v in (ev or {}).items():  # bits per character, masked-token accuracy, exact match, ...
        if k not in ("loss", "perplexity") and isinstance(v, int | float):
            m[f"val_{k}"] = v
    return m


def _diverged(s: Session, what: str, value: float, step: int):
    where = (f"the last good checkpoint, step {s.last_saved}, is kept at {s.ckpt_path}" if s.last_saved is not None
             else "no checkpoint was written")
    return TrainingDiverged(f"{what} is {value} at step {step}; training stopped ({where}). "
                            f"Try a smaller --lr or a tighter --clip.")


def train(opts: TrainOptions, resume: bool = False, explicit=None, log=print, progress: bool = True,
          plot: bool = True, force: bool = False) -> dict:
    """Run (or, with ``resume``, continue) training; returns the metrics written to metrics.json
    plus ``interrupted`` (Ctrl-C) and ``finished`` (all steps done).

    ``plot=False`` skips loss.png (drawn once, when the run ends).
    Raises ValueError for bad options or input (nothing is written then),
    TrainingDiverged when the loss or gradient stops being finite.
    """
    t_start = time.perf_counter()
    if opts.fast:
        try:
            from minilm.fast.training import attach, unsupported
        except ModuleNotFoundError:  # a student copy leaves minilm/fast/ out
            raise ValueError("--fast: this installation has no minilm/fast/ (a student copy leaves it out); "
                             "train without --fast") from None
        if not resume and unsupported(opts) is not None:  # before the data is read or downloaded
            raise ValueError(unsupported(opts))
    s = start(opts, resume, explicit, log, force)
    o, a = s.o, s.adapter
    fast_step = None
    if o.fast:
        fast_step = attach(s)
        if fast_step is None:
            raise ValueError(f"--fast: there is no fast path for --model {o.model} with these options yet "
                             f"(minilm/fast/training.py lists those it has); train without --fast")

    def seconds():
        return s.spent["seconds"] + time.perf_counter() - t_start

    from tqdm import tqdm

    n_threads, why = choose(s.params, a.tokens_per_batch(o), o.threads)

    stop_at = o.steps if o.stop_after is None else min(o.steps, o.stop_after)
    Path(o.out).mkdir(parents=True, exist_ok=True)
    with StopOnSigint() as sigint, blas_threads(n_threads), tqdm(
            total=o.steps, initial=s.step, disable=not progress, desc=o.model, unit="step", dynamic_ncols=True) as bar:
        log(f"training {o.model} ({models.n_params(s.params):,} parameters) on {s.data.source}: {s.data.about}; "
            f"steps {s.step} -> {o.steps}; BLAS threads {n_threads} ({why})", flush=True)
        while s.step < stop_at:
            t0 = time.perf_counter()
            batch = a.batch(o, s.data, s.step, s.rng)
            lr = optim.lr_at(s.step, o.lr, o.min_lr, o.warmup, o.steps)
            if fast_step is not None:  # loss, gradients, clipping and AdamW in one call (minilm.fast.training)
                with np.errstate(over="ignore", invalid="ignore"):
                    loss, norm, carry = fast_step(batch, lr, s.carry)
                for what, value in (("the training loss", loss), ("the gradient norm", norm)):
                    if not math.isfinite(value):
                        raise _diverged(s, what, value, s.step + 1)
            else:
                with np.errstate(over="ignore", invalid="ignore"):  # a diverging run is reported below, in one line
                    loss, grads, carry = a.step(s.mod, s.params, s.cfg, batch, s.rng, s.carry)
                if not math.isfinite(loss):
                    raise _diverged(s, "the training loss", loss, s.step + 1)
                norm = optim.clip_grad_norm(grads, o.clip)
                if not math.isfinite(norm):
                    raise _diverged(s, "the gradient norm", norm, s.step + 1)
                optim.adamw_step(s.params, grads, s.opt_state, lr, o.beta1, o.beta2, weight_decay=o.weight_decay)
            s.carry, s.step = carry, s.step + 1
            s.spent["train_seconds"] += time.perf_counter() - t0
            s.spent["tokens"] += a.tokens_per_batch(o)
            s.history["train_loss"].append(float(loss))
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.3f}", lr=f"{lr:.1e}", refresh=False)
            if s.step % o.eval_every == 0 or s.step == o.steps:
                r = evaluate(s)
                if not math.isfinite(r["loss"]):
                    raise _diverged(s, "the validation loss", r["loss"], s.step)
                bar.write(f"step {s.step}: train loss {np.mean(s.history['train_loss'][-o.eval_every:]):.4f}; "
                          f"validation {models.format_scores(r)}")
                metrics = save(s, seconds())
            elif s.step == stop_at or sigint.requested:
                metrics = save(s, seconds())
            if sigint.requested:
                break
    if plot:
        plot_losses(s.history, Path(o.out) / "loss.png", f"{o.model} on {s.data.source.split(' (')[0]}")
    return {**metrics, "interrupted": sigint.requested, "finished": s.step >= o.steps}


def run_exit_status(m: dict, out) -> int:
    """After a run: say how to continue one that stopped early; 130 if interrupted by Ctrl-C, else 0."""
    if m["interrupted"]:
        print(f"interrupted: checkpoint saved at step {m['steps']}; continue with --resume --out {out}")
        return 130
    if not m["finished"]:
        print(f"paused at step {m['steps']}; continue with --resume --out {out}")
    return 0

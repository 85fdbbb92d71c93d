"""Training the encoder-decoder Transformer on a generated task, and translating with it (§6.1 机器翻译).

    python -m minilm train --model seq2seq --task numbers --out runs/numbers
    python -m minilm translate --checkpoint runs/numbers/checkpoint.npz "three thousand and forty-two"

The loop is minilm.training.loop's, for data that are generated rather than read
from a text: each step draws a batch of training numbers, teacher-forces
the decoder, clips the gradient norm, follows warmup + cosine and takes an
AdamW step.  Every ``eval_every`` steps it scores the same seeded sample of
``eval_size`` held-out numbers (loss and perplexity under teacher forcing,
then greedy translations: exact match, character edit distance) and writes
checkpoint.npz and metrics.json; at the end it translates *every* held-out
number.  A checkpoint holds the parameters, AdamW's moments and the batch
generator's state, so ``--resume`` continues exactly where the run stopped;
Ctrl-C saves and stops.  Writes checkpoint.npz, metrics.json and loss.png
into ``out``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from minilm import optim
from minilm import seq2seq as S
from minilm.tasks import numbers as N
from minilm.tasks.vocab import Vocab
from minilm.training import checkpoint
from minilm.training.loop import StopOnSigint, TrainingDiverged, _write_atomic, plot_losses, run_exit_status
from minilm.translate import beam_search, greedy_decode, translation_scores

TASKS = ("numbers",)
MODELS = ("seq2seq",)


@dataclass
class TaskOptions:
    """A seq2seq run on a generated task; the defaults reach >= 95% held-out exact match (benchmarks/)."""

    model: str = "seq2seq"
    task: str = "numbers"
    direction: str = "en-zh"  # English words -> Chinese numerals, or "zh-en"
    max_number: int = 99_999  # the task's numbers are 0 .. max_number
    held_out: float = 0.1  # fraction of them never trained on
    share_vocab: bool = False  # one joint vocabulary and embedding table for both languages
    out: str = "runs/numbers"
    steps: int = 400
    seed: int = 0
    batch_size: int = 64
    layers: int = 2  # encoder blocks, and as many decoder blocks
    heads: int = 4
    width: int = 64
    dropout: float = 0.0
    norm: str = "post"
    activation: str = "relu"
    lr: float = 3e-3
    min_lr: float | None = None  # default lr / 10
    warmup: int | None = None  # default steps / 20
    weight_decay: float = 0.0
    beta1: float = 0.9
    beta2: float = 0.99
    clip: float = 1.0
    eval_every: int | None = None  # default steps / 5
    eval_size: int = 1000  # held-out numbers scored at each evaluation (all of them at the end)
    stop_after: int | None = None


RESUME_MAY_CHANGE = ("steps", "eval_every", "stop_after", "out")
TASK_ARGS = ("task", "direction", "max_number", "held_out", "share_vocab", "eval_size")  # seq2seq's own options
DOES_NOT_APPLY = ("data", "corpus", "block_size", "context", "hidden", "positions", "scale_embed", "tie_weights",
                  "causal", "tokenizer", "max_vocab", "val_fraction")


def resolve(o: TaskOptions) -> TaskOptions:
    """Fill in the derived defaults and check every value; a ValueError names the bad option."""
    o = dataclasses.replace(o)
    if o.model not in MODELS or o.task not in TASKS or o.direction not in N.DIRECTIONS:
        raise ValueError(f"--model must be one of {MODELS}, --task one of {TASKS}, --direction one of "
                         f"{N.DIRECTIONS}; got {o.model!r}, {o.task!r}, {o.direction!r}")
    for k in ("steps", "batch_size", "layers", "heads", "width", "eval_size"):
        if not isinstance(getattr(o, k), int) or getattr(o, k) < 1:
            raise ValueError(f"--{k.replace('_', '-')} must be a positive integer, got {getattr(o, k)}")
    if not 1 <= o.max_number < N.LIMIT:
        raise ValueError(f"--max-number must be in 1 .. {N.LIMIT - 1}, got {o.max_number}")
    o.min_lr = o.lr / 10 if o.min_lr is None else o.min_lr
    o.warmup = max(1, o.steps // 20) if o.warmup is None else o.warmup
    o.eval_every = max(1, o.steps // 5) if o.eval_every is None else o.eval_every
    for k in ("lr", "min_lr", "weight_decay", "clip"):
        if not math.isfinite(getattr(o, k)) or getattr(o, k) < 0:
            raise ValueError(f"--{k.replace('_', '-')} must be a finite number >= 0, got {getattr(o, k)}")
    if o.lr == 0 or o.eval_every < 1 or o.warmup < 0:
        raise ValueError("--lr must be > 0, --eval-every >= 1, --warmup >= 0")
    if o.stop_after is not None and o.stop_after < 1:
        raise ValueError(f"--stop-after must be a positive integer, got {o.stop_after}")
    return o


# ---- the task: numbers, vocabularies, batches ----

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

    def encode(self, numbers):
        return N.encode_numbers(numbers, self.src_vocab, self.tgt_vocab, self.direction)


def make_task(o: TaskOptions) -> Task:
    train, held = N.split_numbers(o.max_number, o.held_out, o.seed)
    return Task(o.direction, *N.vocabularies(o.direction, o.share_vocab), train, held)


def make_config(o: TaskOptions, task: Task) -> S.Seq2SeqConfig:
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


# ---- a run ----

@dataclass
class Session:
    o: TaskOptions
    task: Task
    cfg: S.Seq2SeqConfig
    params: dict
    opt_state: dict
    rng: np.random.Generator
    eval_numbers: np.ndarray
    step: int = 0
    history: dict = dataclasses.field(default_factory=lambda: {"train_loss": [], "eval_step": [], "val_loss": [],
                                                               "exact_match": [], "train_seconds": []})
    spent: dict = dataclasses.field(default_factory=lambda: {"seconds": 0.0, "train_seconds": 0.0, "examples": 0})
    last_eval: dict | None = None
    last_saved: int | None = None

    @property
    def ckpt_path(self) -> Path:
        return Path(self.o.out) / "checkpoint.npz"


def vocab_meta(task: Task) -> dict:
    return {"kind": "numbers", "direction": task.direction, "src": task.src_vocab.tokens, "tgt": task.tgt_vocab.tokens}


def start(opts: TaskOptions, resume: bool = False, explicit=None, force: bool = False) -> Session:
    """A fresh session, or the one saved in ``opts.out`` (its options must agree with the explicit ones).
    A fresh run refuses an ``out`` that holds a checkpoint unless ``force``."""
    explicit = explicit if explicit is not None else {
        f.name for f in dataclasses.fields(opts) if getattr(opts, f.name) != f.default}
    path = Path(opts.out) / "checkpoint.npz"
    if not resume:
        if path.exists() and not force:
            raise ValueError(f"{path} exists; continue it with --resume, start afresh with --force, "
                             f"or choose another --out")
        o = resolve(opts)
        task = make_task(o)
        cfg = make_config(o, task)
        init_rng, rng = (np.random.default_rng(s) for s in np.random.SeedSequence(o.seed).spawn(2))
        params = S.init_params(cfg, init_rng)
        return Session(o, task, cfg, params, optim.init_state(params), rng, eval_sample(task, o))
    run = load(path)
    saved = run["options"]
    for k in sorted(set(explicit) - set(RESUME_MAY_CHANGE)):
        if getattr(opts, k) != getattr(saved, k):
            raise ValueError(f"--{k.replace('_', '-')} {getattr(opts, k)} differs from the checkpoint's "
                             f"{getattr(saved, k)}; a resumed run keeps its settings")
    o = resolve(dataclasses.replace(saved, out=opts.out, stop_after=opts.stop_after,
                                    **{k: getattr(opts, k) for k in ("steps", "eval_every") if k in explicit}))
    meta = run["meta"]
    if run["opt_state"] is None:
        raise ValueError(f"checkpoint {path} has no optimiser state and cannot be resumed")
    if meta["step"] >= o.steps:
        raise ValueError(f"checkpoint {path} is at step {meta['step']} of --steps {o.steps}; give a larger --steps")
    rng = np.random.default_rng()
    rng.bit_generator.state = meta["rng"]
    return Session(o, run["task"], run["cfg"], run["params"], run["opt_state"], rng, eval_sample(run["task"], o),
                   int(meta["step"]), meta["history"], meta["spent"], meta.get("last_eval"), int(meta["step"]))


def eval_sample(task: Task, o: TaskOptions) -> np.ndarray:
    """The same ``eval_size`` held-out numbers at every evaluation (seeded), sorted."""
    k = min(o.eval_size, len(task.held))
    return np.sort(np.random.default_rng(o.seed + 1).choice(task.held, size=k, replace=False))


def load(path) -> dict:
    """A seq2seq checkpoint: {"meta", "options", "task", "cfg", "params", "opt_state"}; ValueError if it is not one."""
    ck = checkpoint.load(path)
    meta = ck["meta"]
    if meta.get("model") != "seq2seq":
        raise ValueError(f"{path} holds a {meta.get('model')!r} model, not a seq2seq translator")
    try:
        o = TaskOptions(**meta["options"])
        cfg = S.Seq2SeqConfig(**meta["config"])
        task = make_task(o)
    except (TypeError, KeyError, ValueError) as e:
        raise ValueError(f"corrupt checkpoint {path}: its metadata does not describe a translator ({e})") from None
    if meta["tokenizer"] != vocab_meta(task):
        raise ValueError(f"corrupt checkpoint {path}: its vocabularies are not those of its task")
    checkpoint.check_params(ck["params"], S.init_params(cfg, np.random.default_rng(0)), path)
    return {"meta": meta, "options": o, "task": task, "cfg": cfg, "params": ck["params"], "opt_state": ck["opt_state"]}


def save(s: Session, seconds: float) -> dict:
    meta = {"model": s.o.model, "config": dataclasses.asdict(s.cfg), "tokenizer": vocab_meta(s.task),
            "options": dataclasses.asdict(dataclasses.replace(s.o, stop_after=None)), "step": s.step,
            "rng": s.rng.bit_generator.state, "history": s.history, "spent": {**s.spent, "seconds": seconds},
            "last_eval": s.last_eval}
    checkpoint.save(s.ckpt_path, meta, s.params, s.opt_state)
    s.last_saved = s.step
    ev, sp = s.last_eval or {}, s.spent
    recent = s.history["train_loss"][-s.o.eval_every :]
    metrics = {"model": s.o.model, "task": s.o.task, "direction": s.o.direction, "steps": s.step,
               "of_steps": s.o.steps, "train_loss": float(np.mean(recent)) if recent else None,
               "val_loss": ev.get("loss"), "val_perplexity": ev.get("perplexity"),
               "exact_match": ev.get("exact_match"), "edit_distance": ev.get("edit_distance"),
               "char_error_rate": ev.get("char_error_rate"), "evaluated_on": ev.get("sentences"),
               "examples_per_second": sp["examples"] / sp["train_seconds"] if sp["train_seconds"] else None,
               "seconds": seconds, "train_seconds": sp["train_seconds"],
               "n_params": int(sum(p.size for p in s.params.values()))}
    _write_atomic(Path(s.o.out) / "metrics.json",
                  lambda tmp: Path(tmp).write_text(json.dumps(metrics, indent=2) + "\n"))
    return metrics


def evaluate(s: Session, numbers) -> dict:
    with np.errstate(over="ignore", invalid="ignore"):
        r = score(s.params, s.cfg, s.task, numbers)
    s.history["eval_step"].append(s.step)
    s.history["val_loss"].append(r["loss"])
    s.history["exact_match"].append(r["exact_match"])
    s.history["train_seconds"].append(s.spent["train_seconds"])  # time spent in training steps so far
    s.last_eval = r
    return r


def train(opts: TaskOptions, resume: bool = False, explicit=None, log=print, progress: bool = True,
          plot: bool = True, force: bool = False) -> dict:
    """Run (or continue) training; returns the metrics of metrics.json plus ``interrupted`` and ``finished``."""
    from tqdm import tqdm

    t_start = time.perf_counter()
    s = start(opts, resume, explicit, force)
    o = s.o
    stop_at = o.steps if o.stop_after is None else min(o.steps, o.stop_after)

    def seconds():
        return s.spent["seconds"] + time.perf_counter() - t_start

    Path(o.out).mkdir(parents=True, exist_ok=True)
    metrics = None
    with StopOnSigint() as sigint, tqdm(total=o.steps, initial=s.step, disable=not progress, desc=o.model,
                                        unit="step", dynamic_ncols=True) as bar:
        log(f"training seq2seq ({sum(p.size for p in s.params.values()):,} parameters) on numbers "
            f"0 .. {o.max_number:,}, {o.direction}: {len(s.task.train):,} training and {len(s.task.held):,} "
            f"held-out numbers; steps {s.step} -> {o.steps}", flush=True)
        while s.step < stop_at:
            t0 = time.perf_counter()
            src, tgt = s.task.encode(s.rng.choice(s.task.train, size=o.batch_size))
            with np.errstate(over="ignore", invalid="ignore"):
                loss, grads = S.loss_and_grads(s.params, s.cfg, src, tgt, train=o.dropout > 0, rng=s.rng)
            norm = optim.clip_grad_norm(grads, o.clip)
            if not (math.isfinite(loss) and math.isfinite(norm)):
                kept = f"the last good checkpoint is step {s.last_saved}" if s.last_saved else "no checkpoint written"
                raise TrainingDiverged(f"the loss or gradient norm is not finite at step {s.step + 1}; training "
                                       f"stopped ({kept}). Try a smaller --lr or a tighter --clip.")
            lr = optim.lr_at(s.step, o.lr, o.min_lr, o.warmup, o.steps)
            optim.adamw_step(s.params, grads, s.opt_state, lr, o.beta1, o.beta2, weight_decay=o.weight_decay)
            s.step += 1
            s.spent["train_seconds"] += time.perf_counter() - t0
            s.spent["examples"] += o.batch_size
            s.history["train_loss"].append(float(loss))
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.3f}", lr=f"{lr:.1e}", refresh=False)
            if s.step % o.eval_every == 0 or s.step == o.steps:
                final = s.step == o.steps
                r = evaluate(s, s.task.held if final else s.eval_numbers)
                bar.write(f"step {s.step}: train loss {np.mean(s.history['train_loss'][-o.eval_every:]):.4f}, "
                          f"val loss {r['loss']:.4f}, exact match {r['exact_match']:.3f}, edit distance "
                          f"{r['edit_distance']:.3f} on {r['sentences']:,} held-out numbers"
                          + (" (all of them)" if final else ""))
                metrics = save(s, seconds())
            elif s.step == stop_at or sigint.requested:
                metrics = save(s, seconds())
            if sigint.requested:
                break
    if metrics is None:
        raise ValueError("no step was run")
    if plot:
        plot_losses(s.history, Path(o.out) / "loss.png", f"seq2seq on numbers ({o.direction})")
    return {**metrics, "interrupted": sigint.requested, "finished": s.step >= o.steps}


# ---- the command line ----

def add_task_arguments(t) -> None:
    """The train command's options for --model seq2seq (minilm.cli adds them to its parser)."""
    t.add_argument("--task", choices=list(TASKS), help="seq2seq: the generated task (numbers)")
    t.add_argument("--direction", choices=list(N.DIRECTIONS), help="seq2seq: en-zh (default) or zh-en")
    t.add_argument("--max-number", type=int, metavar="N", help="seq2seq: numbers 0 .. N (99999)")
    t.add_argument("--held-out", type=float, metavar="F", help="seq2seq: fraction of numbers never trained on (0.1)")
    t.add_argument("--share-vocab", action="store_true", help="seq2seq: one vocabulary for both languages")
    t.add_argument("--eval-size", type=int, metavar="N", help="seq2seq: held-out numbers per evaluation (1000)")


def cmd_train_task(args) -> int:
    """``train --model seq2seq``: the arguments given, checked, then ``train``."""
    given = {k: v for k, v in vars(args).items() if k not in ("command", "fn", "resume", "quiet", "force")}
    if given.get("model") != "seq2seq":
        k = next(k for k in TASK_ARGS if k in given)
        raise ValueError(f"--{k.replace('_', '-')} applies to --model seq2seq only")
    bad = sorted(k for k in given if k in DOES_NOT_APPLY or k not in {f.name for f in dataclasses.fields(TaskOptions)})
    if bad:
        raise ValueError(f"--{bad[0].replace('_', '-')} does not apply to --model seq2seq")
    opts = TaskOptions(**given)
    try:
        m = train(opts, resume=getattr(args, "resume", False), explicit=set(given),
                  progress=not getattr(args, "quiet", False), force=getattr(args, "force", False))
    except TrainingDiverged as e:
        print(f"minilm train: error: {e}")
        return 1
    print(f"seq2seq ({opts.direction}): step {m['steps']} of {m['of_steps']}, train loss {m['train_loss']:.4f}, "
          f"val loss {m['val_loss']:.4f}, exact match {m['exact_match']:.3f}, edit distance "
          f"{m['edit_distance']:.3f} on {m['evaluated_on']:,} held-out numbers; {m['seconds']:.1f} s; "
          f"wrote {opts.out}/")
    return run_exit_status(m, opts.out)


def add_translate_parser(sub) -> None:
    t = sub.add_parser("translate", help="translate with a seq2seq checkpoint",
                       description="Translate number words with a checkpoint of --model seq2seq.")
    t.add_argument("--checkpoint", required=True, metavar="PATH")
    t.add_argument("--beam", type=int, default=1, metavar="K", help="beam search with K prefixes (1 = greedy)")
    t.add_argument("text", nargs="+", help='e.g. "three thousand and forty-two" (or 三千零四十二 for zh-en)')
    t.set_defaults(fn=cmd_translate)


def cmd_translate(args) -> int:
    run = load(args.checkpoint)
    task, lang = run["task"], run["task"].languages[0]
    if args.beam < 1:
        raise ValueError(f"--beam must be >= 1, got {args.beam}")
    rows = []
    for text in args.text:
        tokens = N.tokenize(text, lang)
        if not tokens:
            raise ValueError(f"nothing to translate in {text!r}")
        if len(tokens) > run["cfg"].block_size:
            raise ValueError(f"{text!r} has {len(tokens)} tokens, more than the model's {run['cfg'].block_size}")
        rows.append(task.src_vocab.encode(tokens))
    src = np.zeros((len(rows), max(map(len, rows))), np.int64)  # (n, S), padded with 0
    for i, r in enumerate(rows):
        src[i, : len(r)] = r
    for text, out in zip(args.text, translate_ids(run["params"], run["cfg"], task.tgt_vocab, task.languages[1], src,
                                                  args.beam), strict=True):
        print(f"{text}\t{out}")
    return 0

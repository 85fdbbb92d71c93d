"""One table that plugs every model into training, evaluation and generation the same way.

Each entry is an ``Adapter``: which module holds the model, what it trains on
(a text, cut into tokens, or a generated task), how the options become its
config, how a training batch is drawn, how one step computes (loss, grads),
how the validation set is scored, and which commands use a trained model.
The training loop (minilm.training.loop) and the command line only ever talk
to an adapter, so a new model is one new entry in ``ADAPTERS``.

    transformer   causal Transformer LM (§5.1): random windows, next-token loss
    mlm           masked LM (§3.2): random windows with 15% of positions masked
    ngram         MLP n-gram LM (§4.2): random (context, next token) pairs
    lstm          LSTM LM (§5.2): contiguous streams, state carried between batches
    seq2seq       encoder-decoder Transformer (§6.1) on a generated translation task
    las           Listen, Attend and Spell (§6.2) on spoken digits

What a run trains on is a ``Data``: the vocabulary (a tokenizer, or a task
that carries its vocabularies), the training and validation sets, and a
fingerprint a resumed run must match.  A "carry" is what a model hands from
one batch to the next (the LSTM's state) as a flat list of arrays, so a
checkpoint can store it; None for the others.

Adding a model: write its module (config dataclass, init_params, forward,
loss_and_grads), then one ``Adapter`` below with its functions and the
defaults of the options it uses; --model lists it, and training, resume,
checkpoints, ``eval`` and ``sample`` (or ``translate``) work with it
unchanged.  An option the adapter has no default for is refused for that
model with a clear message.
"""

from __future__ import annotations

import hashlib
import importlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace

import numpy as np

from minilm import generate
from minilm.training import checkpoint, data, evaluate
from minilm.training.corpora import load_text


@dataclass
class Data:
    """What a run trains and is validated on."""

    vocab: object  # a tokenizer (minilm.training.data) or a task carrying its vocabularies
    train: np.ndarray  # training token ids, or training examples (e.g. numbers)
    val: np.ndarray  # validation ids or examples, scored at every evaluation
    source: str  # where it came from, for messages
    fingerprint: str  # sha256 of the text or the task; a resumed run must see the same
    about: str  # one line for the log: sizes of the sets and the vocabulary
    val_final: np.ndarray | None = None  # scored at the end instead of ``val`` (all held-out examples)


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Adapter:
    name: str
    module: str  # where the model lives, imported when first used
    config_class: str  # the name of its config dataclass in that module
    about: str  # one line for --help
    prepare: Callable  # (opts, log, vocab or None) -> Data; vocab is the checkpoint's when resuming
    make_config: Callable  # (mod, opts, data) -> config
    batch: Callable  # (opts, data, step, rng) -> a batch
    step: Callable  # (mod, params, cfg, batch, rng, carry) -> (loss, grads, carry)
    evaluate: Callable  # (mod, params, cfg, examples, opts, vocab) -> {"loss", "perplexity", ...}
    vocab_from_dict: Callable  # (the checkpoint's "tokenizer" dict, opts) -> the vocabulary
    tokens_per_batch: Callable  # opts -> predicted tokens (or examples) per training batch
    defaults: dict = field(default_factory=dict)  # option values this model uses when none is given
    next_logits: Callable | None = None  # (mod, params, cfg, pad_id, cache) -> generate.generate's next_logits
    fill: Callable | None = None  # masked LM: (mod, params, cfg, ids, mask_id, rng, temperature, top_k, top_p)
    # -> ids
    specials: tuple = ()  # tokens the tokenizer must carry, e.g. ("[MASK]",)
    reads_text: bool = True  # trains on --data / --corpus, cut by --tokenizer
    unit: str = "tokens"  # what tokens_per_batch counts
    commands: tuple = ("sample", "eval")  # the commands that use a trained model of this kind

    def load(self):
        try:
            return importlib.import_module(self.module)
        except ModuleNotFoundError as e:
            raise ValueError(f"model {self.name!r} is not available in this installation ({e})") from None


def _logits(mod, params, cfg, **kw):
    return lambda x: mod.forward(params, cfg, x, **kw)[0]


def _eval_batch(opts) -> int:
    return max(4 * opts.batch_size, 32)


# ---- language models: a text, cut into tokens ----------------------------------------------------

def _text_data(min_tokens: Callable):
    """prepare() of a model trained on a text: read it, build (or reuse) the tokenizer, split it."""

    def prepare(o, log, vocab=None):
        text, source = load_text(o.data, o.corpus, log=log)
        if vocab is None:
            specials = ADAPTERS[o.model].specials
            vocab = (data.CharTokenizer.build(text, specials) if o.tokenizer == "char"
                     else data.BPETokenizer.train(text, o.vocab_size, specials) if o.tokenizer == "bpe"
                     else data.WordTokenizer.build(text, o.max_vocab, specials))
        train_ids, val_ids = data.split(vocab.encode(text), o.val_fraction)
        need = min_tokens(o)
        if min(len(train_ids), len(val_ids)) < need:
            raise ValueError(f"the text is too short: {len(train_ids)} training and {len(val_ids)} validation "
                             f"tokens, --model {o.model} with these options needs at least {need} in each")
        return Data(vocab, train_ids, val_ids, source, text_sha256(text),
                    f"{len(train_ids):,} training and {len(val_ids):,} validation tokens, "
                    f"vocabulary {vocab.vocab_size}")

    return prepare


def _tokenizer_from_dict(d, o):
    return data.tokenizer_from_dict(d)


def _char_level(vocab) -> bool:
    return getattr(vocab, "kind", None) == "char"


def _per_character(r: dict, ids: np.ndarray, vocab) -> dict:
    """BPE: add bits per character of the text the predicted tokens (the last r["tokens"] of ids) spell."""
    if getattr(vocab, "kind", None) != "bpe":
        return r
    return evaluate.per_character(r, vocab.n_chars(ids[len(ids) - r["tokens"]:]))


# ---- causal Transformer LM (§5.1) ---------------------------------------------------------------

def _transformer_config(mod, o, d):
    return mod.TransformerConfig(vocab_size=d.vocab.vocab_size, block_size=o.block_size, n_layer=o.layers,
                                 n_head=o.heads, n_embd=o.width, ffn=o.activation, norm=o.norm, pos=o.positions,
                                 scale_embed=o.scale_embed, tie_weights=o.tie_weights, causal=o.causal,
                                 dropout=o.dropout, head_bias=o.head_bias)


def _windows(o, d, step, rng):
    return data.random_windows(d.train, o.batch_size, o.block_size, rng)


def _transformer_step(mod, params, cfg, batch, rng, carry):
    x, y = batch
    loss, grads = mod.loss_and_grads(params, cfg, x, y, train=True, rng=rng)
    return loss, grads, None


def _transformer_eval(mod, params, cfg, ids, o, vocab):
    r = evaluate.evaluate_windows(_logits(mod, params, cfg), ids, min(cfg.block_size, o.block_size), _eval_batch(o),
                                  _char_level(vocab))  # o.block_size: a GPT-2 fine-tuned on shorter windows
    return _per_character(r, ids, vocab)


def _transformer_next(mod, params, cfg, pad_id, cache=True):
    """KV cache (or, cache=False, the window recomputed each step); past block_size both crop to the
    last block_size // 2 tokens (minilm.generate), so the two give the same text.  A model without the
    causal mask (--no-causal-mask, the text's bug) lets old positions read new ones, so nothing computed
    for them stays valid: it always recomputes."""
    keep = max(1, cfg.block_size // 2)
    if cache and cfg.causal:
        return generate.cached_next(lambda x, past: mod.forward_cached(params, cfg, x, past), cfg.block_size, keep)
    return generate.window_next(_logits(mod, params, cfg), cfg.block_size, keep)


# ---- masked LM (§3.2): the same Transformer, bidirectional, with [MASK] as the last id -------------

def _mlm():
    return importlib.import_module("minilm.mlm")  # mask_tokens and mlm_config; the model is minilm.transformer


def _mlm_config(mod, o, d):
    return _mlm().mlm_config(d.vocab.vocab_size - 1, block_size=o.block_size, n_layer=o.layers, n_head=o.heads,
                             n_embd=o.width, ffn=o.activation, norm=o.norm, pos=o.positions,
                             scale_embed=o.scale_embed, tie_weights=o.tie_weights, dropout=o.dropout)


def _mlm_step(mod, params, cfg, batch, rng, carry):
    x, _ = batch
    inputs, targets = _mlm().mask_tokens(x, cfg, rng)  # 15% of positions chosen, 80/10/10
    loss, grads = mod.loss_and_grads(params, cfg, inputs, targets, train=True, rng=rng)
    return loss, grads, None


def _mlm_eval(mod, params, cfg, ids, o, vocab):
    def mask_fn(x, rng):
        return (*_mlm().mask_tokens(x, cfg, rng), mod.IGNORE_INDEX)

    return evaluate.evaluate_masked(_logits(mod, params, cfg), mask_fn, ids, cfg.block_size, _eval_batch(o))


def _mlm_fill(mod, params, cfg, ids, mask_id, rng, temperature, top_k, top_p=None):
    if len(ids) > cfg.block_size:
        raise ValueError(f"the prompt has {len(ids)} tokens; this masked LM reads at most {cfg.block_size}")
    return generate.fill_masks(_logits(mod, params, cfg), ids, mask_id, rng, temperature, top_k, top_p)


# ---- MLP n-gram LM (§4.2) -----------------------------------------------------------------------

def _ngram_config(mod, o, d):
    return mod.NgramConfig(vocab_size=d.vocab.vocab_size, context=o.context, n_embd=o.width, n_hidden=o.hidden,
                           activation=o.activation)


def _contexts(o, d, step, rng):
    return data.random_contexts(d.train, o.context, o.batch_size, rng)


def _ngram_step(mod, params, cfg, batch, rng, carry):
    ctx, y = batch
    loss, grads = mod.loss_and_grads(params, cfg, ctx, y)
    return loss, grads, None


def _ngram_eval(mod, params, cfg, ids, o, vocab):
    r = evaluate.evaluate_contexts(_logits(mod, params, cfg), ids, cfg.context, 1024, _char_level(vocab))
    return _per_character(r, ids, vocab)


def _ngram_next(mod, params, cfg, pad_id, cache=True):  # reads its N tokens: nothing to cache
    return generate.context_next(_logits(mod, params, cfg), cfg.context, pad_id)


# ---- LSTM LM (§5.2) -----------------------------------------------------------------------------

def _lstm_config(mod, o, d):
    return mod.LSTMConfig(vocab_size=d.vocab.vocab_size, n_embd=o.width, n_hidden=o.hidden, n_layer=o.layers)


def _streams(o, d, step, rng):
    return data.stream_windows(d.train, o.batch_size, o.block_size, step)


def _flat(state):
    """[(h, c) per layer] -> [h0, c0, h1, c1, ...]"""
    return [a for pair in state for a in pair]


def _pairs(carry):
    return [(carry[i], carry[i + 1]) for i in range(0, len(carry), 2)]


def _lstm_step(mod, params, cfg, batch, rng, carry):
    x, y, fresh = batch
    state = None if fresh or not carry else _pairs(carry)
    loss, grads, final = mod.loss_grads_and_state(params, cfg, x, y, state=state)
    return loss, grads, _flat(final)


def _lstm_stepper(mod, params, cfg):
    def step(x, state):
        logits, cache = mod.forward(params, cfg, x, state=state)
        return logits, mod.final_state(cache)

    return step


def _lstm_eval(mod, params, cfg, ids, o, vocab):
    r = evaluate.evaluate_streams(_lstm_stepper(mod, params, cfg), ids, o.block_size, _eval_batch(o),
                                  _char_level(vocab))
    return _per_character(r, ids, vocab)


def _lstm_next(mod, params, cfg, pad_id, cache=True):  # its carried state is its cache
    return generate.recurrent_next(_lstm_stepper(mod, params, cfg))


# ---- encoder-decoder Transformer on a generated task (§6.1): minilm.training.translation --------------

def _translation():
    return importlib.import_module("minilm.training.translation")


def _seq2seq_data(o, log, vocab=None):
    T = _translation()
    task = T.make_task(o)
    if vocab is not None and vocab.to_dict() != task.to_dict():
        raise ValueError("the checkpoint's vocabularies are not those of its task")
    meta = json.dumps({**task.to_dict(), "max_number": o.max_number, "held_out": o.held_out, "seed": o.seed})
    return Data(task, task.train, T.eval_sample(task, o), f"numbers 0 .. {o.max_number:,} ({o.direction})",
                text_sha256(meta), f"{len(task.train):,} training and {len(task.held):,} held-out numbers",
                val_final=task.held)


def _seq2seq_config(mod, o, d):
    return _translation().make_config(o, d.vocab)


def _numbers_batch(o, d, step, rng):
    return d.vocab.encode(rng.choice(d.train, size=o.batch_size))


def _seq2seq_step(mod, params, cfg, batch, rng, carry):
    src, tgt = batch
    loss, grads = mod.loss_and_grads(params, cfg, src, tgt, train=cfg.dropout > 0, rng=rng)
    return loss, grads, None


def _seq2seq_eval(mod, params, cfg, numbers, o, task):
    return _translation().score(params, cfg, task, numbers)


def _task_from_dict(d, o):
    task = _translation().make_task(o)
    if d != task.to_dict():
        raise ValueError("its vocabularies are not those of its task")
    return task


# ---- Listen, Attend and Spell on spoken digits (§6.2): minilm.training.speech --------------------------

def _speech():
    return importlib.import_module("minilm.training.speech")


def _las_data(o, log, vocab=None):
    task = _speech().make_task(o, log)
    if vocab is not None and vocab.to_dict() != task.vocab.to_dict():
        raise ValueError("the checkpoint's characters are not those of its task")
    return Data(task.vocab, task.train, task.val, task.source, task.fingerprint,
                f"{len(task.train):,} training utterances, {len(task.val):,} test utterances and "
                f"{len(task.val.singles.feats)} test recordings")


def _las_config(mod, o, d):
    return mod.LASConfig(vocab_size=d.vocab.vocab_size, listener_hidden=o.hidden, n_pyramid=o.layers,
                         speller_hidden=o.width)


def _las_batch(o, d, step, rng):
    return _speech().length_batch(d.train, o.batch_size, rng, o.spec_augment)


def _las_step(mod, params, cfg, batch, rng, carry):
    x, lengths, y_in, y_out = batch
    loss, grads = mod.loss_and_grads(params, cfg, x, lengths, y_in, y_out)
    return loss, grads, None


def _las_eval(mod, params, cfg, ev, o, vocab):
    return _speech().score(params, cfg, ev, o.max_digits)


def _characters_from_dict(d, o):
    vocab = _speech().Vocab()
    if d != vocab.to_dict():
        raise ValueError("its characters are not those of the digits task")
    return vocab


_TEXT_LM = dict(steps=1000, batch_size=32, block_size=32, layers=2, heads=4, width=64, lr=6e-3, dropout=0.0,
                norm="post", activation="relu", positions="sinusoidal", scale_embed=True, tie_weights=False)

ADAPTERS: dict[str, Adapter] = {
    a.name: a
    for a in [
        Adapter("transformer", "minilm.transformer", "TransformerConfig", "causal Transformer LM (§5.1)",
                _text_data(lambda o: o.block_size + 1), _transformer_config, _windows, _transformer_step,
                _transformer_eval, _tokenizer_from_dict, tokens_per_batch=lambda o: o.batch_size * o.block_size,
                defaults={**_TEXT_LM, "causal": True, "head_bias": True}, next_logits=_transformer_next),
        Adapter("mlm", "minilm.transformer", "TransformerConfig", "masked LM, a bidirectional Transformer (§3.2)",
                _text_data(lambda o: o.block_size + 1), _mlm_config, _windows, _mlm_step, _mlm_eval,
                _tokenizer_from_dict, tokens_per_batch=lambda o: o.batch_size * o.block_size,
                defaults=dict(_TEXT_LM), fill=_mlm_fill, specials=("[MASK]",)),
        Adapter("ngram", "minilm.ngram", "NgramConfig", "MLP n-gram LM (§4.2)",
                _text_data(lambda o: o.context + 1), _ngram_config, _contexts, _ngram_step, _ngram_eval,
                _tokenizer_from_dict, tokens_per_batch=lambda o: o.batch_size,
                defaults=dict(steps=2000, batch_size=64, context=5, width=24, hidden=256, lr=3e-3,
                              activation="tanh"),
                next_logits=_ngram_next),
        Adapter("lstm", "minilm.lstm_lm", "LSTMConfig", "LSTM LM (§5.2)",
                _text_data(lambda o: o.batch_size * (o.block_size + 1)), _lstm_config, _streams, _lstm_step,
                _lstm_eval, _tokenizer_from_dict, tokens_per_batch=lambda o: o.batch_size * o.block_size,
                defaults=dict(steps=1000, batch_size=16, block_size=32, layers=1, width=64, hidden=128, lr=3e-3),
                next_logits=_lstm_next),
        Adapter("seq2seq", "minilm.seq2seq", "Seq2SeqConfig",
                "encoder-decoder Transformer translating number words (§6.1; --task numbers)",
                _seq2seq_data, _seq2seq_config, _numbers_batch, _seq2seq_step, _seq2seq_eval, _task_from_dict,
                tokens_per_batch=lambda o: o.batch_size,
                defaults=dict(task="numbers", direction="en-zh", max_number=99_999, held_out=0.1,
                              share_vocab=False, eval_size=1000, steps=400, batch_size=64, layers=2, heads=4,
                              width=64, dropout=0.0, norm="post", activation="relu", lr=3e-3, weight_decay=0.0),
                reads_text=False, unit="examples", commands=("translate", "eval")),
        Adapter("las", "minilm.las", "LASConfig",
                "Listen, Attend and Spell on spoken digits (§6.2; --task digits; --layers pyramidal BLSTMs)",
                _las_data, _las_config, _las_batch, _las_step, _las_eval, _characters_from_dict,
                tokens_per_batch=lambda o: o.batch_size,
                defaults=dict(task="digits", data_dir=None, held_out_speaker=None, max_digits=3, train_size=6000,
                              eval_size=300, spec_augment=False,
                              steps=1500, batch_size=32, layers=2, hidden=64, width=128, lr=3e-3,
                              weight_decay=0.0),
                reads_text=False, unit="utterances", commands=("transcribe", "eval")),
    ]
}

COMMAND_OF = {"sample": "minilm sample --checkpoint {path} --prompt TEXT",
              "translate": "minilm translate --checkpoint {path} TEXT",
              "transcribe": "minilm transcribe --checkpoint {path} FILE.wav",
              "eval": "minilm eval --checkpoint {path}"}


def get(name: str) -> Adapter:
    if name not in ADAPTERS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(ADAPTERS)}")
    return ADAPTERS[name]


def pad_id(tokenizer) -> int:
    """The token that stands before the start of a text: a newline, else a space, else id 0."""
    for s in ("\n", " "):
        if s in tokenizer.stoi:
            return tokenizer.stoi[s]
    return 0


def n_params(params: dict[str, np.ndarray]) -> int:
    return int(sum(p.size for p in params.values()))


# ---- using a trained model ----------------------------------------------------------------------

@dataclass
class Run:
    """A loaded checkpoint: everything needed to evaluate it, sample from it or continue training it."""

    adapter: Adapter
    module: object
    cfg: object
    params: dict
    tokenizer: object  # the vocabulary: a tokenizer, or the task of a seq2seq model
    opts: SimpleNamespace  # the options it was trained with
    meta: dict
    opt_state: dict | None
    carry: list | None
    path: str = ""

    def require(self, command: str) -> None:
        """A one-line error, naming the command that serves this checkpoint, unless ``command`` does."""
        if command not in self.adapter.commands:
            use = " or ".join(f"`{COMMAND_OF[c].format(path=self.path)}`" for c in self.adapter.commands)
            raise ValueError(f"{self.path} holds a {self.adapter.name} model ({self.adapter.about}), which "
                             f"`minilm {command}` does not serve; use {use}")


def load_run(path) -> Run:
    """Load and check a checkpoint; a ValueError names the problem (corrupt, or not matching its own config)."""
    ck = checkpoint.load(path)
    meta = ck["meta"]
    if meta["model"] not in ADAPTERS:
        raise ValueError(f"{path} holds a model this minilm does not know ({meta['model']!r}; it knows "
                         f"{', '.join(ADAPTERS)})")
    try:
        adapter = get(meta["model"])
        mod = adapter.load()
        cfg = getattr(mod, adapter.config_class)(**meta["config"])
        opts = SimpleNamespace(**meta["options"])
        tok = adapter.vocab_from_dict(meta["tokenizer"], opts)
    except (TypeError, KeyError, AttributeError, ValueError) as e:
        raise ValueError(f"corrupt checkpoint {path}: its metadata does not describe a model ({e})") from None
    if cfg.vocab_size != tok.vocab_size:
        raise ValueError(f"corrupt checkpoint {path}: its vocabulary has {tok.vocab_size} tokens, its config "
                         f"{cfg.vocab_size}")
    fresh = mod.init_params(cfg, np.random.default_rng(0))
    checkpoint.check_params(ck["params"], fresh, path)
    params = {k: ck["params"][k].astype(fresh[k].dtype) for k in fresh}
    return Run(adapter, mod, cfg, params, tok, opts, meta, ck["opt_state"], ck["carry"] or None, str(path))


def transformer_run(cfg, params, tokenizer, path: str) -> Run:
    """A causal Transformer that comes from elsewhere than a checkpoint (a GPT-2 directory, minilm.hub.gpt2)."""
    adapter = get("transformer")
    return Run(adapter, adapter.load(), cfg, params, tokenizer, SimpleNamespace(block_size=cfg.block_size), {},
               None, None, str(path))


def evaluate_run(run: Run, ids: np.ndarray) -> dict:
    """Loss, perplexity (and bits per character, accuracy, exact match where they apply) over all of ``ids``."""
    return run.adapter.evaluate(run.module, run.params, run.cfg, ids, run.opts, run.tokenizer)


def validation_data(run: Run, log=print) -> Data:
    """The data the run was validated on, rebuilt from its options; a ValueError if its text has changed."""
    d = run.adapter.prepare(run.opts, log, run.tokenizer)
    if d.fingerprint != run.meta.get("text_sha256"):
        raise ValueError(f"the training data ({d.source}) has changed since {run.path} was trained")
    return d


def format_scores(r: dict) -> str:
    """One line: the loss and perplexity, and whichever of the other scores the evaluation gave."""
    what = "masked-token loss" if "accuracy" in r else "loss"
    parts = [f"{what} {r['loss']:.4f}", f"perplexity {r['perplexity']:.3f}"]
    for key, label, fmt in (("bits_per_char", "bits/char", ".4f"), ("accuracy", "accuracy", ".3f"),
                            ("exact_match", "exact match", ".4f"), ("edit_distance", "edit distance", ".3f"),
                            ("word_error_rate", "word error rate", ".4f"),
                            ("digit_accuracy", "single-digit accuracy", ".4f")):
        if key in r:
            parts.append(f"{label} {r[key]:{fmt}}")
    return ", ".join(parts)


def sample_run(run: Run, prompt: str = "", n_tokens: int = 200, temperature: float = 1.0, top_k: int | None = None,
               seed: int = 0, top_p: float | None = None, cache: bool = True) -> str:
    """Text from the model: the prompt and ``n_tokens`` more (the masked LM: the prompt with each [MASK] filled).

    ``cache=False`` recomputes a Transformer's window at every step instead of keeping its keys and values."""
    run.require("sample")
    rng = np.random.default_rng(seed)
    tok, a = run.tokenizer, run.adapter
    if n_tokens < 0:
        raise ValueError(f"the number of tokens must be >= 0, got {n_tokens}")
    generate.check_sampling(temperature, top_k, top_p)
    if a.fill is not None:
        ids = tok.encode(prompt)
        return tok.decode(a.fill(run.module, run.params, run.cfg, ids, tok.stoi["[MASK]"], rng, temperature, top_k,
                                top_p))
    ids = tok.encode(prompt) if prompt else np.array([pad_id(tok)], dtype=np.int64)
    if len(ids) == 0:
        raise ValueError("the prompt holds no token the vocabulary knows")
    out = generate.generate(a.next_logits(run.module, run.params, run.cfg, pad_id(tok), cache), ids, n_tokens, rng,
                            temperature, top_k, top_p)
    return tok.decode(out if prompt else out[1:])

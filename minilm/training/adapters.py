"""One table that plugs every model into training, evaluation and generation the same way.

Each entry is an ``Adapter``: which module holds the model, how the command
line's options become its config, how a training batch is drawn, how one
step computes (loss, grads), how the whole validation split is scored, and
how it generates.  Training (minilm.training.loop), evaluation and sampling
(minilm.cli) only ever talk to an adapter, so a new model is one new entry
in ``ADAPTERS``.

    transformer   causal Transformer LM (§5.1): random windows, next-token loss
    mlm           masked LM (§3.2): random windows with 15% of positions masked
    ngram         MLP n-gram LM (§4.2): random (context, next token) pairs
    lstm          LSTM LM (§5.2): contiguous streams, state carried between batches

Options arrive as a plain object with attributes (minilm.training.loop.TrainOptions).
A "carry" is what a model hands from one batch to the next (the LSTM's state)
as a flat list of arrays, so a checkpoint can store it; None for the others.

Adding a model: write its module (config dataclass, init_params, forward,
loss_and_grads), then one ``Adapter`` below with its functions and the
defaults of the options it uses; --model lists it, and training, resume,
checkpoints, ``eval`` and ``sample`` work with it unchanged.  An option the
adapter has no default for is refused for that model with a clear message.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace

import numpy as np

from minilm import generate
from minilm.training import checkpoint, data, evaluate


@dataclass(frozen=True)
class Adapter:
    name: str
    module: str  # where the model lives, imported when first used
    config_class: str  # the name of its config dataclass in that module
    about: str  # one line for --help
    make_config: Callable  # (mod, opts, vocab_size) -> config
    batch: Callable  # (opts, ids, step, rng) -> a batch
    step: Callable  # (mod, params, cfg, batch, rng, carry) -> (loss, grads, carry)
    evaluate: Callable  # (mod, params, cfg, ids, opts, char_level) -> {"loss", "perplexity", ...}
    next_logits: Callable | None  # (mod, params, cfg, pad_id, cache) -> generate.generate's next_logits
    tokens_per_batch: Callable  # opts -> predicted tokens per training batch
    min_tokens: Callable  # opts -> fewest tokens a split needs
    defaults: dict = field(default_factory=dict)  # option values this model uses when none is given
    specials: tuple = ()  # tokens the tokenizer must carry, e.g. ("[MASK]",)
    fill: Callable | None = None  # masked LM: (mod, params, cfg, ids, mask_id, rng, temperature, top_k) -> ids

    def load(self):
        try:
            return importlib.import_module(self.module)
        except ModuleNotFoundError as e:
            raise ValueError(f"model {self.name!r} is not available in this installation ({e})") from None


def _logits(mod, params, cfg, **kw):
    return lambda x: mod.forward(params, cfg, x, **kw)[0]


def _eval_batch(opts) -> int:
    return max(4 * opts.batch_size, 32)


# ---- causal Transformer LM (§5.1) ---------------------------------------------------------------

def _transformer_config(mod, o, V):
    return mod.TransformerConfig(vocab_size=V, block_size=o.block_size, n_layer=o.layers, n_head=o.heads,
                                 n_embd=o.width, ffn=o.activation, norm=o.norm, pos=o.positions,
                                 scale_embed=o.scale_embed, tie_weights=o.tie_weights, causal=o.causal,
                                 dropout=o.dropout)


def _windows(o, ids, step, rng):
    return data.random_windows(ids, o.batch_size, o.block_size, rng)


def _transformer_step(mod, params, cfg, batch, rng, carry):
    x, y = batch
    loss, grads = mod.loss_and_grads(params, cfg, x, y, train=True, rng=rng)
    return loss, grads, None


def _transformer_eval(mod, params, cfg, ids, o, char_level):
    return evaluate.evaluate_windows(_logits(mod, params, cfg), ids, cfg.block_size, _eval_batch(o), char_level)


def _transformer_next(mod, params, cfg, pad_id, cache=True):
    """KV cache (or, cache=False, the window recomputed each step); past block_size both crop to the
    last block_size // 2 tokens (minilm.generate), so the two give the same text."""
    keep = max(1, cfg.block_size // 2)
    if cache:
        return generate.cached_next(lambda x, past: mod.forward_cached(params, cfg, x, past), cfg.block_size, keep)
    return generate.window_next(_logits(mod, params, cfg), cfg.block_size, keep)


# ---- masked LM (§3.2): the same Transformer, bidirectional, with [MASK] as the last id -------------

def _mlm():
    return importlib.import_module("minilm.mlm")  # mask_tokens and mlm_config; the model is minilm.transformer


def _mlm_config(mod, o, V):
    return _mlm().mlm_config(V - 1, block_size=o.block_size, n_layer=o.layers, n_head=o.heads, n_embd=o.width,
                          ffn=o.activation, norm=o.norm, pos=o.positions, scale_embed=o.scale_embed,
                          tie_weights=o.tie_weights, dropout=o.dropout)


def _mlm_step(mod, params, cfg, batch, rng, carry):
    x, _ = batch
    inputs, targets = _mlm().mask_tokens(x, cfg, rng)  # 15% of positions chosen, 80/10/10
    loss, grads = mod.loss_and_grads(params, cfg, inputs, targets, train=True, rng=rng)
    return loss, grads, None


def _mlm_eval(mod, params, cfg, ids, o, char_level):
    def mask_fn(x, rng):
        return (*_mlm().mask_tokens(x, cfg, rng), mod.IGNORE_INDEX)

    return evaluate.evaluate_masked(_logits(mod, params, cfg), mask_fn, ids, cfg.block_size, _eval_batch(o))


def _mlm_fill(mod, params, cfg, ids, mask_id, rng, temperature, top_k):
    if len(ids) > cfg.block_size:
        raise ValueError(f"the prompt has {len(ids)} tokens; this masked LM reads at most {cfg.block_size}")
    return generate.fill_masks(_logits(mod, params, cfg), ids, mask_id, rng, temperature, top_k)


# ---- MLP n-gram LM (§4.2) -----------------------------------------------------------------------

def _ngram_config(mod, o, V):
    return mod.NgramConfig(vocab_size=V, context=o.context, n_embd=o.width, n_hidden=o.hidden,
                           activation=o.activation)


def _contexts(o, ids, step, rng):
    return data.random_contexts(ids, o.context, o.batch_size, rng)


def _ngram_step(mod, params, cfg, batch, rng, carry):
    ctx, y = batch
    loss, grads = mod.loss_and_grads(params, cfg, ctx, y)
    return loss, grads, None


def _ngram_eval(mod, params, cfg, ids, o, char_level):
    return evaluate.evaluate_contexts(_logits(mod, params, cfg), ids, cfg.context, 1024, char_level)


def _ngram_next(mod, params, cfg, pad_id, cache=True):  # reads its N tokens: nothing to cache
    return generate.context_next(_logits(mod, params, cfg), cfg.context, pad_id)


# ---- LSTM LM (§5.2) -----------------------------------------------------------------------------

def _lstm_config(mod, o, V):
    return mod.LSTMConfig(vocab_size=V, n_embd=o.width, n_hidden=o.hidden, n_layer=o.layers)


def _streams(o, ids, step, rng):
    return data.stream_windows(ids, o.batch_size, o.block_size, step)


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


def _lstm_eval(mod, params, cfg, ids, o, char_level):
    return evaluate.evaluate_streams(_lstm_stepper(mod, params, cfg), ids, o.block_size, _eval_batch(o), char_level)


def _lstm_next(mod, params, cfg, pad_id, cache=True):  # its carried state is its cache
    return generate.recurrent_next(_lstm_stepper(mod, params, cfg))


ADAPTERS: dict[str, Adapter] = {
    a.name: a
    for a in [
        Adapter("transformer", "minilm.transformer", "TransformerConfig", "causal Transformer LM (§5.1)",
                _transformer_config, _windows, _transformer_step, _transformer_eval, _transformer_next,
                tokens_per_batch=lambda o: o.batch_size * o.block_size, min_tokens=lambda o: o.block_size + 1,
                defaults=dict(steps=1000, batch_size=32, block_size=32, layers=2, heads=4, width=64, lr=6e-3,
                              dropout=0.0, norm="post", activation="relu", positions="sinusoidal",
                              scale_embed=True, tie_weights=False, causal=True)),
        Adapter("mlm", "minilm.transformer", "TransformerConfig", "masked LM, a bidirectional Transformer (§3.2)",
                _mlm_config, _windows, _mlm_step, _mlm_eval, None,
                tokens_per_batch=lambda o: o.batch_size * o.block_size, min_tokens=lambda o: o.block_size + 1,
                defaults=dict(steps=1000, batch_size=32, block_size=32, layers=2, heads=4, width=64, lr=6e-3,
                              dropout=0.0, norm="post", activation="relu", positions="sinusoidal",
                              scale_embed=True, tie_weights=False),
                specials=("[MASK]",), fill=_mlm_fill),
        Adapter("ngram", "minilm.ngram", "NgramConfig", "MLP n-gram LM (§4.2)",
                _ngram_config, _contexts, _ngram_step, _ngram_eval, _ngram_next,
                tokens_per_batch=lambda o: o.batch_size, min_tokens=lambda o: o.context + 1,
                defaults=dict(steps=2000, batch_size=64, context=5, width=24, hidden=256, lr=3e-3,
                              activation="tanh")),
        Adapter("lstm", "minilm.lstm_lm", "LSTMConfig", "LSTM LM (§5.2)",
                _lstm_config, _streams, _lstm_step, _lstm_eval, _lstm_next,
                tokens_per_batch=lambda o: o.batch_size * o.block_size,
                min_tokens=lambda o: o.batch_size * (o.block_size + 1),
                defaults=dict(steps=1000, batch_size=16, block_size=32, layers=1, width=64, hidden=128, lr=3e-3)),
    ]
}


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
    """A loaded checkpoint: everything needed to evaluate it or sample from it."""

    adapter: Adapter
    module: object
    cfg: object
    params: dict
    tokenizer: object
    opts: SimpleNamespace  # the options it was trained with
    meta: dict
    opt_state: dict | None
    carry: list | None


def load_run(path) -> Run:
    """Load and check a checkpoint; a ValueError names the problem (corrupt, or not matching its own config)."""
    ck = checkpoint.load(path)
    meta = ck["meta"]
    try:
        adapter = get(meta["model"])
        mod = adapter.load()
        cfg = getattr(mod, adapter.config_class)(**meta["config"])
        tok = data.tokenizer_from_dict(meta["tokenizer"])
        opts = SimpleNamespace(**meta["options"])
    except (TypeError, KeyError, AttributeError) as e:
        raise ValueError(f"corrupt checkpoint {path}: its metadata does not describe a model ({e})") from None
    if cfg.vocab_size != tok.vocab_size:
        raise ValueError(f"corrupt checkpoint {path}: its vocabulary has {tok.vocab_size} tokens, its config "
                         f"{cfg.vocab_size}")
    fresh = mod.init_params(cfg, np.random.default_rng(0))
    checkpoint.check_params(ck["params"], fresh, path)
    params = {k: ck["params"][k].astype(fresh[k].dtype) for k in fresh}
    return Run(adapter, mod, cfg, params, tok, opts, meta, ck["opt_state"], ck["carry"] or None)


def evaluate_run(run: Run, ids: np.ndarray) -> dict:
    """Loss, perplexity (and bits per character / accuracy where they apply) over all of ``ids``."""
    if len(ids) < run.adapter.min_tokens(run.opts):
        raise ValueError(f"the text is too short to evaluate: {len(ids)} tokens, --model {run.adapter.name} "
                         f"needs at least {run.adapter.min_tokens(run.opts)}")
    return score(run.adapter, run.module, run.params, run.cfg, ids, run.opts, run.tokenizer)


def score(adapter, mod, params, cfg, ids, opts, tok) -> dict:
    """The adapter's evaluation of ``ids``; for BPE also bits per character of the text the targets spell."""
    r = adapter.evaluate(mod, params, cfg, ids, opts, tok.kind == "char")
    if tok.kind == "bpe" and "accuracy" not in r:  # the predicted tokens are the last r["tokens"] of ids
        r = evaluate.per_character(r, tok.n_chars(ids[len(ids) - r["tokens"]:]))
    return r


def sample_run(run: Run, prompt: str = "", n_tokens: int = 200, temperature: float = 1.0, top_k: int | None = None,
               seed: int = 0, cache: bool = True) -> str:
    """Text from the model: the prompt and ``n_tokens`` more (the masked LM: the prompt with each [MASK] filled).

    ``cache=False`` recomputes a Transformer's window at every step instead of keeping its keys and values."""
    rng = np.random.default_rng(seed)
    tok, a = run.tokenizer, run.adapter
    if n_tokens < 0:
        raise ValueError(f"the number of tokens must be >= 0, got {n_tokens}")
    if a.fill is not None:
        ids = tok.encode(prompt)
        return tok.decode(a.fill(run.module, run.params, run.cfg, ids, tok.stoi["[MASK]"], rng, temperature, top_k))
    ids = tok.encode(prompt) if prompt else np.array([pad_id(tok)], dtype=np.int64)
    if len(ids) == 0:
        raise ValueError("the prompt holds no token the vocabulary knows")
    out = generate.generate(a.next_logits(run.module, run.params, run.cfg, pad_id(tok), cache), ids, n_tokens, rng,
                            temperature, top_k)
    return tok.decode(out if prompt else out[1:])

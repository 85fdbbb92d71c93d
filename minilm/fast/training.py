"""``minilm train --fast``: the training loop's step done by the fast path, where a model has one.

``attach(session)`` moves a training session's parameters and AdamW moments
into a fast model's flat buffers and points the session at views of them,
so checkpoints keep their format (the same dict of named arrays, the same
optimiser state) and evaluation, sampling and resume see nothing different.
It returns the step function the loop calls instead of its own three
lines (loss and gradients, clipping, AdamW).  A configuration without a fast
path is refused (``unsupported`` says why, in one line) before anything is
written: ``--fast`` never silently trains the plain way.

    transformer   every configuration train offers (minilm.fast.gpt.supports): pre- or post-LN,
                  ReLU or GELU, either positions, dropout (masks drawn from the run's generator),
                  with or without the output bias (--init-from: GPT-2's head has none)
    mlm           the same, bidirectional; the batch masked by minilm.mlm.mask_tokens first
    ngram         every configuration (minilm.fast.ngram)
    lstm          every configuration (minilm.fast.lstm_lm); the carried state as in the plain adapter

Each step draws from the run's generator exactly what the plain adapter's
step draws, in the same order, so a run with --fast and one without see the
same batches, masks and dropout, and a checkpoint of either resumes in either.
(--model seq2seq and --model las have no fast path yet, so --fast refuses them.)
"""

from __future__ import annotations

import numpy as np

from minilm import mlm
from minilm.fast.gpt import FastTransformer, supports, why_not
from minilm.fast.lstm_lm import FastLSTMLM
from minilm.fast.ngram import FastNgram


def unsupported(o, cfg=None) -> str | None:
    """Why ``--fast`` cannot train this model and configuration, or None when it can (with ``cfg`` None:
    the model alone, asked before its data is read or downloaded)."""
    if o.model in ("transformer", "mlm"):
        return None if cfg is None or supports(cfg) else (
            f"--fast has no fast path for a Transformer with {why_not(cfg)}; drop --fast to train it the plain way")
    if o.model in ("ngram", "lstm"):
        return None
    return f"--fast has no fast path for --model {o.model} yet; drop --fast to train it the plain way"


class _FastForward:
    """The plain model's module, with ``forward`` answered by the fast Transformer (evaluation while
    training --fast): the windows go through in chunks of the training batch, in the training step's
    own buffers, so scoring the validation split adds no memory of its own.  Anything the fast forward
    does not do (padding masks, training mode) goes to the plain module, as does every other name."""

    def __init__(self, model, plain, batch_size: int):
        self.model, self.plain, self.batch_size = model, plain, batch_size

    def forward(self, params, cfg, idx, **kw):
        if kw.get("pad_mask") is not None or kw.get("train") or params is not self.model.params:
            return self.plain.forward(params, cfg, idx, **kw)
        n = self.batch_size
        return np.concatenate([self.model.logits(idx[i : i + n]) for i in range(0, len(idx), n)]), None

    def __getattr__(self, name):
        return getattr(self.plain, name)


class _FastLSTMForward:
    """The plain LSTM LM module, with ``forward`` answered by the fast one (evaluation while training
    --fast); the cache it returns holds only the final state, all that evaluation and sampling read."""

    def __init__(self, model, plain):
        self.model, self.plain = model, plain

    def forward(self, params, cfg, idx, state=None):
        if params is not self.model.params:
            return self.plain.forward(params, cfg, idx, state=state)
        logits, final = self.model.logits(idx, state)
        return logits, {"final_state": final}

    def __getattr__(self, name):
        return getattr(self.plain, name)


def _pairs(carry):
    """[h0, c0, h1, c1, ...] (a checkpoint's carry) -> [(h, c) per layer], as minilm.training.adapters."""
    return [(carry[i], carry[i + 1]) for i in range(0, len(carry), 2)]


def attach(s):
    """A function ``step(batch, lr, carry) -> (loss, gradient norm, carry)`` training ``s.params`` in place.

    Raises ValueError (one line, nothing written yet) for a configuration without a fast path.
    """
    why = unsupported(s.o, s.cfg)
    if why is not None:
        raise ValueError(why)
    fast_class = {"transformer": FastTransformer, "mlm": FastTransformer, "ngram": FastNgram, "lstm": FastLSTMLM}
    model = fast_class[s.o.model](s.cfg, s.params)
    model.load_opt_state(s.opt_state)
    s.params, s.opt_state = model.params, model.opt_state()
    o = s.o
    if o.model in ("transformer", "mlm"):
        s.mod = _FastForward(model, s.mod, o.batch_size)
    elif o.model == "lstm":
        s.mod = _FastLSTMForward(model, s.mod)
    hyper = dict(weight_decay=o.weight_decay, max_norm=o.clip)

    def step(batch, lr, carry):
        if o.model == "lstm":  # minilm.training.adapters._lstm_step, fast
            x, y, fresh = batch
            state = None if fresh or not carry else _pairs(carry)
            loss, norm, final = model.step(x, y, lr, o.beta1, o.beta2, state=state, **hyper)
            carry = [a for pair in final for a in pair]
        elif o.model in ("transformer", "mlm"):  # adapters._transformer_step / _mlm_step, fast
            x, y = batch
            if o.model == "mlm":
                x, y = mlm.mask_tokens(x, s.cfg, s.rng)  # 15% of positions chosen, 80/10/10
            (loss, norm), carry = model.step(x, y, lr, o.beta1, o.beta2, rng=s.rng, **hyper), None
        else:
            x, y = batch
            (loss, norm), carry = model.step(x, y, lr, o.beta1, o.beta2, **hyper), None
        s.opt_state["t"] = model.flat.t
        return loss, norm, carry

    return step

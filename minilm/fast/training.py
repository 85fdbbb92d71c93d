"""``minilm train --fast``: the training loop's step done by the fast path, where a model has one.

``attach(session)`` moves a training session's parameters and AdamW moments
into a fast model's flat buffers and points the session at views of them,
so checkpoints keep their format (the same dict of named arrays, the same
optimiser state) and evaluation, sampling and resume see nothing different.
It returns the step function the loop calls instead of its own three
lines (loss and gradients, clipping, AdamW).  A configuration without a fast
path is refused (``unsupported`` says why, in one line) before anything is
written: ``--fast`` never silently trains the plain way.

    transformer   pre-LN causal LM without dropout (minilm.fast.gpt.supports)
    ngram         every configuration (minilm.fast.ngram)
"""

from __future__ import annotations

from minilm.fast.gpt import FastTransformer, supports
from minilm.fast.ngram import FastNgram


def unsupported(o, cfg) -> str | None:
    """Why ``--fast`` cannot train this model and configuration, or None when it can."""
    if o.model == "transformer":
        return None if supports(cfg) else (
            f"--fast covers the Transformer with --norm pre and --dropout 0 only "
            f"(got --norm {cfg.norm}, --dropout {cfg.dropout}); drop --fast to train it the plain way")
    if o.model == "ngram":
        return None
    return f"--fast has no fast path for --model {o.model} yet; drop --fast to train it the plain way"


def attach(s):
    """A function ``step(batch, lr) -> (loss, gradient norm)`` training ``s.params`` in place.

    Raises ValueError (one line, nothing written yet) for a configuration without a fast path.
    """
    why = unsupported(s.o, s.cfg)
    if why is not None:
        raise ValueError(why)
    if s.o.model == "transformer":
        model = FastTransformer(s.cfg, s.params)
    else:
        model = FastNgram(s.cfg, s.params)
    model.load_opt_state(s.opt_state)
    s.params, s.opt_state = model.params, model.opt_state()
    o = s.o

    def step(batch, lr):
        x, y = batch
        loss, norm = model.step(x, y, lr, o.beta1, o.beta2, weight_decay=o.weight_decay, max_norm=o.clip)
        s.opt_state["t"] = model.flat.t
        return loss, norm

    return step

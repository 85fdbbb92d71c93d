"""``minilm train --fast``: the training loop's step done by the fast path, where a model has one.

``attach(session)`` moves a training session's parameters and AdamW moments
into a fast model's flat buffers and points the session at views of them,
so checkpoints keep their format (the same dict of named arrays, the same
optimiser state) and evaluation, sampling and resume see nothing different.
It returns the step function the loop calls instead of its own three
lines (loss and gradients, clipping, AdamW), or None when the model has no
fast path (then the loop trains as usual).

    transformer   pre-LN causal LM without dropout (minilm.fast.gpt.supports)
    ngram         every configuration (minilm.fast.ngram)
"""

from __future__ import annotations

from minilm.fast.gpt import FastTransformer, supports
from minilm.fast.ngram import FastNgram


def attach(s):
    """A function ``step(batch, lr) -> (loss, gradient norm)`` training ``s.params`` in place, or None."""
    if s.o.model == "transformer" and supports(s.cfg):
        model = FastTransformer(s.cfg, s.params)
    elif s.o.model == "ngram":
        model = FastNgram(s.cfg, s.params)
    else:
        return None
    model.load_opt_state(s.opt_state)
    s.params, s.opt_state = model.params, model.opt_state()
    o = s.o

    def step(batch, lr):
        x, y = batch
        loss, norm = model.step(x, y, lr, o.beta1, o.beta2, weight_decay=o.weight_decay, max_norm=o.clip)
        s.opt_state["t"] = model.flat.t
        return loss, norm

    return step

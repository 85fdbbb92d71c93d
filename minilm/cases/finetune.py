"""Gradient-check cases for the classifier on the masked-LM encoder (fine-tuning, §7).

Inputs as in minilm.cases.transformer: the first seeded draw whose analytic
gradient has every entry 0 or at least FLOOR, away from ReLU kinks; the key
biases b_k (exactly zero gradient) are checked in absolute terms.  Every
entry of every parameter, the encoder's included: the gradient reaches them
only through the [CLS] position.
"""

from __future__ import annotations

import numpy as np

from minilm import finetune as F
from minilm.cases import case
from minilm.cases.transformer import (
    away_from_kink,
    check_every_entry,
    draw_params,
    first_draw,
    is_key_bias,
    relu_inputs,
    resolvable,
)

G = "finetune"


class ClassifierCase:
    """Parameters, a padded batch with labels, and the loss of ``F.loss_and_grads`` as a function of the parameters."""

    def __init__(self, cfg, lengths=(4, 3, 2), dropout_seed=None):
        self.cfg, self.lengths, self.dropout_seed = cfg, lengths, dropout_seed

    def kwargs(self, pad):
        rng = None if self.dropout_seed is None else np.random.default_rng(self.dropout_seed)  # same masks each call
        return {"pad_mask": pad, "train": rng is not None, "rng": rng}

    def draw(self, r):
        """Parameters at the scales of minilm.cases.transformer's ModelCase; ids with [CLS] = 1 first."""
        params = draw_params(F.param_shapes(self.cfg), r, "cls.W")
        B, T = len(self.lengths), max(self.lengths)
        pad = np.arange(T)[None, :] < np.array(self.lengths)[:, None]  # (B, T)
        idx = np.where(pad, r.integers(2, self.cfg.vocab_size, (B, T)), 0)  # (B, T), 0 where padded
        idx[:, 0] = 1
        return params, idx, pad, r.integers(0, self.cfg.n_classes, B)

    def loss(self, drawn, params=None) -> float:
        _, idx, pad, y = drawn
        return F.loss(drawn[0] if params is None else params, self.cfg, idx, y, **self.kwargs(pad))

    def grads(self, drawn, params=None) -> dict:
        _, idx, pad, y = drawn
        return F.loss_and_grads(drawn[0] if params is None else params, self.cfg, idx, y, **self.kwargs(pad))[1]

    def inputs(self):
        def accept(drawn):
            params, idx, pad, _ = drawn
            _, cache = F.forward(params, self.cfg, idx, **self.kwargs(pad))
            return away_from_kink(relu_inputs(cache["enc"][4])) and resolvable(self.grads(drawn), is_key_bias)

        return first_draw(self.draw, accept)

    def check(self, drawn, grads_of=None, keys=None) -> dict[str, float]:
        """check_model on every entry of every parameter (or of ``keys``); the b_k in absolute terms.
        ``grads_of(drawn, params)`` replaces the model's gradient (broken variants in the tests)."""
        grads_of = grads_of or self.grads
        return check_every_entry(lambda p: self.loss(drawn, p), lambda p: grads_of(drawn, p), drawn[0], keys)


def post_ln() -> ClassifierCase:
    """The text's block (post-LN, ReLU, sinusoidal scaled by sqrt(C)), [MASK] = 5, two classes."""
    return ClassifierCase(F.ClassifierConfig(vocab_size=6, n_classes=2, block_size=6, n_layer=1, n_head=2, n_embd=4,
                                             mask_token=5))


def pre_ln() -> ClassifierCase:
    """Pre-LN with final LayerNorm, GELU, learned positions, dropout, three classes."""
    return ClassifierCase(F.ClassifierConfig(vocab_size=6, n_classes=3, block_size=6, n_layer=1, n_head=2, n_embd=4,
                                             norm="pre", ffn="gelu", pos="learned", scale_embed=False, dropout=0.2,
                                             mask_token=5), dropout_seed=1)


@case(G, "classifier, post-LN: every entry")
def _post():
    m = post_ln()
    return m.check(m.inputs())


@case(G, "classifier, pre-LN: every entry")
def _pre():
    m = pre_ln()
    return m.check(m.inputs())

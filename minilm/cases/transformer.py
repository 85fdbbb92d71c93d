"""Gradient-check cases for positional encodings, the feed-forward network, the
Transformer block and the two Transformer language models (§3.2, §5.1).

Which inputs.  A centred difference carries the rounding of the loss, a few
units of 1e-16 divided by 2h = 2e-5, so about 1e-11 to 1e-10 in absolute
terms, plus a truncation error O(h^2) that grows with the curvature.  An
exact gradient entry g therefore shows a relative error of ~1e-10 / |g|, and
entries below ~1e-3 cannot be trusted to 1e-7.  In a whole model such
entries arise by chance wherever a sum nearly cancels.  So inputs are drawn
from seeds 0, 1, ... and the first draw is kept whose *analytic* gradient has
every entry exactly 0 or at least FLOOR, and (ReLU) whose pre-activations all
lie at least KINK from 0 (a 1e-5 step cannot cross the kink).  The numerical
gradient is never consulted for the choice, so it cannot favour inputs on
which a wrong backward happens to agree; the tests run deliberately broken
backwards on the very same inputs and see them fail.  The key bias b_k has an
exactly zero gradient and is checked in absolute terms (cases.attention).

With two or more layers, a few entries of the first layer's W_q and W_k stay
below FLOOR in almost every draw.  So the every-entry check of a whole model
uses one layer, and deeper models are checked along random directions
(``ModelCase.check_directions``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from minilm import transformer as TR
from minilm.attention import causal_mask, key_padding_mask
from minilm.block import block_backward, block_forward, block_shapes, ffn_backward, ffn_forward
from minilm.cases import case
from minilm.cases.attention import zero_gradient
from minilm.gradcheck import check_model, check_pair, numerical_gradient, rel_error
from minilm.mlm import mask_tokens, mlm_config
from minilm.positional import (
    learned_position_backward,
    learned_position_forward,
    sinusoidal_backward,
    sinusoidal_forward,
)

FLOOR = 1e-3  # smallest |gradient entry| accepted: resolved to ~1e-8 (module docstring)
KINK = 1e-2  # smallest |ReLU pre-activation| allowed


def resolvable(grads, skip: Callable[[str], bool] = lambda k: False) -> bool:
    """Every entry of every gradient (but those skipped) is exactly 0 or at least FLOOR in magnitude."""
    return all(np.all((g == 0) | (np.abs(g) >= FLOOR)) for k, g in grads.items() if not skip(k))


def is_key_bias(name: str) -> bool:
    return name.endswith("b_k")


def first_draw(draw: Callable[[np.random.Generator], object], accept: Callable[[object], bool], tries: int = 500):
    """The first ``draw(default_rng(seed))``, seed = 0, 1, ..., that ``accept`` takes."""
    for seed in range(tries):
        drawn = draw(np.random.default_rng(seed))
        if accept(drawn):
            return drawn
    raise RuntimeError(f"no acceptable inputs in {tries} draws")


def relu_inputs(caches) -> list[np.ndarray]:
    """The ReLU pre-activations of block caches (GELU blocks have none that matter)."""
    return [c["ffn"][1] for c in caches if c["ffn"] is not None and c["ffn"][2] == "relu"]


def away_from_kink(arrays) -> bool:
    return all(np.abs(a).min() >= KINK for a in arrays)


# ---- positions and feed-forward ----


def draw_params(shapes: dict[str, tuple[int, ...]], r: np.random.Generator, doubled: str) -> dict[str, np.ndarray]:
    """Matrices N(0, 1/rows) as at init; vectors N(0, 1/4); LayerNorm gains uniform in [0.75, 2.25]; the
    output matrix ``doubled``: at init scale a tiny model's loss is so flat that few draws have every
    gradient entry above FLOOR."""
    params = {}
    for k, s in shapes.items():
        if k.endswith("gamma"):
            params[k] = r.uniform(0.75, 2.25, s)  # (C,)
        elif len(s) == 2:
            params[k] = r.standard_normal(s) / np.sqrt(s[0])  # (rows, cols)
        else:
            params[k] = 0.5 * r.standard_normal(s)  # (n,)
    params[doubled] *= 2
    return params


def in_float32(params: dict) -> bool:
    """check_model's last call (the dtype check) passes float32 parameters: it needs the gradient too."""
    return any(v.dtype == np.float32 for v in params.values())


def check_every_entry(loss: Callable, grads: Callable, params: dict, keys=None) -> dict[str, float]:
    """check_model on every entry of every parameter (or of ``keys``) but the key biases b_k, whose
    gradient is exactly 0 and is checked in absolute terms.  ``loss(p)`` and ``grads(p)``: the gradient
    is read once, at the unperturbed parameters; every perturbed point needs only the loss."""
    calls = []

    def gradient_once(p):
        calls.append(p)
        return loss(p), grads(p) if len(calls) == 1 or in_float32(p) else {}

    keys = list(params) if keys is None else keys
    errors = check_model(gradient_once, params, keys=[k for k in keys if not is_key_bias(k)])
    p64 = calls[0]  # check_model's float64 copy
    g = grads(p64)
    for k in keys:
        if is_key_bias(k):
            errors[f"d{k}=0 (abs)"] = zero_gradient(lambda: loss(p64), p64[k], g[k])
    return errors


@case("position", "sinusoidal, scaled by sqrt(C)")
def _sinusoidal_scaled():
    return check_pair(sinusoidal_forward, sinusoidal_backward, [np.random.default_rng(0).standard_normal((2, 5, 6))],
                      ["x"], {"scale_embed": True})


@case("position", "sinusoidal, unscaled")
def _sinusoidal():
    return check_pair(sinusoidal_forward, sinusoidal_backward, [np.random.default_rng(0).standard_normal((2, 5, 6))],
                      ["x"], {"scale_embed": False})


@case("position", "learned positions, T < block_size")
def _learned():
    r = np.random.default_rng(0)
    return check_pair(learned_position_forward, learned_position_backward,
                      [r.standard_normal((2, 3, 4)), r.standard_normal((5, 4))], ["x", "wpe"], {"scale_embed": True})


def ffn_inputs(activation: str):
    """x (2, 3, 4), W1 (4, 16), b1, W2 (16, 4), b2; resolvable, and for ReLU away from the kink."""

    def draw(r):
        return [r.standard_normal((2, 3, 4)), r.standard_normal((4, 16)) / 2, r.standard_normal(16) / 2,
                r.standard_normal((16, 4)) / 4, r.standard_normal(4)]

    def accept(inputs):
        y, cache = ffn_forward(*inputs, activation)
        grads = ffn_backward(np.random.default_rng(0).standard_normal(y.shape), cache)  # check_pair's dout
        kinkless = activation != "relu" or away_from_kink([inputs[0] @ inputs[1] + inputs[2]])
        return kinkless and resolvable(dict(enumerate(grads)))

    return first_draw(draw, accept)


FFN_NAMES = ["x", "W1", "b1", "W2", "b2"]


@case("transformer", "feed-forward: ReLU §5.1")
def _ffn_relu():
    return check_pair(ffn_forward, ffn_backward, ffn_inputs("relu"), FFN_NAMES, {"activation": "relu"})


@case("transformer", "feed-forward: GELU")
def _ffn_gelu():
    return check_pair(ffn_forward, ffn_backward, ffn_inputs("gelu"), FFN_NAMES, {"activation": "gelu"})


# ---- the block, as a function of x and its parameter arrays ----


class BlockCase:
    """A block as ``forward(x, *arrays) -> (y, cache)`` and ``backward(dy, cache) -> (dx, *darrays)``,
    the form check_pair takes; the arrays are the block's parameters in ``block_shapes`` order."""

    def __init__(self, cfg, mask=None, dropout_seed: int | None = None):
        self.cfg, self.mask, self.dropout_seed = cfg, mask, dropout_seed
        self.shapes = block_shapes(cfg.n_embd, ffn=cfg.ffn != "none")
        self.keys = list(self.shapes)

    def forward(self, x, *arrays):
        rng = None if self.dropout_seed is None else np.random.default_rng(self.dropout_seed)  # same mask each call
        params = dict(zip(self.keys, arrays, strict=True))
        return block_forward(x, params, "", self.cfg, self.mask, train=rng is not None, rng=rng)

    def backward(self, dy, cache, block_backward=block_backward):
        dx, grads = block_backward(dy, cache)
        return (dx, *[grads[k] for k in self.keys])

    def inputs(self, B: int = 2, T: int = 4):
        """x and N(0, 1) parameters (weights scaled by 1/sqrt(fan_in)), resolvable and away from ReLU kinks."""

        def draw(r):
            shapes = self.shapes.values()
            arrays = [r.standard_normal(s) / (np.sqrt(s[0]) if len(s) == 2 else 1) for s in shapes]
            return [r.standard_normal((B, T, self.cfg.n_embd))] + arrays

        def accept(inputs):
            y, cache = self.forward(*inputs)
            grads = self.backward(np.random.default_rng(0).standard_normal(y.shape), cache)  # check_pair's dout
            named = dict(zip(["x"] + self.keys, grads, strict=True))
            return away_from_kink(relu_inputs([cache])) and resolvable(named, is_key_bias)

        return first_draw(draw, accept)

    def check(self, inputs, backward=None, only=None) -> dict[str, float]:
        """check_pair on x and every parameter but attn.b_k, which zero_gradient checks in absolute terms.

        ``only``: check just these names (a quick look at a broken variant).
        """
        backward = backward or self.backward
        names = ["x"] + self.keys
        i = names.index("attn.b_k")
        wrt = [j for j, n in enumerate(names) if j != i and (only is None or n in only)]
        errors = check_pair(self.forward, backward, inputs, names, wrt=wrt)
        if only is not None:
            return errors
        out, cache = self.forward(*inputs)
        dout = np.random.default_rng(1).standard_normal(out.shape)
        errors["attn.b_k=0 (abs)"] = zero_gradient(lambda: self.forward(*inputs)[0], inputs[i],
                                                   backward(dout, cache)[i], dout)
        return errors


def block_config(**kwargs) -> TR.TransformerConfig:
    return TR.TransformerConfig(**{"vocab_size": 5, "block_size": 8, "n_layer": 1, "n_head": 2, "n_embd": 4} | kwargs)


def post_ln_block() -> BlockCase:
    return BlockCase(block_config(), causal_mask(4))


def pre_ln_block() -> BlockCase:
    pad = key_padding_mask(np.array([[1, 1, 1, 1], [1, 1, 0, 0]], bool))
    return BlockCase(block_config(norm="pre", ffn="gelu", dropout=0.2), pad & causal_mask(4), dropout_seed=3)


@case("transformer", "block: post-LN, ReLU, causal §5.1")
def _block_post():
    b = post_ln_block()
    return b.check(b.inputs())


@case("transformer", "block: pre-LN, GELU, pad, dropout")
def _block_pre():
    b = pre_ln_block()
    return b.check(b.inputs())


def attention_only_block(norm: str = "pre") -> BlockCase:
    """No feed-forward sublayer (ffn="none"): the blocks of an attention-only model."""
    return BlockCase(block_config(norm=norm, ffn="none"), causal_mask(4))


@case("transformer", "block: attention only, pre-LN")
def _block_attention_only():
    b = attention_only_block()
    return b.check(b.inputs())


# ---- the whole models ----


class ModelCase:
    """A model, a batch and its loss as a function of the parameters alone.

    Two checks.  ``check``: check_model on every entry of every parameter,
    for one layer (with two, some entries of the first layer's W_q and W_k
    stay below FLOOR in all but a few draws, and the draws that pass are
    sharp enough for the O(h^2) error to show).  ``check_directions``: for
    any depth, the derivative along random directions d of the parameters,
    (L(p + t d) - L(p - t d)) / 2t against sum_k g_k . d_k, which sums every
    entry, so it is large and resolved far below the tolerance; a wrong
    gradient anywhere shows unless its error is orthogonal to every d.
    """

    def __init__(self, cfg, B: int = 2, T: int = 3, lengths=None, mlm_rate: float | None = None, dropout_seed=None):
        self.cfg, self.B, self.T, self.lengths, self.mlm_rate = cfg, B, T, lengths, mlm_rate
        self.dropout_seed = dropout_seed

    def kwargs(self, pad_mask):
        rng = None if self.dropout_seed is None else np.random.default_rng(self.dropout_seed)  # same masks each call
        return {"pad_mask": pad_mask, "train": rng is not None, "rng": rng}

    def draw(self, r):
        """Random parameters, a batch and its targets.

        Matrices N(0, 1/rows) as at init; vectors N(0, 1/4); LayerNorm gains
        uniform in [0.75, 2.25] and the output matrix doubled: at init scale
        the tiny model's loss is so flat that few draws have every gradient
        entry above FLOOR.  The causal LM counts the last real position only
        (the others are IGNORE_INDEX), which keeps the mean over few terms.
        """
        cfg, B, T = self.cfg, self.B, self.T
        params = draw_params(TR.param_shapes(cfg), r, "wte" if cfg.tie_weights else "lm_head.W")
        lengths = np.full(B, T) if self.lengths is None else np.array(self.lengths)  # (B,)
        pad = None if self.lengths is None else np.arange(T)[None, :] < lengths[:, None]  # (B, T)
        if self.mlm_rate is None:  # the next token
            seq = r.integers(0, cfg.vocab_size, (B, T + 1))  # (B, T + 1)
            idx, targets = seq[:, :-1], seq[:, 1:].copy()  # (B, T) each
            targets[np.arange(T)[None, :] != lengths[:, None] - 1] = TR.IGNORE_INDEX  # (B, T)
        else:  # the masked tokens
            idx, targets = mask_tokens(r.integers(0, cfg.mask_token, (B, T)), cfg, r, pad_mask=pad,
                                       rate=self.mlm_rate)
        return params, idx, targets, pad

    def loss(self, drawn, params=None) -> float:
        _, idx, targets, pad = drawn
        return TR.loss(drawn[0] if params is None else params, self.cfg, idx, targets, **self.kwargs(pad))

    def loss_and_grads(self, drawn, params=None):
        _, idx, targets, pad = drawn
        return TR.loss_and_grads(drawn[0] if params is None else params, self.cfg, idx, targets, **self.kwargs(pad))

    def inputs(self, every_entry: bool = True):
        """The first draw away from ReLU kinks and (for ``check``) with every gradient entry 0 or >= FLOOR."""

        def accept(drawn):
            params, idx, targets, pad = drawn
            logits, cache = TR.forward(params, self.cfg, idx, **self.kwargs(pad))
            kinkless = away_from_kink(relu_inputs(cache["blocks"]))
            return kinkless and (not every_entry or resolvable(self.loss_and_grads(drawn)[1], is_key_bias))

        return first_draw(self.draw, accept)

    def check(self, drawn, backward=None, max_entries=None) -> dict[str, float]:
        """check_model on every entry of every parameter but the b_k, which zero_gradient checks in absolute terms.

        check_model reads the gradient at its first call (the unperturbed
        parameters) and only the loss after it, so later calls skip the backward.
        ``backward(drawn, params) -> grads`` replaces the model's (broken
        variants, for which ``max_entries`` random entries per parameter do).
        """
        grads_of = backward or (lambda drawn, p: self.loss_and_grads(drawn, p)[1])
        calls = []

        def gradient_once(p):
            calls.append(p)
            return (self.loss(drawn, p), grads_of(drawn, p) if len(calls) == 1 or in_float32(p) else {})

        keys = [k for k in drawn[0] if not is_key_bias(k)]
        errors = check_model(gradient_once, drawn[0], keys=keys, max_entries=max_entries)
        params = calls[0]  # check_model's float64 copy, restored after each perturbation
        grads = grads_of(drawn, params)
        for k in params:
            if is_key_bias(k):
                errors[f"d{k}=0 (abs)"] = zero_gradient(lambda: self.loss(drawn, params), params[k], grads[k])
        return errors

    def check_directions(self, drawn, n: int = 3, backward=None) -> dict[str, float]:
        """Relative error of the derivative along n random directions (seeded), each one number."""
        params = {k: np.array(v, dtype=np.float64) for k, v in drawn[0].items()}
        grads = (backward or (lambda d, p: self.loss_and_grads(d, p)[1]))(drawn, params)
        errors = {}
        for i in range(n):
            r = np.random.default_rng(100 + i)
            d = {k: r.standard_normal(v.shape) for k, v in params.items()}  # a direction in parameter space
            norm = np.sqrt(sum(float(np.sum(v * v)) for v in d.values()))
            d = {k: v / norm for k, v in d.items()}  # unit length: the step t moves the parameters by |t|
            t = np.zeros(1)  # the step along d, perturbed by numerical_gradient

            def along(t=t, d=d):
                return self.loss(drawn, {k: params[k] + t[0] * d[k] for k in params})

            num = numerical_gradient(along, t)  # (1,)
            analytic = np.array([sum(float(np.sum(grads[k] * d[k])) for k in params)])  # (1,)
            errors[f"along d{i}"] = rel_error(analytic, num)
        return errors


def text_lm(n_layer: int = 1) -> ModelCase:
    """The text's model (post-LN, ReLU, sinusoidal, sqrt(C) scaling, untied), with the causal mask."""
    return ModelCase(TR.TransformerConfig(vocab_size=5, block_size=6, n_layer=n_layer, n_head=2, n_embd=4))


def pre_ln_lm(n_layer: int = 1) -> ModelCase:
    """Every option the text does not use: pre-LN and final LN, GELU, learned positions, tied weights, dropout."""
    cfg = TR.TransformerConfig(vocab_size=5, block_size=6, n_layer=n_layer, n_head=2, n_embd=4, norm="pre",
                               ffn="gelu", pos="learned", scale_embed=False, tie_weights=True, dropout=0.2)
    return ModelCase(cfg, lengths=[3, 2], dropout_seed=1)


def masked_lm(n_layer: int = 1) -> ModelCase:
    """Bidirectional, [MASK] = id 4, 80/10/10 at rate 0.5 (a few chosen positions in tiny sequences), padding."""
    return ModelCase(mlm_config(4, block_size=6, n_layer=n_layer, n_head=2, n_embd=4), lengths=[3, 2], mlm_rate=0.5)


@case("models", "causal LM (text's): every entry")
def _text_lm():
    m = text_lm()
    return m.check(m.inputs())


@case("models", "masked LM (padded): every entry")
def _masked_lm():
    m = masked_lm()
    return m.check(m.inputs())


@case("models", "causal LM (pre-LN...): every entry")
def _pre_ln_lm():
    m = pre_ln_lm()
    return m.check(m.inputs())


def attention_only_lm(n_layer: int = 2) -> ModelCase:
    """Attention-only blocks (no feed-forward), pre-LN, learned positions: the model of in-context learning."""
    cfg = TR.TransformerConfig(vocab_size=5, block_size=6, n_layer=n_layer, n_head=2, n_embd=4, norm="pre",
                               ffn="none", pos="learned", scale_embed=False)
    return ModelCase(cfg)


@case("models", "attention-only LM (2 layers): 3 directions")
def _attention_only_lm():
    m = attention_only_lm()
    return m.check_directions(m.inputs(every_entry=False))


@case("models", "causal LM (3 layers): 3 directions")
def _text_lm_deep():
    m = text_lm(n_layer=3)
    return m.check_directions(m.inputs(every_entry=False))


@case("models", "masked LM (3 layers): 3 directions")
def _masked_lm_deep():
    m = masked_lm(n_layer=3)
    return m.check_directions(m.inputs(every_entry=False))

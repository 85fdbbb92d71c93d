"""Gradient-check cases for the encoder-decoder Transformer (§6.1): the decoder block and the whole model.

Inputs are chosen as in minilm.cases.transformer: the first seeded draw whose
analytic gradient has every entry 0 or at least FLOOR in magnitude and whose
ReLU pre-activations lie at least KINK from 0.  The key biases b_k (of the
encoder's self-attention and of the decoder's self- and cross-attention)
have an exactly zero gradient and are checked in absolute terms.

The model cases check every entry of every parameter of a model with one
encoder and one decoder block, and, with two decoder blocks, the derivative
along a random direction inside each parameter and along random directions
of all of them at once (see ModelCase).
"""

from __future__ import annotations

import numpy as np

from minilm import seq2seq as S
from minilm.attention import causal_mask, key_padding_mask
from minilm.cases import case
from minilm.cases.attention import zero_gradient
from minilm.cases.transformer import away_from_kink, check_every_entry, draw_params, first_draw, is_key_bias, resolvable
from minilm.gradcheck import check_pair, numerical_gradient, rel_error

G = "seq2seq"


def _relu_inputs(caches):
    return [c["ffn"][1] for c in caches if c["ffn"][2] == "relu"]


# ---- the decoder block, as a function of y, mem and its parameter arrays ----

class DecoderBlockCase:
    """``forward(y, mem, *arrays) -> (out, cache)`` and ``backward(dout, cache) -> (dy, dmem, *darrays)``."""

    def __init__(self, cfg, lengths=(3, 2), T: int = 3, dropout_seed: int | None = None):
        self.cfg, self.T, self.dropout_seed = cfg, T, dropout_seed
        S_len = max(lengths)
        self.keep = np.arange(S_len)[None, :] < np.array(lengths)[:, None]  # (B, S)
        self.keys = list(S.decoder_block_shapes(cfg.n_embd))

    def forward(self, y, mem, *arrays):
        rng = None if self.dropout_seed is None else np.random.default_rng(self.dropout_seed)  # same masks each call
        params = dict(zip(self.keys, arrays, strict=True))
        return S.decoder_block_forward(y, mem, params, "", self.cfg, causal_mask(self.T),
                                       key_padding_mask(self.keep), train=rng is not None, rng=rng)

    def backward(self, dout, cache, block_backward=None):
        dy, dmem, grads = (block_backward or S.decoder_block_backward)(dout, cache)
        return (dy, dmem, *[grads[k] for k in self.keys])

    def inputs(self):
        B, S_len, C = *self.keep.shape, self.cfg.n_embd

        def draw(r):
            arrays = [r.uniform(0.75, 2.25, s) if k.endswith("gamma") else
                      r.standard_normal(s) / (np.sqrt(s[0]) if len(s) == 2 else 2)
                      for k, s in S.decoder_block_shapes(C).items()]
            return [r.standard_normal((B, self.T, C)), r.standard_normal((B, S_len, C))] + arrays

        def accept(inputs):
            out, cache = self.forward(*inputs)
            grads = self.backward(np.random.default_rng(0).standard_normal(out.shape), cache)  # check_pair's dout
            named = dict(zip(["y", "mem"] + self.keys, grads, strict=True))
            named["mem"] = named["mem"][self.keep]  # padded memory rows get exactly zero gradient
            return away_from_kink(_relu_inputs([cache])) and resolvable(named, is_key_bias)

        return first_draw(draw, accept)

    def check(self, inputs, backward=None) -> dict[str, float]:
        backward = backward or self.backward
        names = ["y", "mem"] + self.keys
        skip = [i for i, n in enumerate(names) if is_key_bias(n)]
        errors = check_pair(self.forward, backward, inputs, names, wrt=[i for i in range(len(names)) if i not in skip])
        inputs = [np.array(a, dtype=np.float64) for a in inputs]
        out, cache = self.forward(*inputs)
        dout = np.random.default_rng(1).standard_normal(out.shape)
        analytic = backward(dout, cache)
        for i in skip:
            errors[f"{names[i]}=0 (abs)"] = zero_gradient(lambda: self.forward(*inputs)[0], inputs[i], analytic[i],
                                                          dout)
        return errors


def decoder_config(**kwargs) -> S.Seq2SeqConfig:
    return S.Seq2SeqConfig(**{"vocab_size": 5, "src_vocab_size": 5, "block_size": 6, "n_layer": 1, "n_dec_layer": 1,
                              "n_head": 2, "n_embd": 4} | kwargs)


@case(G, "decoder block, post-LN, ReLU")
def _dec_post():
    b = DecoderBlockCase(decoder_config())
    return b.check(b.inputs())


@case(G, "decoder block, pre-LN+GELU+dropout")
def _dec_pre():
    b = DecoderBlockCase(decoder_config(norm="pre", ffn="gelu", dropout=0.2), dropout_seed=2)
    return b.check(b.inputs())


# ---- the whole model ----

class ModelCase:
    """Parameters, a padded batch (src, tgt) and the loss of ``S.loss_and_grads`` as a function of the parameters.

    As minilm.cases.transformer.ModelCase: ``check`` compares every entry of
    every parameter (one encoder and one decoder block: deeper, some entries
    stay below FLOOR in almost every draw); ``check_directions`` compares the
    derivative along random directions, of the whole parameter vector or of
    each parameter on its own, for any depth (two decoder blocks: the encoder
    output's gradient sums two cross-attentions).
    """

    def __init__(self, cfg, src_lengths=(3, 2), tgt_lengths=(4, 3), dropout_seed=None):
        self.cfg, self.src_lengths, self.tgt_lengths, self.dropout_seed = cfg, src_lengths, tgt_lengths, dropout_seed

    def kwargs(self):
        rng = None if self.dropout_seed is None else np.random.default_rng(self.dropout_seed)  # same masks each call
        return {"train": rng is not None, "rng": rng}

    def draw(self, r):
        """Parameters at the scales of minilm.cases.transformer's ModelCase (LayerNorm gains in
        [0.75, 2.25], the output matrix doubled); src and tgt padded with 0."""
        params = draw_params(S.param_shapes(self.cfg), r, "head.W")
        src = np.zeros((len(self.src_lengths), max(self.src_lengths)), np.int64)  # (B, S)
        for b, n in enumerate(self.src_lengths):
            src[b, :n] = r.integers(1, self.cfg.src_vocab_size, n)
        tgt = np.zeros((len(self.tgt_lengths), max(self.tgt_lengths) + 1), np.int64)  # (B, T + 1)
        for b, n in enumerate(self.tgt_lengths):
            tgt[b, : n + 1] = r.integers(1, self.cfg.vocab_size, n + 1)
        return params, src, tgt

    def loss(self, drawn, params=None) -> float:
        _, src, tgt = drawn
        return S.loss(drawn[0] if params is None else params, self.cfg, src, tgt, **self.kwargs())

    def grads(self, drawn, params=None) -> dict:
        _, src, tgt = drawn
        return S.loss_and_grads(drawn[0] if params is None else params, self.cfg, src, tgt, **self.kwargs())[1]

    def inputs(self, every_entry: bool = True):
        """The first draw away from ReLU kinks and (for ``check``) with every gradient entry 0 or >= FLOOR."""

        def accept(drawn):
            params, src, tgt = drawn
            _, cache = S.forward(params, self.cfg, src, tgt[:, :-1], **self.kwargs())
            kinkless = away_from_kink(_relu_inputs(cache["enc"]["blocks"] + cache["dec"]["blocks"]))
            return kinkless and (not every_entry or resolvable(self.grads(drawn), is_key_bias))

        return first_draw(self.draw, accept)

    def check(self, drawn, grads_of=None, keys=None) -> dict[str, float]:
        """check_model on every entry of every parameter (or of ``keys``) but the b_k, checked in absolute terms.

        The gradient is read once, at the unperturbed parameters; every perturbed
        point needs only the loss.  ``grads_of(drawn, params)`` replaces the
        model's gradient (broken variants in the tests).
        """
        grads_of = grads_of or self.grads
        return check_every_entry(lambda p: self.loss(drawn, p), lambda p: grads_of(drawn, p), drawn[0], keys)

    def check_directions(self, drawn, n: int = 3, grads_of=None, per_parameter: bool = False) -> dict[str, float]:
        """Relative error of the derivative along seeded random unit directions d:
        (L(p + t d) - L(p - t d)) / 2t against sum_k g_k . d_k.

        n directions in the whole parameter space, or with ``per_parameter`` one
        direction inside each parameter (one number per parameter; the b_k, whose
        gradient is exactly 0, checked entry by entry in absolute terms).
        """
        params = {k: np.array(v, dtype=np.float64) for k, v in drawn[0].items()}
        grads = (grads_of or self.grads)(drawn, params)
        groups = [[k] for k in params if not is_key_bias(k)] if per_parameter else [list(params)] * n
        errors = {}
        for i, keys in enumerate(groups):
            r = np.random.default_rng(100 + i)
            d = {k: r.standard_normal(params[k].shape) for k in keys}  # a direction in parameter space
            norm = np.sqrt(sum(float(np.sum(v * v)) for v in d.values()))
            d = {k: v / norm for k, v in d.items()}  # unit length
            t = np.zeros(1)  # the step along d, perturbed by numerical_gradient

            def along(t=t, d=d):
                return self.loss(drawn, params | {k: params[k] + t[0] * d[k] for k in d})

            num = numerical_gradient(along, t)  # (1,)
            analytic = np.array([sum(float(np.sum(grads[k] * d[k])) for k in d)])  # (1,)
            errors[f"d{keys[0]} along d" if per_parameter else f"along d{i}"] = rel_error(analytic, num)
        if per_parameter:
            for k in params:
                if is_key_bias(k):
                    errors[f"d{k}=0 (abs)"] = zero_gradient(lambda: self.loss(drawn, params), params[k], grads[k])
        return errors


def text_model(n_dec_layer: int = 1) -> ModelCase:
    """Post-LN, ReLU, sinusoidal positions scaled by sqrt(C), separate vocabularies (V_src = 6, V = 5)."""
    return ModelCase(S.Seq2SeqConfig(vocab_size=5, src_vocab_size=6, block_size=6, n_layer=1,
                                     n_dec_layer=n_dec_layer, n_head=2, n_embd=4))


def shared_pre_ln_model(n_dec_layer: int = 1) -> ModelCase:
    """Pre-LN with final LayerNorms, GELU, one shared embedding table, dropout."""
    return ModelCase(S.Seq2SeqConfig(vocab_size=6, src_vocab_size=6, block_size=6, n_layer=1,
                                     n_dec_layer=n_dec_layer, n_head=2, n_embd=4, norm="pre", ffn="gelu",
                                     share_embeddings=True, dropout=0.2), tgt_lengths=(3, 2), dropout_seed=1)


@case(G, "model, separate vocab: every entry")
def _text_model():
    m = text_model()
    return m.check(m.inputs())


@case(G, "model, shared, 2 dec: each param")
def _shared_model():
    m = shared_pre_ln_model(n_dec_layer=2)
    return m.check_directions(m.inputs(every_entry=False), per_parameter=True)


@case(G, "model, 2 dec: 3 directions")
def _deep_model():
    m = text_model(n_dec_layer=2)
    return m.check_directions(m.inputs(every_entry=False))

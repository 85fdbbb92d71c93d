"""Gradient-check cases for Listen, Attend and Spell (§6.2): the bidirectional layer over padded rows, the
pyramid's reshape, the listener, one speller step (attention and the fed-back context), the whole speller,
and the whole model.

Every batch has rows of unequal length, so the padding paths (the per-row
reversal, the zeroed outputs, the attention mask) are inside each check.
Inputs of the small pieces are the first seeded draw whose analytic gradients
are resolvable (every entry 0 or at least FLOOR, see minilm/cases/ngram.py),
and every entry is checked.  The listener and the whole model have too many
entries for that: in no draw are they all above FLOOR, and an entry of 1e-6
cannot be resolved to 1e-7 by a difference of 1e-5 steps.  They are checked
along one seeded random direction d inside each parameter,
(f(p + t d) - f(p - t d)) / 2t against g . d, which sums every entry's error.
"""

from __future__ import annotations

import numpy as np

from minilm import las
from minilm.cases import case
from minilm.cases.ngram import first_resolvable
from minilm.gradcheck import check_pair, numerical_gradient, rel_error

G = "las"
LENGTHS = np.array([5, 3])  # two rows of unequal length: T = 5 and T_b = 3
TINY = las.LASConfig(vocab_size=5, n_mels=3, listener_hidden=2, n_pyramid=1, speller_hidden=3, n_embd=2,
                     attention=2)


def pair_grads(forward, backward, inputs, seed: int = 0):
    """The analytic gradients check_pair compares (the same upstream gradient, drawn from ``seed``)."""
    out, cache = forward(*inputs)
    grads = backward(np.random.default_rng(seed).standard_normal(out.shape), cache)
    return list(grads) if isinstance(grads, tuple) else [grads]


def lstm_weights(r, D, Hd, scale=0.7):
    return [scale * r.standard_normal((D, 4 * Hd)), scale * r.standard_normal((Hd, 4 * Hd)),
            scale * r.standard_normal(4 * Hd)]


def check_directions(forward, backward, inputs, names, seed: int = 0) -> dict[str, float]:
    """For each float input a_i, a seeded random unit direction d_i: the centred difference of
    sum(forward(.., a_i + t d_i, ..) * dout) at t = 0 against sum(da_i * d_i)."""
    inputs = [np.array(a, dtype=np.float64) if isinstance(a, np.ndarray) else a for a in inputs]
    out, cache = forward(*inputs)
    dout = np.random.default_rng(seed).standard_normal(out.shape)
    grads = backward(dout, cache)
    errors = {}
    for i, name in enumerate(names):
        d = np.random.default_rng(100 + i).standard_normal(inputs[i].shape)
        d /= np.linalg.norm(d)
        t = np.zeros(1)

        def along(i=i, d=d, t=t):
            moved = list(inputs)
            moved[i] = inputs[i] + t[0] * d
            return np.sum(forward(*moved)[0] * dout)

        num = numerical_gradient(along, t)  # (1,)
        errors[f"d{name}/d"] = rel_error(np.array([np.sum(grads[i] * d)]), num)
    return errors


# ---- the bidirectional layer and the pyramid ----

def flat_blstm(x, *w, lengths=LENGTHS):
    return las.blstm_forward(x, lengths, tuple(w[:3]), tuple(w[3:]))


def flat_blstm_backward(dout, cache, backward=None):
    dx, dfwd, dbwd = (backward or las.blstm_backward)(dout, cache)
    return (dx, *dfwd, *dbwd)


BLSTM_NAMES = ["x", "Wx_fwd", "Wh_fwd", "b_fwd", "Wx_bwd", "Wh_bwd", "b_bwd"]


def blstm_inputs(D=3, Hd=2):
    def draw(r):
        return [r.standard_normal((len(LENGTHS), int(LENGTHS.max()), D))] + lstm_weights(r, D, Hd) + \
            lstm_weights(r, D, Hd)

    def grads_of(x):
        g = pair_grads(flat_blstm, flat_blstm_backward, x)
        return [g[0][las.time_mask(LENGTHS, g[0].shape[1])]] + g[1:]  # frames past a row's end: exactly 0

    return first_resolvable(draw, grads_of)


def flat_pyramid(h, lengths=LENGTHS):
    out, _, cache = las.pyramid_forward(h, lengths)
    return out, cache


@case(G, "BLSTM, padded rows")
def _blstm():
    return check_pair(flat_blstm, flat_blstm_backward, blstm_inputs(), BLSTM_NAMES)


@case(G, "pyramid reshape, odd T")
def _pyramid():
    return check_pair(flat_pyramid, las.pyramid_backward, [np.random.default_rng(0).standard_normal((2, 5, 3))],
                      ["h"])


# ---- parameter dicts as positional arrays ----

def draw_params(cfg, r, keys=None):
    """N(0, 0.8^2) entries: gates in their sensitive range, gradients well above roundoff."""
    return {k: 0.8 * r.standard_normal(s) for k, s in las.param_shapes(cfg).items() if keys is None or k in keys}


def listener_keys(cfg):
    return [k for k in las.param_shapes(cfg) if k.startswith("listen")]


def speller_keys(cfg):
    return [k for k in las.param_shapes(cfg) if not k.startswith("listen")]


class Listener:
    def __init__(self, cfg=TINY, lengths=LENGTHS):
        self.cfg, self.lengths, self.keys = cfg, lengths, listener_keys(cfg)

    def forward(self, x, *arrays):
        h, _, cache = las.listener_forward(dict(zip(self.keys, arrays, strict=True)), self.cfg, x, self.lengths)
        return h, cache

    def backward(self, dh, cache):
        dx, grads = las.listener_backward(dh, cache)
        return (dx, *[grads[k] for k in self.keys])

    def inputs(self, seed: int = 0):
        r = np.random.default_rng(seed)
        p = draw_params(self.cfg, r, self.keys)
        return [r.standard_normal((len(self.lengths), int(self.lengths.max()), self.cfg.n_mels))] + \
            [p[k] for k in self.keys]

    def check(self, backward=None):
        return check_directions(self.forward, backward or self.backward, self.inputs(), ["x"] + self.keys)


@case(G, "listener, BLSTM + pBLSTM: each")
def _listener():
    return Listener().check()


# ---- one speller step ----

STEP_NAMES = ["ax", "ctx_prev", "h_prev", "c_prev", "Wx_c", "Wh", "W_q", "K", "H"]
STEP_MASK = las.time_mask(np.array([3, 2]), 3)[:, None, :]  # (B, 1, U): the second row has U_b = 2


def flat_step(*inputs, mask=STEP_MASK):
    s, cell, ctx, cache = las.speller_step_forward(*inputs, mask)
    return np.concatenate([s, cell, ctx], axis=1), cache  # (B, 2Hs + 2Hd)


def flat_step_backward(dout, cache, backward=None):
    Hs = cache[1].shape[1]  # h_prev
    return (backward or las.speller_step_backward)(dout[:, :Hs], dout[:, Hs : 2 * Hs], dout[:, 2 * Hs :], cache)


def step_inputs(B=2, U=3, C2=4, Hs=3, A=2):
    def draw(r):
        return [r.standard_normal((B, 4 * Hs)), r.standard_normal((B, C2)), r.standard_normal((B, Hs)),
                r.standard_normal((B, Hs)), 0.7 * r.standard_normal((C2, 4 * Hs)),
                0.7 * r.standard_normal((Hs, 4 * Hs)), r.standard_normal((Hs, A)), r.standard_normal((B, U, A)),
                r.standard_normal((B, U, C2))]

    def grads_of(x):
        g = pair_grads(flat_step, flat_step_backward, x)
        keep = STEP_MASK[:, 0]  # (B, U)
        return g[:7] + [g[7][keep], g[8][keep]]  # keys and values past a row's end: exactly 0

    return first_resolvable(draw, grads_of)


@case(G, "speller step: attention, context")
def _step():
    return check_pair(flat_step, flat_step_backward, step_inputs(), STEP_NAMES)


# ---- the whole speller over a transcript ----

U_LENGTHS = np.array([3, 2])  # listener states of the two rows
Y_IN = np.array([[0, 1, 2, 3], [0, 4, 1, 0]])  # (B, S), <eos> = 0 as the start symbol
Y_OUT = np.array([[1, 2, 3, 0], [4, 1, 0, las.IGNORE_INDEX]])  # (B, S), the second row one shorter


class Speller:
    def __init__(self, cfg=TINY, U_lengths=U_LENGTHS, y_in=Y_IN):
        self.cfg, self.U_lengths, self.y_in, self.keys = cfg, U_lengths, y_in, speller_keys(cfg)

    def forward(self, H, *arrays):
        return las.speller_forward(dict(zip(self.keys, arrays, strict=True)), self.cfg, H, self.U_lengths,
                                   self.y_in)

    def backward(self, dlogits, cache, backward=None):
        dH, grads = (backward or las.speller_backward)(dlogits, cache)
        return (dH, *[grads[k] for k in self.keys])

    def inputs(self):
        def draw(r):
            p = draw_params(self.cfg, r, self.keys)
            H = r.standard_normal((len(self.U_lengths), int(self.U_lengths.max()), 2 * self.cfg.listener_hidden))
            return [H] + [p[k] for k in self.keys]

        def grads_of(x):
            g = pair_grads(self.forward, self.backward, x)
            dembed = g[1 + self.keys.index("embed")][np.unique(self.y_in)]  # rows never looked up: exactly 0
            return [g[0][las.time_mask(self.U_lengths, g[0].shape[1])], dembed] + \
                [d for k, d in zip(self.keys, g[1:], strict=True) if k != "embed"]

        return first_resolvable(draw, grads_of)


@case(G, "speller over a transcript")
def _speller():
    m = Speller()
    return check_pair(m.forward, m.backward, m.inputs(), ["H"] + m.keys)


# ---- the whole model ----

class Model:
    """Features (B, T, M) with rows of 5 and 3 frames, transcripts of 4 and 3 targets, every parameter."""

    def __init__(self, cfg=TINY, lengths=LENGTHS, y_in=Y_IN, y_out=Y_OUT):
        self.cfg, self.lengths, self.y_in, self.y_out = cfg, lengths, y_in, y_out

    def loss_and_grads(self, params, x, loss_and_grads=None):
        return (loss_and_grads or las.loss_and_grads)(params, self.cfg, x, self.lengths, self.y_in, self.y_out)

    def inputs(self, seed: int = 0):
        r = np.random.default_rng(seed)
        return draw_params(self.cfg, r), r.standard_normal((len(self.lengths), int(self.lengths.max()),
                                                            self.cfg.n_mels))

    def check(self, loss_and_grads=None) -> dict[str, float]:
        """Every parameter along its own random direction (the loss is a scalar: dout = 1)."""
        params, x = self.inputs()
        keys = list(params)

        def forward(*arrays):
            p = dict(zip(keys, arrays, strict=True))
            return np.array(self.loss_and_grads(p, x, loss_and_grads)[0]), p

        def backward(dout, p):
            g = self.loss_and_grads(p, x, loss_and_grads)[1]
            return tuple(float(dout) * g[k] for k in keys)

        return check_directions(forward, backward, [params[k] for k in keys], keys)


@case("models", "LAS: each parameter")
def _model():
    return Model().check()


@case("models", "LAS, 2 pyramid layers: each")
def _deep_model():
    cfg = las.LASConfig(vocab_size=5, n_mels=3, listener_hidden=2, n_pyramid=2, speller_hidden=3, n_embd=2,
                        attention=2)
    return Model(cfg, lengths=np.array([7, 4])).check()

"""Gradient-check cases for scaled dot-product and multi-head attention (§4.1)."""

from __future__ import annotations

import numpy as np

from minilm.attention import (
    attention_backward,
    attention_forward,
    causal_mask,
    key_padding_mask,
    mha_backward,
    mha_forward,
)
from minilm.cases import case
from minilm.gradcheck import check_pair, numerical_gradient

G = "attention"
MHA_NAMES = ["x_q", "x_kv", "W_q", "b_q", "W_k", "b_k", "W_v", "b_v", "W_o", "b_o"]


def _rng():
    return np.random.default_rng(0)


def mha_inputs(r, B, T_q, T_kv, C):
    """x_q, x_kv and the eight projection arrays (random biases, so every term is exercised)."""
    arrays = [r.standard_normal((B, T_q, C)), r.standard_normal((B, T_kv, C))]
    for _ in range(4):
        arrays += [r.standard_normal((C, C)) / np.sqrt(C), 0.1 * r.standard_normal(C)]
    return arrays


def self_attention_forward(x, *weights, n_head, mask=None):
    """Self-attention as a function of one input: x is both x_q and x_kv."""
    return mha_forward(x, x, *weights, n_head=n_head, mask=mask)


def self_attention_backward(dout, cache):
    """The input's gradient is the sum of its two roles: dx = dx_q + dx_kv."""
    dx_q, dx_kv, *dweights = mha_backward(dout, cache)
    return (dx_q + dx_kv, *dweights)


def zero_gradient(f, x: np.ndarray, analytic: np.ndarray, dout: np.ndarray | float = 1.0) -> float:
    """max(|analytic|, |numerical|) for a gradient that is exactly zero in theory.

    The key bias b_k is one: q . (k + b_k) = q . k + q . b_k adds the same
    number to every score of a query's row, and softmax ignores that, so the
    loss does not depend on b_k at all.  A relative error is meaningless for
    such a gradient (both sides are rounding noise, 1e-17 against 1e-11), so
    it is checked in absolute terms: both sides must be below the tolerance.
    """
    num = numerical_gradient(f, x, dout)
    return float(max(np.abs(analytic).max(), np.abs(num).max()))


def check_mha(forward, backward, inputs, names, kwargs) -> dict[str, float]:
    """check_pair on every input but b_k, whose exactly-zero gradient is checked by ``zero_gradient``."""
    i = names.index("b_k")
    errors = check_pair(forward, backward, inputs, names, kwargs, wrt=[j for j in range(len(inputs)) if j != i])
    inputs = [np.array(x, dtype=np.float64) for x in inputs]
    out, cache = forward(*inputs, **kwargs)
    dout = np.random.default_rng(1).standard_normal(out.shape)
    analytic = backward(dout, cache)[i]
    errors["db_k=0 (abs)"] = zero_gradient(lambda: forward(*inputs, **kwargs)[0], inputs[i], analytic, dout)
    return errors


@case(G, "scaled dot-product")
def _sdpa():
    r = _rng()
    return check_pair(attention_forward, attention_backward,
                      [r.standard_normal((2, 3, 4)), r.standard_normal((2, 5, 4)), r.standard_normal((2, 5, 3))],
                      ["q", "k", "v"], axes={"q": "B T_q hs", "k": "B T_kv hs", "v": "B T_kv hs"})


@case(G, "scaled dot-product, causal")
def _sdpa_causal():
    r = _rng()
    q, k, v = (r.standard_normal((2, 2, 4, 3)) for _ in range(3))
    return check_pair(attention_forward, attention_backward, [q, k, v], ["q", "k", "v"], {"mask": causal_mask(4)},
                      axes={"q": "B H T_q hs", "k": "B H T_kv hs", "v": "B H T_kv hs"})


@case(G, "sdpa, padding + empty row")
def _sdpa_padding():
    r = _rng()
    mask = np.array([[True, True, True, False], [True, False, False, False]])[:, None, :]  # (B, 1, T_k)
    mask = mask & np.array([True, True, False])[None, :, None]  # query 2 sees no key: a fully masked row
    q, k, v = r.standard_normal((2, 3, 4)), r.standard_normal((2, 4, 4)), r.standard_normal((2, 4, 2))
    return check_pair(attention_forward, attention_backward, [q, k, v], ["q", "k", "v"], {"mask": mask},
                      axes={"q": "B T_q hs", "k": "B T_kv hs", "v": "B T_kv hs"})


@case(G, "MHA self-attention, causal")
def _mha_self():
    x, _, *weights = mha_inputs(_rng(), 2, 4, 4, 6)
    return check_mha(self_attention_forward, self_attention_backward, [x, *weights],
                     ["x"] + MHA_NAMES[2:], {"n_head": 2, "mask": causal_mask(4)})


@case(G, "MHA cross-attention, padding")
def _mha_cross():
    mask = key_padding_mask(np.array([[True] * 5, [True, True, True, False, False]]))  # (B, 1, 1, T_kv)
    return check_mha(mha_forward, mha_backward, mha_inputs(_rng(), 2, 3, 5, 6), MHA_NAMES,
                     {"n_head": 3, "mask": mask})

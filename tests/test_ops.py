"""Every primitive op: float64 gradient checks over several shapes, broken backwards
caught by the same checker, numerical edge cases and bad input."""

import zlib

import numpy as np
import pytest

from minilm import activations as A
from minilm import dropout as D
from minilm import embedding as E
from minilm import layernorm as LN
from minilm import linear as L
from minilm import softmax as S
from minilm.gradcheck import TOLERANCE, check_pair

SHAPES = [(5,), (3, 4), (2, 3, 4), (2, 1, 3, 5)]  # leading batch dimensions of every kind
BROKEN = 1e-4  # a broken backward must be off by far more than this (exact ones are <= 1e-7)


def kinkless(x):
    return np.where(np.abs(x) < 1e-2, 0.5, x)


def fixed_dropout(x):
    return D.dropout_forward(x, 0.25, np.random.default_rng(7))


def ce(logits, targets):
    return S.cross_entropy_forward(logits, targets, ignore_index=-1)


def make_inputs(op, shape, r):
    """Inputs (and names) for op at a given shape; the last axis is the feature axis."""
    x = r.standard_normal(shape)
    C = shape[-1]
    if op == "linear":
        return [x, r.standard_normal((C, 3)), r.standard_normal(3)], ["x", "W", "b"]
    if op == "layernorm":
        return [x, 1 + 0.5 * r.standard_normal(C), r.standard_normal(C)], ["x", "gamma", "beta"]
    if op == "embedding":
        return [r.integers(0, 4, size=shape), r.standard_normal((4, 3))], ["ids", "W"]
    if op == "cross_entropy":
        t = r.integers(0, C, size=shape[:-1])
        t.reshape(-1)[0] = -1  # one ignored position
        return [x, t], ["logits", "targets"]
    if op == "relu":
        return [kinkless(x)], ["x"]
    return [2 * x], ["x"]


OPS = {  # name: (forward, backward)
    "linear": (L.linear_forward, L.linear_backward),
    "relu": (A.relu_forward, A.relu_backward),
    "gelu": (A.gelu_forward, A.gelu_backward),
    "tanh": (A.tanh_forward, A.tanh_backward),
    "sigmoid": (A.sigmoid_forward, A.sigmoid_backward),
    "softmax": (S.softmax_forward, S.softmax_backward),
    "log_softmax": (S.log_softmax_forward, S.log_softmax_backward),
    "cross_entropy": (ce, S.cross_entropy_backward),
    "embedding": (E.embedding_forward, E.embedding_backward),
    "layernorm": (LN.layernorm_forward, LN.layernorm_backward),
    "dropout": (fixed_dropout, D.dropout_backward),
}


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("op", OPS)
def test_gradient(op, shape):
    if op == "cross_entropy" and len(shape) == 1:
        shape = (1, 5)
    r = np.random.default_rng(zlib.crc32(f"{op}{shape}".encode()))  # fixed across runs (hash() is salted)
    inputs, names = make_inputs(op, shape, r)
    errors = check_pair(*OPS[op], inputs, names)
    assert errors and max(errors.values()) <= TOLERANCE, errors


# ---- deliberately broken backwards: each must be caught by the same checker ----


def scaled(backward, k=1.01):
    def broken(dout, cache):
        g = backward(dout, cache)
        return tuple(None if a is None else k * a for a in g) if isinstance(g, tuple) else k * g

    return broken


def linear_transposed(dy, cache):  # dx = dy W instead of dy W^T (W square)
    x, W, _ = cache
    dx, dW, db = L.linear_backward(dy, cache)
    return dy @ W, dW, db


def linear_db_dropped(dy, cache):  # bias gradient of the first row only: a dropped sum
    dx, dW, db = L.linear_backward(dy, cache)
    return dx, dW, dy.reshape(-1, dy.shape[-1])[0]


def relu_mask_dropped(dy, cache):
    return dy


def gelu_term_dropped(dy, cache):  # forgets the x * ds/dx term
    x, s = cache
    return dy * s


def tanh_square_dropped(dy, cache):
    return dy * (1 - cache)


def sigmoid_term_dropped(dy, cache):
    return dy * cache


def softmax_sum_dropped(dy, cache):
    return cache * dy


def log_softmax_sum_dropped(dy, cache):
    return dy


def ce_onehot_dropped(dloss, cache):  # softmax without the -1 at the target
    logp, safe, keep, count = cache
    return np.exp(logp) * (keep * dloss / count)[..., None]


def embedding_overwrite(dout, cache):  # dW[ids] = dout keeps one of the repeated ids only
    ids, shape = cache
    dW = np.zeros(shape)
    dW[ids.reshape(-1)] = dout.reshape(-1, shape[1])
    return None, dW


def layernorm_mean_dropped(dy, cache):
    xhat, rstd, gamma = cache
    dx, dgamma, dbeta = LN.layernorm_backward(dy, cache)
    g = dy * gamma
    return rstd * (g - xhat * (g * xhat).mean(-1, keepdims=True)), dgamma, dbeta


def layernorm_var_dropped(dy, cache):
    xhat, rstd, gamma = cache
    dx, dgamma, dbeta = LN.layernorm_backward(dy, cache)
    g = dy * gamma
    return rstd * (g - g.mean(-1, keepdims=True)), dgamma, dbeta


def dropout_mask_dropped(dy, cache):
    return dy


BROKEN_VARIANTS = [
    ("linear", linear_transposed, (3, 3)),
    ("linear", linear_db_dropped, (2, 3, 4)),
    ("relu", relu_mask_dropped, (3, 4)),
    ("gelu", gelu_term_dropped, (3, 4)),
    ("tanh", tanh_square_dropped, (3, 4)),
    ("sigmoid", sigmoid_term_dropped, (3, 4)),
    ("softmax", softmax_sum_dropped, (3, 4)),
    ("log_softmax", log_softmax_sum_dropped, (3, 4)),
    ("cross_entropy", ce_onehot_dropped, (3, 4)),
    ("embedding", embedding_overwrite, (2, 5)),
    ("layernorm", layernorm_mean_dropped, (3, 4)),
    ("layernorm", layernorm_var_dropped, (3, 4)),
    ("dropout", dropout_mask_dropped, (3, 4)),
] + [(op, scaled(OPS[op][1]), (2, 3, 4)) for op in OPS]


@pytest.mark.parametrize("op,broken,shape", BROKEN_VARIANTS,
                         ids=[f"{op}-{getattr(b, '__name__', 'scaled')}" for op, b, _ in BROKEN_VARIANTS])
def test_broken_backward_is_caught(op, broken, shape):
    inputs, names = make_inputs(op, shape, np.random.default_rng(3))
    if op == "embedding":
        inputs[0] = np.array([[1, 1, 2, 1, 0], [2, 2, 3, 0, 1]])  # repeated ids
    errors = check_pair(OPS[op][0], broken, inputs, names)
    assert max(errors.values()) > BROKEN, errors


# ---- numerical edge cases ----


def test_softmax_extreme_logits():
    x = np.array([[1e4, -1e4, 0.0], [1e4, 1e4, -1e4]])
    y, _ = S.softmax_forward(x)
    np.testing.assert_allclose(y, [[1, 0, 0], [0.5, 0.5, 0]], atol=1e-12)
    ls, _ = S.log_softmax_forward(x)
    assert np.isfinite(ls).all()
    np.testing.assert_allclose(ls[0], [0, -2e4, -1e4])
    loss, cache = S.cross_entropy_forward(x, np.array([1, 2]))
    assert loss == pytest.approx((2e4 + 2e4 + np.log(2)) / 2)
    assert np.isfinite(S.cross_entropy_backward(1.0, cache)).all()


def test_softmax_float32_stays_float32_and_sums_to_one():
    x = np.random.default_rng(0).standard_normal((4, 7)).astype(np.float32) * 1e3
    y, _ = S.softmax_forward(x)
    assert y.dtype == np.float32 and np.allclose(y.sum(-1), 1, atol=1e-6)


def test_layernorm_constant_input():
    x = np.full((2, 6), 3.0)
    gamma, beta = np.linspace(0.5, 1.5, 6), np.arange(6.0)
    y, cache = LN.layernorm_forward(x, gamma, beta)
    np.testing.assert_allclose(y, np.broadcast_to(beta, (2, 6)))  # xhat = 0: the output is beta
    dx, dgamma, dbeta = LN.layernorm_backward(np.ones((2, 6)), cache)
    assert np.isfinite(dx).all() and np.allclose(dgamma, 0) and np.allclose(dbeta, 2)


def test_layernorm_matches_biased_variance():
    x = np.random.default_rng(0).standard_normal((3, 5))
    y, _ = LN.layernorm_forward(x, np.ones(5), np.zeros(5), eps=0.0)
    np.testing.assert_allclose(y, (x - x.mean(-1, keepdims=True)) / x.std(-1, keepdims=True))  # np.std is biased


def test_embedding_all_equal_ids_accumulate():
    W = np.random.default_rng(0).standard_normal((4, 3))
    ids = np.full((2, 5), 2)
    out, cache = E.embedding_forward(ids, W)
    dout = np.random.default_rng(1).standard_normal(out.shape)
    _, dW = E.embedding_backward(dout, cache)
    np.testing.assert_allclose(dW[2], dout.reshape(-1, 3).sum(0))
    assert not dW[[0, 1, 3]].any()


def test_dropout_identity_at_eval_and_mean_preserved():
    x = np.ones((200, 200))
    y, _ = D.dropout_forward(x, 0.5, train=False)
    assert y is x
    y, _ = D.dropout_forward(x, 0.5, np.random.default_rng(0))
    assert set(np.unique(y)) == {0.0, 2.0} and abs(y.mean() - 1) < 0.02


def test_sigmoid_stable_at_extremes():
    with np.errstate(over="raise"):
        y = A.sigmoid(np.array([-1e4, -50.0, 0.0, 50.0, 1e4]))
    np.testing.assert_allclose(y, [0, 1 / (1 + np.exp(50)), 0.5, 1 / (1 + np.exp(-50)), 1])


def test_gelu_close_to_exact_erf_form():
    from math import erf

    x = np.linspace(-6, 6, 241)
    exact = np.array([0.5 * v * (1 + erf(v / np.sqrt(2))) for v in x])
    y, _ = A.gelu_forward(x)
    assert np.abs(y - exact).max() < 1e-3


# ---- bad input ----


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: L.linear_forward(np.ones((2, 3)), np.ones((4, 5))), "last dimension 4"),
        (lambda: L.linear_forward(np.ones((2, 3), dtype=int), np.ones((3, 5))), "float32 or float64"),
        (lambda: L.linear_forward(np.ones((2, 3)), np.ones((3, 5)), np.ones(4)), "b must have last dimension 5"),
        (lambda: LN.layernorm_forward(np.ones((2, 3)), np.ones(4), np.zeros(4)), "x must have last dimension 4"),
        (lambda: E.embedding_forward(np.array([0, 5]), np.ones((5, 2))), r"token id 5 is outside \[0, 5\)"),
        (lambda: E.embedding_forward(np.array([-1]), np.ones((5, 2))), r"token id -1 is outside"),
        (lambda: E.embedding_forward(np.array([0.0]), np.ones((5, 2))), "integer token ids"),
        (lambda: S.cross_entropy_forward(np.ones((2, 3)), np.array([0, 3])), r"token id 3 is outside \[0, 3\)"),
        (lambda: S.cross_entropy_forward(np.ones((2, 3)), np.array([0, 1, 2])), r"targets must have shape \(2,\)"),
        (lambda: S.softmax_forward([1.0, 2.0]), "numpy array"),
        (lambda: D.dropout_forward(np.ones(3), 1.0, np.random.default_rng(0)), r"p must be in \[0, 1\)"),
        (lambda: D.dropout_forward(np.ones(3), 0.5), "np.random.Generator"),
    ],
)
def test_bad_input_raises_clear_valueerror(call, match):
    with pytest.raises(ValueError, match=match):
        call()

"""Optimisers against their formulas, on a convex quadratic, plus clipping and the schedule."""

import math

import numpy as np
import pytest

from minilm import optim


def quadratic(params):
    """f = 1/2 sum_i a_i (w_i - c_i)^2 + 1/2 (b - 1)^2: convex, minimum at w = c, b = 1."""
    a, c = np.array([1.0, 3.0, 0.5, 2.0]).reshape(2, 2), np.array([[1.0, -2.0], [0.5, 3.0]])
    w, b = params["w"], params["b"]
    loss = 0.5 * np.sum(a * (w - c) ** 2) + 0.5 * np.sum((b - 1) ** 2)
    return loss, {"w": a * (w - c), "b": b - 1}


def start():
    return {"w": np.zeros((2, 2)), "b": np.zeros(2)}


def test_sgd_momentum_matches_formula():
    p, g = {"w": np.array([[1.0, 2.0]])}, {"w": np.array([[0.5, -1.0]])}
    s = optim.init_state(p)
    optim.sgd_step(p, g, s, lr=0.1, momentum=0.9)  # u = g
    optim.sgd_step(p, g, s, lr=0.1, momentum=0.9)  # u = 0.9 g + g
    np.testing.assert_allclose(p["w"], [[1.0, 2.0]] - 0.1 * (g["w"] + 1.9 * g["w"]))


def test_adam_matches_formula():
    p = {"w": np.array([[1.0, -2.0]])}
    g1, g2 = np.array([[0.3, -0.4]]), np.array([[-0.1, 0.2]])
    s = optim.init_state(p)
    b1, b2, lr, eps = 0.9, 0.99, 0.01, 1e-8
    for g in (g1, g2):
        optim.adam_step(p, {"w": g}, s, lr, b1, b2, eps)
    m = (1 - b1) * (b1 * g1 + g2)
    v = (1 - b2) * (b2 * g1**2 + g2**2)
    first = np.array([[1.0, -2.0]]) - lr * g1 / (np.abs(g1) + eps)  # step 1: mhat/sqrt(vhat) = g/|g|
    expected = first - lr * (m / (1 - b1**2)) / (np.sqrt(v / (1 - b2**2)) + eps)
    np.testing.assert_allclose(p["w"], expected, rtol=1e-12)


def test_adamw_decay_is_decoupled_and_only_on_matrices():
    p = {"W": np.full((2, 2), 2.0), "b": np.full(2, 2.0)}
    zero = {"W": np.zeros((2, 2)), "b": np.zeros(2)}
    s = optim.init_state(p)
    optim.adamw_step(p, zero, s, lr=0.1, weight_decay=0.5)
    np.testing.assert_allclose(p["W"], 2.0 * (1 - 0.1 * 0.5))  # zero gradient: only the decay moved it
    np.testing.assert_allclose(p["b"], 2.0)  # biases are not decayed
    assert not s["m"]["W"].any()  # the decay never enters the moments


def test_adam_l2_goes_through_moments():
    p = {"W": np.full((1, 2), 2.0)}
    s = optim.init_state(p)
    optim.adam_step(p, {"W": np.zeros((1, 2))}, s, lr=0.1, weight_decay=0.5)
    np.testing.assert_allclose(s["m"]["W"], 0.1 * 0.5 * 2.0)


@pytest.mark.parametrize(
    "step,kw",
    [(optim.sgd_step, {"lr": 0.1, "momentum": 0.9}), (optim.adam_step, {"lr": 0.05}),
     (optim.adamw_step, {"lr": 0.05, "weight_decay": 0.0})],
)
def test_optimisers_minimise_a_convex_quadratic(step, kw):
    p = start()
    s = optim.init_state(p)
    first = quadratic(p)[0]
    for t in range(600):
        loss, g = quadratic(p)
        step(p, g, s, **{**kw, "lr": optim.lr_at(t, kw["lr"], kw["lr"] / 100, 10, 600)})
    assert quadratic(p)[0] < 1e-6 * first
    np.testing.assert_allclose(p["w"], [[1.0, -2.0], [0.5, 3.0]], atol=1e-3)


def test_float32_parameters_stay_float32():
    p = {"W": np.ones((2, 2), np.float32)}
    s = optim.init_state(p)
    optim.adamw_step(p, {"W": np.ones((2, 2), np.float32)}, s, lr=1e-3, weight_decay=0.1)
    assert p["W"].dtype == np.float32 and s["v"]["W"].dtype == np.float32


def test_clip_grad_norm():
    g = {"a": np.array([3.0, 0.0]), "b": np.array([[4.0]])}
    norm = optim.clip_grad_norm(g, 1.0)
    assert norm == pytest.approx(5.0)
    total = math.sqrt(sum((v**2).sum() for v in g.values()))
    assert total == pytest.approx(1.0, rel=1e-5)
    np.testing.assert_allclose(g["a"] / g["b"][0, 0], [0.75, 0])  # direction kept
    small = {"a": np.array([0.3, 0.4])}
    optim.clip_grad_norm(small, 1.0)
    np.testing.assert_array_equal(small["a"], [0.3, 0.4])  # below the threshold: untouched


def test_warmup_cosine_schedule():
    lrs = [optim.lr_at(t, 1.0, 0.1, 10, 110) for t in range(120)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a < b for a, b in zip(lrs[:9], lrs[1:10], strict=True))  # rising during warmup
    assert lrs[60] == pytest.approx(0.1 + 0.9 * 0.5)  # half way through the cosine
    assert all(a >= b for a, b in zip(lrs[10:110], lrs[11:111], strict=True))  # then falling
    assert lrs[110] == pytest.approx(0.1) and lrs[119] == pytest.approx(0.1)  # and floored at min_lr

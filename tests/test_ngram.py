"""The MLP n-gram LM (§4.2): whole-model gradient checks of every parameter, broken backwards caught,
the formula itself, batching, dtypes, bad input, and that it learns."""

import numpy as np
import pytest

from minilm import embedding as E
from minilm import linear as L
from minilm import ngram
from minilm.activations import tanh_forward
from minilm.cases.ngram import FLOOR, check_ngram, model_inputs, resolvable
from minilm.gradcheck import TOLERANCE
from minilm.optim import adam_step, init_state

BROKEN = 1e-4  # a broken backward must be off by far more than this (exact ones are <= 1e-7)
CONFIGS = [
    ngram.NgramConfig(vocab_size=7, context=3, n_embd=3, n_hidden=5, activation="tanh", direct=True),
    ngram.NgramConfig(vocab_size=7, context=3, n_embd=3, n_hidden=5, activation="tanh", direct=False),
    ngram.NgramConfig(vocab_size=7, context=3, n_embd=3, n_hidden=5, activation="relu", direct=False),
    ngram.NgramConfig(vocab_size=5, context=1, n_embd=2, n_hidden=4, activation="relu", direct=True),
]


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"{c.activation}-n{c.context}-direct{c.direct}")
def test_every_parameter_gradient(cfg):
    errors = check_ngram(cfg)
    assert set(errors) == {"d" + k for k in ngram.param_shapes(cfg)}
    assert max(errors.values()) <= TOLERANCE, errors


def test_checked_inputs_are_resolvable_and_away_from_relu_kinks():
    cfg = CONFIGS[2]
    params, ctx, targets = model_inputs(cfg)
    assert resolvable(ngram.loss_and_grads(params, cfg, ctx, targets)[1].values(), FLOOR)
    z = params["embed"][ctx].reshape(len(ctx), -1) @ params["W_hidden"] + params["b_hidden"]  # (B, Hd)
    assert np.abs(z).min() > 1e-2 and (z < 0).any()  # some units are off: the ReLU mask matters


# ---- deliberately broken backwards: each must be caught by the same whole-model check ----


def tanh_square_dropped(dy, y):  # tanh'(z) taken as 1 - y instead of 1 - y^2
    return dy * (1 - y)


def direct_dx_dropped(dy, cache):  # forgets that x also feeds the direct connections (the bias-free linear)
    dx, dW, db = L.linear_backward(dy, cache)
    return (dx if cache[2] else 0 * dx), dW, db


def positions_reversed(dout, cache):  # splits dx into the N embeddings in the wrong order
    return E.embedding_backward(dout[:, ::-1], cache)


def embedding_overwrite(dout, cache):  # dW[ids] = dout keeps only one of the repeated ids
    ids, shape = cache
    dW = np.zeros(shape)
    dW[ids.reshape(-1)] = dout.reshape(-1, shape[1])
    return None, dW


@pytest.mark.parametrize("patch,cfg,bad", [
    (("ACTIVATIONS", {"tanh": (tanh_forward, tanh_square_dropped)}), CONFIGS[0], "dembed"),
    (("linear_backward", direct_dx_dropped), CONFIGS[0], "dembed"),
    (("embedding_backward", positions_reversed), CONFIGS[1], "dembed"),
    (("embedding_backward", embedding_overwrite), CONFIGS[2], "dembed"),
], ids=["tanh-derivative", "direct-dx-dropped", "positions-reversed", "embedding-overwrite"])
def test_broken_backward_is_caught(monkeypatch, patch, cfg, bad):
    name, value = patch
    if isinstance(value, dict):
        monkeypatch.setitem(ngram.ACTIVATIONS, *next(iter(value.items())))
    else:
        monkeypatch.setattr(ngram, name, value)
    errors = check_ngram(cfg)
    assert errors[bad] > BROKEN, errors


@pytest.mark.parametrize("key", ["W_hidden", "b_out", "W_direct", "embed"])
def test_one_gradient_scaled_is_caught(key):
    def scaled(params, cfg, ctx, targets):
        loss, grads = ngram.loss_and_grads(params, cfg, ctx, targets)
        return loss, {**grads, key: 1.01 * grads[key]}

    errors = check_ngram(CONFIGS[0], scaled)
    assert errors["d" + key] > BROKEN and all(e <= TOLERANCE for k, e in errors.items() if k != "d" + key), errors


# ---- the formula, batching, dtypes ----


def test_forward_is_the_formula_of_the_text():
    cfg = CONFIGS[0]
    params, ctx, _ = model_inputs(cfg)
    x = np.concatenate([params["embed"][ctx[:, j]] for j in range(cfg.context)], axis=1)  # e_{i-n}, ..., e_{i-1}
    expected = np.tanh(x @ params["W_hidden"] + params["b_hidden"]) @ params["W_out"] + params["b_out"]
    expected += x @ params["W_direct"]
    logits, _ = ngram.forward(params, cfg, ctx)
    np.testing.assert_allclose(logits, expected, rtol=1e-13, atol=1e-13)


def test_batch_equals_one_context_at_a_time():
    cfg = CONFIGS[2]
    params, ctx, _ = model_inputs(cfg)
    logits, _ = ngram.forward(params, cfg, ctx)
    for b in range(len(ctx)):
        np.testing.assert_allclose(logits[b : b + 1], ngram.forward(params, cfg, ctx[b : b + 1])[0], rtol=1e-13)


def test_float32_stays_float32():
    cfg = ngram.NgramConfig(vocab_size=11, context=4, n_embd=5, n_hidden=8, direct=True)
    params = ngram.init_params(cfg, np.random.default_rng(0))
    assert all(p.dtype == np.float32 for p in params.values())
    ctx = np.random.default_rng(1).integers(0, 11, (9, 4))
    logits, _ = ngram.forward(params, cfg, ctx)
    loss, grads = ngram.loss_and_grads(params, cfg, ctx, np.arange(9) % 11)
    assert logits.dtype == np.float32 and isinstance(loss, float)
    assert {k: g.dtype for k, g in grads.items()} == {k: np.dtype(np.float32) for k in params}
    assert abs(loss - np.log(11)) < 0.5  # an untrained model is close to uniform


def test_learns_a_rule_that_needs_the_whole_context():
    """Tokens follow w_i = (w_{i-3} + 2 w_{i-1}) mod 5: no shorter context predicts them."""
    cfg = ngram.NgramConfig(vocab_size=5, context=3, n_embd=4, n_hidden=32)
    r = np.random.default_rng(0)
    params = ngram.init_params(cfg, r)
    opt = init_state(params)
    ctx = np.array([[a, b, c] for a in range(5) for b in range(5) for c in range(5)])  # (125, 3) every context
    targets = (ctx[:, 0] + 2 * ctx[:, 2]) % 5
    first, _ = ngram.loss_and_grads(params, cfg, ctx, targets)
    for _ in range(300):
        loss, grads = ngram.loss_and_grads(params, cfg, ctx, targets)
        adam_step(params, grads, opt, lr=1e-2)
    assert first > 1.3 and loss < 0.05, (first, loss)


# ---- bad input ----


@pytest.mark.parametrize("call,match", [
    (lambda p, c: ngram.forward(p, c, np.zeros((4, 2), int)), r"ctx must have shape \(B, 3\).*got shape \(4, 2\)"),
    (lambda p, c: ngram.forward(p, c, np.zeros(3, int)), r"ctx must have shape \(B, 3\)"),
    (lambda p, c: ngram.forward(p, c, np.array([[0, 1, 7]])), r"ctx: token id 7 is outside \[0, 7\)"),
    (lambda p, c: ngram.forward(p, c, np.array([[0, -1, 2]])), r"ctx: token id -1 is outside"),
    (lambda p, c: ngram.forward(p, c, np.zeros((2, 3))), "ctx must be integer token ids, got dtype float64"),
    (lambda p, c: ngram.loss_and_grads(p, c, np.zeros((2, 3), int), np.array([0, 9])), r"token id 9 is outside"),
    (lambda p, c: ngram.loss_and_grads(p, c, np.zeros((2, 3), int), np.array([0])), r"targets must have shape"),
    (lambda p, c: ngram.forward({k: v for k, v in p.items() if k != "W_direct"}, c, np.zeros((1, 3), int)),
     r"params must have keys"),
    (lambda p, c: ngram.forward({**p, "b_out": p["b_out"].astype(np.float64)}, c, np.zeros((1, 3), int)),
     r"params must all be float32 or all float64, got \['float32', 'float64'\]"),
    (lambda p, c: ngram.forward({**p, "W_hidden": p["W_hidden"].T}, c, np.zeros((1, 3), int)),
     r"params\['W_hidden'\] must have shape \(9, 5\)"),
    (lambda p, c: ngram.NgramConfig(vocab_size=5, activation="sigmoid"),
     r"activation must be one of \['relu', 'tanh'\]"),
    (lambda p, c: ngram.NgramConfig(vocab_size=5, context=0), "context must be a positive integer"),
])
def test_bad_input_raises_clear_valueerror(call, match):
    cfg = CONFIGS[0]
    params = ngram.init_params(cfg, np.random.default_rng(0))
    with pytest.raises(ValueError, match=match):
        call(params, cfg)

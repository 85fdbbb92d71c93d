"""minilm.fast against the plain models: the same loss, the same gradients, the same training step.

The fast path runs in float64 as well as float32, so the comparisons are in
float64, where two correct implementations of one formula differ only by
rounding (about 1e-16 relative); the tolerance 1e-10 leaves room for that
and is a million times smaller than the error of a broken gradient (a
factor 1.01 gives 1e-2), which the broken-backward tests show it catches.
tests/test_fast_gpt.py does the same for the Transformer.
"""

import numpy as np
import pytest

from minilm import lstm, ngram, optim
from minilm.fast import lstm as fast_lstm
from minilm.fast.flat import FlatParams
from minilm.fast.ngram import FastNgram

TOL = 1e-10  # float64: rounding differences only
BROKEN = 1e-4  # a broken backward is off by far more than this


def grad_error(g, h) -> float:
    """Largest |g - h| over every parameter, relative to the largest |g|."""
    scale = max(float(np.abs(a).max()) for a in g.values())
    return max(float(np.abs(g[k] - h[k]).max()) for k in g) / scale


def test_flat_params_layout():
    flat = FlatParams([("b", (3,), False), ("W", (2, 5), True)])
    assert flat.offsets["W"][0] == 0 and flat.n_decay >= 10  # decayed entries first
    assert flat.offsets["b"][0] % 16 == 0
    flat.params["W"][...] = 1
    flat.adamw_step(0.1, weight_decay=0.5)  # zero gradient: only the decay moves W
    assert np.allclose(flat.params["W"], 0.95) and np.all(flat.params["b"] == 0)


# ---- LSTM ----


def lstm_inputs(dtype=np.float64):
    r = np.random.default_rng(3)
    B, T, D, Hd = 3, 6, 4, 5
    Wx, Wh, b = lstm.lstm_init(r, D, Hd, dtype)
    b += r.standard_normal(4 * Hd).astype(dtype)
    x = r.standard_normal((B, T, D)).astype(dtype)
    h0, c0 = r.standard_normal((2, B, Hd)).astype(dtype)
    dhs = r.standard_normal((B, T, Hd)).astype(dtype)
    dstate = tuple(r.standard_normal((2, B, Hd)).astype(dtype))
    return (x, h0, c0, Wx, Wh, b), dhs, dstate


def lstm_errors(fast_backward=fast_lstm.lstm_backward):
    args, dhs, dstate = lstm_inputs()
    hs, (h, c), cache = lstm.lstm_forward(*args)
    fhs, (fh, fc), fcache = fast_lstm.lstm_forward(*args)
    out_err = max(float(np.abs(a - b).max()) for a, b in ((hs, fhs), (h, fh), (c, fc)))
    grads = lstm.lstm_backward(dhs, cache, dstate)
    fgrads = fast_backward(dhs, fcache, dstate)
    names = ("dx", "dh0", "dc0", "dWx", "dWh", "db")
    pairs = zip(names, grads, fgrads, strict=True)
    return out_err, {n: float(np.abs(a - b).max() / np.abs(a).max()) for n, a, b in pairs}


def test_lstm_matches_plain():
    out_err, errors = lstm_errors()
    assert out_err <= TOL
    assert max(errors.values()) <= TOL, errors


def test_lstm_broken_backward_is_caught():
    def broken(dhs, cache, dstate=None):
        dx, dh0, dc0, dWx, dWh, db = fast_lstm.lstm_backward(dhs, cache, dstate)
        return dx, dh0, dc0, dWx, dWh * 1.01, db

    _, errors = lstm_errors(broken)
    assert errors["dWh"] > BROKEN


def test_lstm_float32_stays_float32():
    args, dhs, _ = lstm_inputs(np.float32)
    hs, _, cache = fast_lstm.lstm_forward(*args)
    assert hs.dtype == np.float32
    assert all(g.dtype == np.float32 for g in fast_lstm.lstm_backward(dhs, cache))


# ---- MLP n-gram ----


@pytest.mark.parametrize("activation,direct", [("tanh", False), ("relu", True)])
def test_ngram_matches_plain(activation, direct):
    r = np.random.default_rng(5)
    cfg = ngram.NgramConfig(vocab_size=13, context=3, n_embd=4, n_hidden=6, activation=activation, direct=direct)
    p = ngram.init_params(cfg, r, np.float64)
    p = {k: v + 0.1 * r.standard_normal(v.shape) for k, v in p.items()}
    plain, state = {k: v.copy() for k, v in p.items()}, optim.init_state(p)
    fast = FastNgram(cfg, p, np.float64)
    for _ in range(3):  # also checks that the embedding gradient is cleared between steps
        ctx, y = r.integers(0, 13, (7, 3)), r.integers(0, 13, 7)
        loss, grads = ngram.loss_and_grads(plain, cfg, ctx, y)
        fl, fg = fast.loss_and_grads(ctx, y)
        assert abs(fl - loss) <= TOL * loss and grad_error(grads, fg) <= TOL
        optim.clip_grad_norm(grads, 1.0)
        optim.adamw_step(plain, grads, state, 1e-2, 0.9, 0.99, weight_decay=0.1)
        fast.step(ctx, y, 1e-2, 0.9, 0.99, weight_decay=0.1, max_norm=1.0)
    assert max(float(np.abs(plain[k] - fast.params[k]).max()) for k in plain) <= TOL


def test_ngram_bad_input():
    cfg = ngram.NgramConfig(vocab_size=5, context=2)
    fast = FastNgram(cfg)
    with pytest.raises(ValueError, match="shape"):
        fast.loss_and_grads(np.zeros((3, 4), int), np.zeros(3, int))
    with pytest.raises(ValueError, match="outside"):
        fast.loss_and_grads(np.zeros((3, 2), int), np.full(3, 9))


# ---- the benchmark (a smoke test: it runs and reports; no timing is asserted) ----


def test_bench_worker_reports():
    from minilm.fast.bench import format_rows, worker

    r = worker("ngram-27", "fast", steps=2, warmup=1)
    assert len(r["times"]) == 2 and r["tokens"] == 32 and r["peak_mb"] > 0
    row = {"ms": 1e3 * r["times"][0], "min_ms": 1e3 * r["times"][0], "tokens_per_s": 1.0, "peak_mb": r["peak_mb"]}
    assert "ngram-27" in format_rows("ngram-27", {"fast": row})


def test_matmul_floor_runs():
    from types import SimpleNamespace

    from minilm.fast.bench import matmul_floor

    cfg = SimpleNamespace(n_embd=8, n_head=2, vocab_size=5, n_layer=1)
    matmul_floor(cfg, 2, 4, np.random.default_rng(0))()

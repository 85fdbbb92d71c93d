"""minilm.fast against the plain models: the same loss, the same gradients, the same training step.

The fast path runs in float64 as well as float32, so the comparisons are in
float64, where two correct implementations of one formula differ only by
rounding (about 1e-16 relative); the tolerance 1e-10 leaves room for that
and is a million times smaller than the error of a broken gradient (a
factor 1.01 gives 1e-2), which the broken-backward tests show it catches.
tests/test_fast_gpt.py does the same for the Transformer.
"""

import os
import threading

import numpy as np
import pytest

from minilm import lstm, lstm_lm, ngram, optim
from minilm.fast import lstm as fast_lstm
from minilm.fast.flat import FlatParams
from minilm.fast.lstm_lm import FastLSTMLM
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


def lstm_inputs(dtype=np.float64, T=6, B=3, D=4, Hd=5):
    r = np.random.default_rng(3)
    Wx, Wh, b = lstm.lstm_init(r, D, Hd, dtype)
    b += r.standard_normal(4 * Hd).astype(dtype)
    x = r.standard_normal((B, T, D)).astype(dtype)
    h0, c0 = r.standard_normal((2, B, Hd)).astype(dtype)
    dhs = r.standard_normal((B, T, Hd)).astype(dtype)
    dstate = tuple(r.standard_normal((2, B, Hd)).astype(dtype))
    return (x, h0, c0, Wx, Wh, b), dhs, dstate


def lstm_errors(fast_backward=fast_lstm.lstm_backward, T=6, ws=None, **sizes):
    args, dhs, dstate = lstm_inputs(T=T, **sizes)
    hs, (h, c), cache = lstm.lstm_forward(*args)
    fhs, (fh, fc), fcache = fast_lstm.lstm_forward(*args, ws=ws)
    out_err = max(float(np.abs(a - b).max()) for a, b in ((hs, fhs), (h, fh), (c, fc)))
    grads = lstm.lstm_backward(dhs, cache, dstate)
    fgrads = fast_backward(dhs, fcache, dstate)
    names = ("dx", "dh0", "dc0", "dWx", "dWh", "db")
    pairs = zip(names, grads, fgrads, strict=True)
    return out_err, {n: float(np.abs(a - b).max() / np.abs(a).max()) for n, a, b in pairs}


@pytest.fixture(params=sorted(fast_lstm.GATE_FORMS))
def gates(request, monkeypatch):
    """Each of the step's two gate forms ("tanh", "exp"), whichever this machine would choose."""
    monkeypatch.setattr(fast_lstm, "_gate_form", request.param)
    return request.param


def test_lstm_matches_plain(gates):
    ws = fast_lstm.Workspace()
    out_err, errors = lstm_errors(ws=ws)
    assert ws.form == gates
    assert out_err <= TOL
    assert max(errors.values()) <= TOL, errors


def test_lstm_gate_form_from_the_environment(monkeypatch):
    """MINILM_LSTM_GATES picks the form; anything else is refused, naming the variable; unset, the faster."""
    for form in fast_lstm.GATE_FORMS:
        monkeypatch.setattr(fast_lstm, "_gate_form", None)
        monkeypatch.setenv("MINILM_LSTM_GATES", form)
        assert fast_lstm.gate_form() == form
    monkeypatch.setattr(fast_lstm, "_gate_form", None)
    monkeypatch.setenv("MINILM_LSTM_GATES", "sin")
    with pytest.raises(ValueError, match="MINILM_LSTM_GATES='sin'"):
        fast_lstm.gate_form()
    monkeypatch.setattr(fast_lstm, "_gate_form", None)
    monkeypatch.delenv("MINILM_LSTM_GATES")
    assert fast_lstm.gate_form() in fast_lstm.GATE_FORMS


def test_lstm_gates_saturate_without_nan(gates):
    """Pre-activations of +-1000: exp overflows to inf in the exp form, which must give gates of exactly 0 or 1
    (and tanh of +-1), not nan, and the same outputs as the plain LSTM."""
    r = np.random.default_rng(8)
    Wx, Wh, b = lstm.lstm_init(r, 2, 3, np.float64)
    b = np.where(np.arange(12) % 2, 1000.0, -1000.0)  # exp(1000) overflows even in float64
    x, h0 = r.standard_normal((2, 4, 2)), np.zeros((2, 3))
    hs, _, _ = lstm.lstm_forward(x, h0, h0, Wx, Wh, b)
    fhs, _, _ = fast_lstm.lstm_forward(x, h0, h0, Wx, Wh, b, fast_lstm.Workspace())
    assert np.isfinite(fhs).all() and float(np.abs(hs - fhs).max()) <= TOL


@pytest.mark.parametrize("threads", ["1", "2"])
@pytest.mark.parametrize("weight_rows, parts", [(1, 3), (48, 2), (192, 1)])
def test_lstm_matches_plain_over_several_chunks(monkeypatch, gates, threads, weight_rows, parts):
    """T = 21 is three chunks of products (8, 8, 5) on the worker thread, with the weight gradients in one
    part per chunk, in parts of two chunks (the last of one) or in one part; on one thread, each product
    over all 21 steps; a Workspace used for another shape first, then for this one twice, gives the
    same numbers."""
    monkeypatch.setenv("MINILM_THREADS", threads)
    monkeypatch.setattr(fast_lstm, "WEIGHT_ROWS", weight_rows)
    ws = fast_lstm.Workspace()
    lstm_errors(T=5, ws=ws)
    for _ in range(2):
        out_err, errors = lstm_errors(T=21, ws=ws)
        assert (len(ws.chunks), len(ws.dWh_parts)) == (3, parts)
        assert out_err <= TOL and max(errors.values()) <= TOL, errors


def test_lstm_on_one_thread_makes_each_product_over_all_steps(monkeypatch):
    """With no second thread, x_t W_x' + b', dW and dx are each one product over all T = 21 steps."""
    monkeypatch.setenv("MINILM_THREADS", "1")
    calls = []
    for name in ("_inputs", "_weight_products", "_input_products"):
        orig = getattr(fast_lstm, name)
        monkeypatch.setattr(fast_lstm, name, lambda *a, orig=orig, name=name: calls.append((name, a[-2:])) or orig(*a))
    out_err, errors = lstm_errors(T=21)
    assert calls == [("_inputs", (0, 21)), ("_weight_products", (0, 21)), ("_input_products", (0, 21))]
    assert out_err <= TOL and max(errors.values()) <= TOL, errors


def test_column_blocks():
    from minilm.fast.blas import SMALL_PRODUCT, column_blocks

    assert column_blocks(3, 5, 20) == [(0, 20)]  # small already
    assert column_blocks(32, 128, 512, small=0) == [(0, 512)]  # no small-matrix kernel: whole
    for M, K, N in ((32, 128, 512), (12, 256, 1024), (32, 512, 128), (12, 1024, 256), (1000, 1000, 40)):
        blocks = column_blocks(M, K, N)
        edges = [c for block in blocks for c in block]
        assert edges[0] == 0 and edges[-1] == N and edges[1:-1:2] == edges[2:-1:2]  # contiguous, in order
        assert all(M * K * (c1 - c0) <= SMALL_PRODUCT or c1 - c0 < 32 for c0, c1 in blocks)
    assert len(column_blocks(32, 128, 512)) == 4 and len(column_blocks(1000, 1000, 40)) == 2  # >= 16 columns each


@pytest.mark.parametrize("small", [None, 1])
def test_lstm_recurrent_products_in_column_blocks(monkeypatch, small):
    """The recurrent products made a block of W_h's columns at a time give the plain LSTM's numbers:
    the bench's size with the AVX-512 kernels (4 blocks forward, 4 backward), and small sizes forced into
    8 and 2 blocks."""
    monkeypatch.setattr("minilm.fast.blas.core", lambda: "SkylakeX")
    if small:
        monkeypatch.setattr("minilm.fast.blas.SMALL_PRODUCT", small)
        sizes, want = dict(B=3, D=4, Hd=32), (8, 2)
    else:
        sizes, want = dict(B=32, D=16, Hd=128), (4, 4)
    ws = fast_lstm.Workspace()
    out_err, errors = lstm_errors(T=11, ws=ws, **sizes)
    assert (len(ws.fwd_cols), len(ws.bwd_cols)) == want
    assert out_err <= TOL and max(errors.values()) <= TOL, errors


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("with_blas", [True, False])
def test_transpose(monkeypatch, dtype, with_blas):
    """blas.transpose writes exactly a.T, also between sub-blocks of larger arrays, through OpenBLAS's
    ?omatcopy when NumPy's OpenBLAS exports it and through NumPy when not (or for another layout)."""
    from minilm.fast import blas

    if not with_blas:
        monkeypatch.setattr(blas, "_omatcopy", {})
    a = np.random.default_rng(0).standard_normal((9, 30)).astype(dtype)
    out = np.zeros((40, 12), dtype)
    blas.transpose(a[2:7, 3:23], out[5:25, 4:9])
    assert np.array_equal(out[5:25, 4:9], a[2:7, 3:23].T)
    out[5:25, 4:9] = 0
    assert not out.any()  # nothing written outside the block
    full = np.empty((30, 9), dtype)
    blas.transpose(a, full)
    assert np.array_equal(full, a.T)
    strided = np.empty((30, 18), dtype)[:, ::2]  # not unit stride along rows: NumPy does it
    blas.transpose(a, strided)
    assert np.array_equal(strided, a.T)


@pytest.mark.parametrize("core, blocks", [("SkylakeX", True), ("SapphireRapids", True), ("Haswell", False),
                                          ("Zen", False), ("", False)])
def test_column_blocks_only_with_a_small_matrix_kernel(monkeypatch, core, blocks):
    """The LSTM's Workspace cuts its recurrent products into column blocks only with OpenBLAS kernels that
    have a small-matrix kernel; with the others (or an unknown BLAS) they are whole, with the same numbers."""
    from minilm.fast import blas

    monkeypatch.setattr(blas, "core", lambda: core)
    assert blas.small_product() == (blas.SMALL_PRODUCT if blocks else 0)
    ws = fast_lstm.Workspace()
    out_err, errors = lstm_errors(T=11, ws=ws, B=32, D=16, Hd=128)
    assert (len(ws.fwd_cols), len(ws.bwd_cols)) == ((4, 4) if blocks else (1, 1))
    assert out_err <= TOL and max(errors.values()) <= TOL, errors


def test_openblas_core_is_named():
    """blas.core() names the kernels of the OpenBLAS NumPy loaded, as threadpoolctl does."""
    from threadpoolctl import threadpool_info

    from minilm.fast import blas

    found = [i.get("architecture") for i in threadpool_info() if i.get("internal_api") == "openblas"]
    if not found or blas.api() is False:
        pytest.skip("NumPy's BLAS here is not an OpenBLAS")
    assert blas.core().lower() == str(found[0]).lower()


@pytest.mark.parametrize("threads", ["1", "2"])
def test_lstm_lost_column_block_is_caught(monkeypatch, threads):
    """A forward whose last block of W_h' is left at zero, and a backward whose last block of W_h^T is
    (products by chunks on two threads, whole on one)."""
    monkeypatch.setenv("MINILM_THREADS", threads)
    monkeypatch.setattr("minilm.fast.blas.core", lambda: "SkylakeX")
    monkeypatch.setattr("minilm.fast.blas.SMALL_PRODUCT", 1)
    for name in ("_prepare_forward", "_transposes"):
        orig = getattr(fast_lstm, name)

        def lossy(ws, *args, orig=orig, name=name):
            orig(ws, *args)
            (ws.Whp_blocks if name == "_prepare_forward" else ws.WhT_blocks)[-1][...] = 0

        with monkeypatch.context() as m:
            m.setattr(fast_lstm, name, lossy)
            out_err, errors = lstm_errors(T=11, B=3, D=4, Hd=32)
        assert (out_err if name == "_prepare_forward" else errors["dx"]) > BROKEN


@pytest.mark.parametrize("threads", ["1", "2"])
def test_lstm_lost_chunk_is_caught(monkeypatch, threads):
    """A backward whose weight products forget the first chunk (t < 8) of a three-chunk sequence (on one
    thread, part 0 is the whole sequence: all of dW_h is lost)."""
    monkeypatch.setenv("MINILM_THREADS", threads)
    monkeypatch.setattr(fast_lstm, "WEIGHT_ROWS", 1)  # one part per chunk
    orig = fast_lstm._weight_products

    def lossy(ws, xt, k, t0, t1):
        orig(ws, xt, k, t0, t1)
        if k == 0:
            ws.dWh_parts[k] = 0

    monkeypatch.setattr(fast_lstm, "_weight_products", lossy)
    _, errors = lstm_errors(T=21)
    assert errors["dWh"] > BROKEN and errors["dWx"] <= TOL


def test_lstm_broken_backward_is_caught(gates):
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


# ---- LSTM LM ----


def lstm_lm_case(seed=7):
    r = np.random.default_rng(seed)
    cfg = lstm_lm.LSTMConfig(vocab_size=9, n_embd=4, n_hidden=5, n_layer=2)
    p = lstm_lm.init_params(cfg, r, np.float64)
    p = {k: v + 0.1 * r.standard_normal(v.shape) for k, v in p.items()}
    state = [tuple(r.standard_normal((2, 3, 5))) for _ in range(2)]  # a carried state, (h, c) per layer
    x, y = r.integers(0, 9, (2, 3, 6))
    return cfg, p, state, x, y


def test_lstm_lm_matches_plain():
    cfg, p, state, x, y = lstm_lm_case()
    loss, grads, final = lstm_lm.loss_grads_and_state(p, cfg, x, y, state=state)
    fl, fg, ffinal = FastLSTMLM(cfg, p, np.float64).loss_grads_and_state(x, y, state)
    assert abs(fl - loss) <= TOL * loss and set(fg) == set(grads) and grad_error(grads, fg) <= TOL
    assert max(float(np.abs(a - b).max()) for pa, pb in zip(final, ffinal, strict=True)
               for a, b in zip(pa, pb, strict=True)) <= TOL


@pytest.mark.parametrize("n_layer", [1, 2])
@pytest.mark.parametrize("first", [True, False])
def test_lstm_lm_embedding_gradient_both_ways(monkeypatch, n_layer, first):
    """The embeddings' gradient as (onehot dA_0) W_x0^T (no dx) or as onehot dx: the plain model's either way;
    the choice follows the multiply-add counts (a character vocabulary: one-hot first)."""
    from minilm.fast import lstm_lm as fast_lm

    assert fast_lm.one_hot_first(65, 12 * 64, 256, 256) and not fast_lm.one_hot_first(2000, 12 * 64, 256, 256)
    monkeypatch.setattr(fast_lm, "one_hot_first", lambda *a: first)
    calls = []
    orig = fast_lstm.input_gradient_product
    monkeypatch.setattr(fast_lstm, "input_gradient_product", lambda *a: calls.append(1) or orig(*a))
    cfg, p, state, x, y = lstm_lm_case()
    cfg = lstm_lm.LSTMConfig(vocab_size=9, n_embd=4, n_hidden=5, n_layer=n_layer)
    p = {k: v for k, v in p.items() if not k.startswith("lstm.1.") or n_layer == 2}
    state = state[:n_layer]
    _, grads, _ = lstm_lm.loss_grads_and_state(p, cfg, x, y, state=state)
    _, fg, _ = FastLSTMLM(cfg, p, np.float64).loss_grads_and_state(x, y, state)
    assert grad_error(grads, fg) <= TOL and len(calls) == first
    assert np.abs(grads["embed"] - fg["embed"]).max() <= TOL * np.abs(grads["embed"]).max()


@pytest.mark.parametrize("n_layer", [1, 2])
@pytest.mark.parametrize("threads", ["1", "2"])
def test_lstm_lm_embedding_gradient_made_behind_the_loop(monkeypatch, n_layer, threads):
    """With the one-hot matrix handed to the backward, layer 0 makes onehot dA_0 a part of the steps at a
    time behind its loop (lstm._left_products, every part once), and their sum is the whole product;
    a part lost (left as it was) is caught in the embeddings' gradient.  One layer on one thread has no
    loop to hide the parts behind: the product is made whole afterwards, from no parts."""
    from minilm.fast import lstm_lm as fast_lm

    monkeypatch.setenv("MINILM_THREADS", threads)
    monkeypatch.setattr(fast_lm, "one_hot_first", lambda *a: True)
    monkeypatch.setattr(fast_lstm, "CHUNK", 2)  # 6 steps: 3 chunks, a part each
    monkeypatch.setattr(fast_lstm, "WEIGHT_ROWS", 1)
    cfg, p, state, x, y = lstm_lm_case()
    cfg = lstm_lm.LSTMConfig(vocab_size=9, n_embd=4, n_hidden=5, n_layer=n_layer)
    p = {k: v for k, v in p.items() if not k.startswith("lstm.1.") or n_layer == 2}
    state = state[:n_layer]
    _, grads, _ = lstm_lm.loss_grads_and_state(p, cfg, x, y, state=state)
    parts, orig = [], fast_lstm._left_products
    monkeypatch.setattr(fast_lstm, "_left_products", lambda ws, left, k, *a: parts.append(k) or orig(ws, left, k, *a))
    model = FastLSTMLM(cfg, p, np.float64)
    _, fg, _ = model.loss_grads_and_state(x, y, state)
    ws = model._ws[0]
    whole = (model._onehot_buf @ ws.Z.reshape(-1, ws.Z.shape[2])) @ ws.WxT  # the product in one go
    assert np.abs(fast_lstm.input_gradient_product(ws, model._onehot_buf) - whole).max() <= TOL * np.abs(whole).max()
    assert np.abs(grads["embed"] - fg["embed"]).max() <= TOL * np.abs(grads["embed"]).max()
    if threads == "1" and n_layer == 1:  # lstm_backward_tm on one core: no parts
        assert parts == [] and ws.left_of is None
        return
    assert sorted(parts) == list(range(len(ws.dWh_parts))) == [0, 1, 2]
    monkeypatch.setattr(fast_lstm, "_left_products", lambda ws, left, k, *a: k == 0 or orig(ws, left, k, *a))
    ws.left_parts.fill(0)  # the lost part stays zero
    _, lost, _ = model.loss_grads_and_state(x, y, state)
    assert np.abs(grads["embed"] - lost["embed"]).max() > BROKEN * np.abs(grads["embed"]).max()


def test_lstm_lm_broken_embedding_gradient_is_caught(monkeypatch):
    """(onehot dA_0) W_x0^T with the gate blocks of W_x0^T out of order (the plain order, not the step's)."""
    from minilm.fast import lstm_lm as fast_lm

    monkeypatch.setattr(fast_lm, "one_hot_first", lambda *a: True)

    def misordered(ws, left):
        T, B = ws.shape[:2]
        return (left @ ws.Z.reshape(T * B, -1)) @ fast_lstm._plain_order(ws.WxT.T).T

    monkeypatch.setattr(fast_lstm, "input_gradient_product", misordered)
    cfg, p, state, x, y = lstm_lm_case()
    _, grads, _ = lstm_lm.loss_grads_and_state(p, cfg, x, y, state=state)
    _, fg, _ = FastLSTMLM(cfg, p, np.float64).loss_grads_and_state(x, y, state)
    assert np.abs(grads["embed"] - fg["embed"]).max() > BROKEN * np.abs(grads["embed"]).max()


@pytest.mark.parametrize("threads", ["1", "2"])
def test_lstm_lm_broken_backward_is_caught(monkeypatch, threads):
    monkeypatch.setenv("MINILM_THREADS", threads)
    cfg, p, state, x, y = lstm_lm_case()
    _, grads, _ = lstm_lm.loss_grads_and_state(p, cfg, x, y, state=state)
    orig = fast_lstm._gradients

    def broken(ws):  # every layer's dW_h (this process's layers) off by 1%
        orig(ws)
        ws.gWh *= 1.01

    monkeypatch.setattr(fast_lstm, "_gradients", broken)
    _, fg, _ = FastLSTMLM(cfg, p, np.float64).loss_grads_and_state(x, y, state)
    assert grad_error(grads, fg) > BROKEN


@pytest.mark.parametrize("threads", ["1", "2", "processes"])
@pytest.mark.parametrize("n_layer", [2, 3])
@pytest.mark.parametrize("weight_rows", [1, 48])
def test_lstm_lm_wavefront_matches_plain(monkeypatch, gates, threads, n_layer, weight_rows):
    """2 and 3 layers over T = 21 (three chunks), the layers one chunk behind each other in two processes,
    on two threads or one after the other on one, weight gradients by chunk or by two chunks: the same
    loss, gradients and final state as minilm.lstm_lm, twice with the same model (its Workspaces reused)."""
    monkeypatch.setenv("MINILM_THREADS", "2" if threads == "processes" else threads)
    monkeypatch.setenv("MINILM_PROCESSES", "1" if threads == "processes" else "0")
    monkeypatch.setattr(fast_lstm, "WEIGHT_ROWS", weight_rows)
    r = np.random.default_rng(11)
    cfg = lstm_lm.LSTMConfig(vocab_size=9, n_embd=4, n_hidden=5, n_layer=n_layer)
    p = {k: v + 0.1 * r.standard_normal(v.shape) for k, v in lstm_lm.init_params(cfg, r, np.float64).items()}
    state = [tuple(r.standard_normal((2, 3, 5))) for _ in range(n_layer)]
    model = FastLSTMLM(cfg, p, np.float64)
    for seed in (1, 2):
        x, y = np.random.default_rng(seed).integers(0, 9, (2, 3, 21))
        loss, grads, final = lstm_lm.loss_grads_and_state(p, cfg, x, y, state=state)
        fl, fg, ffinal = model.loss_grads_and_state(x, y, state)
        assert len(model._ws[0].dWh_parts) == (3 if weight_rows == 1 else 2)
        assert (model._ws[0].shape[5] is not None) == (threads == "processes")  # shared with a second process
        assert abs(fl - loss) <= TOL * loss and grad_error(grads, fg) <= TOL
        assert max(float(np.abs(a - b).max()) for pa, pb in zip(final, ffinal, strict=True)
                   for a, b in zip(pa, pb, strict=True)) <= TOL


@pytest.mark.parametrize("where", ["forward", "backward"])
def test_lstm_lm_wavefront_error_is_raised_not_hung(monkeypatch, where):
    """On two threads (no second process): an exception in the worker's layer (layer 1) reaches the
    caller; the thread on the other side stops waiting for it.  (tests/test_fast_procs.py: processes.)"""
    monkeypatch.setenv("MINILM_THREADS", "2")
    monkeypatch.setenv("MINILM_PROCESSES", "0")
    cfg, p, state, x, y = lstm_lm_case()
    name = "_steps_forward" if where == "forward" else "_steps_backward"
    orig = getattr(fast_lstm, name)
    main = threading.get_ident()

    def failing(*a):
        if threading.get_ident() != main:
            raise FloatingPointError(f"planted in the worker's {where}")
        return orig(*a)

    monkeypatch.setattr(fast_lstm, name, failing)
    with pytest.raises(FloatingPointError, match="planted"):
        FastLSTMLM(cfg, p, np.float64).loss_grads_and_state(x, y, state)


def test_lstm_lm_training_steps_match_plain():
    """Three steps carrying the state, clipping (which triggers) + AdamW with weight decay: the same parameters."""
    cfg, p, state, x, y = lstm_lm_case()
    plain, opt = {k: v.copy() for k, v in p.items()}, optim.init_state(p)
    fast, fstate = FastLSTMLM(cfg, p, np.float64), state
    for _ in range(3):
        _, grads, state = lstm_lm.loss_grads_and_state(plain, cfg, x, y, state=state)
        norm = optim.clip_grad_norm(grads, 0.2)
        optim.adamw_step(plain, grads, opt, 1e-2, 0.9, 0.99, weight_decay=0.1)
        _, fnorm, fstate = fast.step(x, y, 1e-2, 0.9, 0.99, weight_decay=0.1, max_norm=0.2, state=fstate)
        assert norm > 0.2 and abs(fnorm - norm) <= TOL * norm
    assert max(float(np.abs(plain[k] - fast.params[k]).max()) for k in plain) <= TOL


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


def test_matmul_floor_runs(monkeypatch):
    from types import SimpleNamespace

    from minilm.fast.bench import matmul_floor

    cfg = SimpleNamespace(n_embd=8, n_head=2, vocab_size=5, n_layer=1)
    for processes in ("0", "1"):  # threads, or two processes as the fast step uses
        monkeypatch.setenv("MINILM_PROCESSES", processes)
        floor = matmul_floor(cfg, 2, 4, np.random.default_rng(0))
        floor(), floor()
        if hasattr(floor, "close"):
            pid = floor.pid
            floor.close()
            with pytest.raises(ChildProcessError):  # the copy has exited and been waited for
                os.waitpid(pid, 0)


def test_matmul_floor_stays_finite(monkeypatch):
    """The floor's products never read another's output as their input, so their values do not grow from
    call to call until they overflow: the floor times products of finite numbers, as the step makes."""
    from minilm.fast.bench import matmul_floor, transformer_config

    monkeypatch.setenv("MINILM_PROCESSES", "0")
    monkeypatch.setenv("MINILM_THREADS", "1")
    floor = matmul_floor(transformer_config(), 2, 64, np.random.default_rng(0))
    with np.errstate(all="raise"):  # an overflow to inf, or inf - inf = NaN, raises FloatingPointError
        for _ in range(4):
            floor()


# ---- minilm train --model lstm --fast ----


def test_train_lstm_fast_matches_plain(tmp_path):
    """Six steps carrying the state, with and without --fast: the same losses (to float32 rounding),
    the same parameters, and the carried state in the checkpoint."""
    from minilm.training import checkpoint
    from minilm.training.loop import TrainOptions, train

    path = tmp_path / "text.txt"
    path.write_text("the cat sees the dog. a dog sees the cat.\n" * 40)
    runs = {}
    for name, fast in (("plain", False), ("fast", True)):
        opts = TrainOptions(model="lstm", data=str(path), out=str(tmp_path / name), steps=6, eval_every=3,
                            layers=2, width=8, hidden=12, block_size=8, batch_size=4, fast=fast)
        runs[name] = train(opts, log=lambda *a, **k: None, progress=False, plot=False)
    assert abs(runs["fast"]["val_loss"] - runs["plain"]["val_loss"]) < 1e-5 * runs["plain"]["val_loss"]
    a, b = (checkpoint.load(tmp_path / n / "checkpoint.npz") for n in ("plain", "fast"))
    assert max(float(np.abs(a["params"][k] - b["params"][k]).max()) for k in a["params"]) < 1e-5
    assert len(b["carry"]) == 4 and max(float(np.abs(u - v).max()) for u, v in zip(a["carry"], b["carry"],
                                                                                    strict=True)) < 1e-5


def test_bench_goals_read_off_the_results():
    from minilm.fast.bench import format_goals, goal_rows

    results = {"transformer": {"fast": {"vs_torch": 0.75, "vs_floor": 1.4, "peak_mb": 90.0}},
               "lstm": {"fast": {"vs_torch": 1.4, "vs_torch_rounds": [1.3, 1.62, 1.4]}}}
    rows = {r["goal"].split(",")[0].split(" ")[0] + str(r["target"]): r["status"] for r in goal_rows(results)}
    assert rows == {"Transformer0.8": "met", "Transformer1.3": "not met", "LSTM1.25": "acceptable", "peak250": "met"}
    assert "not met" in format_goals(goal_rows(results))
    assert "1.30-1.62x" in format_goals(goal_rows(results))  # the ratio's spread over the rounds
    assert goal_rows({}) == []  # a run without those workloads states no goal


def test_bench_blas_row_compares_the_floors():
    """The products alone, NumPy (floor) against PyTorch (tfloor), and where 0.8x PyTorch puts the step."""
    from minilm.fast.bench import CONTENDERS, blas_row

    assert "tfloor" in CONTENDERS["transformer"]
    rows = {"floor": {"ms": 16.0}, "tfloor": {"ms": 20.0}, "torch": {"ms": 40.0}, "fast": {"ms": 30.0}}
    got = blas_row({"transformer": rows})
    assert got == {"floor_vs_tfloor": 0.8, "goal_vs_floor": 2.0}  # 16 / 20; 0.8 * 40 / 16
    assert blas_row({"transformer": {k: v for k, v in rows.items() if k != "tfloor"}}) is None  # --no-torch


def test_profile_counts_every_op(monkeypatch):
    from minilm.fast import bench, profile

    got = profile.profile_lstm(bench.lstm_step, steps=1, log=lambda *a: None)
    assert got["total_ms"] > 0 and all(ms >= 0 for ms in got["ops"].values())
    assert set(got["ops"]) == {"per step: forward loop over t", "per step: backward loop over t",
                               "per call: products, derivatives, copies"}
    assert min(got["page_faults"].values()) >= 0  # how many a fresh Workspace costs depends on the allocator
    assert got["gate_form"] in ("tanh", "exp") and got["tanh_us"] > 0 and got["exp_us"] > 0


def test_profile_of_the_transformer_step_counts_the_step_alone(monkeypatch):
    """Each kernel's calls per step are the fast step's (the nanoGPT config: 4 layers of 12 products and
    3 for the tied head), none of the floor's, which takes turns with it; the ops sum to the total."""
    from minilm.fast import bench, profile

    monkeypatch.setenv("MINILM_THREADS", "1")  # as profile.run has it: the step on one thread

    got = profile.profile_transformer(bench.transformer_step, steps=1, rounds=2, warmup=1, log=lambda *a: None)
    cfg = bench.transformer_config()
    assert got["calls"]["matmul"] == 12 * cfg.n_layer + 3
    assert got["calls"]["attention_forward"] == got["calls"]["attention_backward"] == cfg.n_layer
    assert got["calls"]["adamw_step"] == got["calls"]["grad_norm"] == 1
    assert got["floor_ms"] > 0 and sum(got["ops"].values()) == pytest.approx(got["total_ms"])
    assert 0 < got["floor_2d_ms"] < got["floor_ms"]  # the floor's 2-D products, timed apart from its attention


def test_profile_of_the_recurrent_products():
    from minilm.fast import profile

    lines = []
    got = profile.profile_lstm_products(log=lines.append, repeats=2)
    times = [row for name, row in got.items() if name not in ("core", "blocks_used")]
    assert len(times) == 5 and all(t > 0 for row in times for t in row[:2])
    assert got["bench forward, h W_h"][2] == 4 and "blocks" in lines[1]  # (32, 128, 512): four column blocks
    from minilm.fast import blas

    used = "by column blocks" if blas.small_product() else "whole"
    assert got["blocks_used"] == (blas.small_product() > 0) and f"steps make them {used}" in lines[-1]


# ---- the second thread ----


def test_background_runs_every_job_once_and_raises_its_errors(monkeypatch):
    """Every submitted job runs exactly once (on the worker or, not yet started, here: newest first);
    wait() returns after its job; an exception in a job reaches the caller."""
    from minilm.fast.threads import Background

    monkeypatch.setenv("MINILM_THREADS", "2")
    ran, gate = [], threading.Event()
    with Background() as bg:
        first = bg.submit(gate.wait)  # holds the worker until released
        jobs = [bg.submit(ran.append, i) for i in range(6)]
        bg.wait(jobs[2])  # not started (the worker waits at the gate): runs here, now
        assert ran == [2]
        gate.set()
    assert sorted(ran) == list(range(6)) and first is not None
    with pytest.raises(ZeroDivisionError):
        with Background() as bg:
            bg.submit(lambda: 1 / 0)
    monkeypatch.setenv("MINILM_THREADS", "1")
    ran.clear()
    with Background() as bg:
        assert bg.submit(ran.append, 0) is None and ran == [0]  # one thread: at once, inside submit


@pytest.mark.parametrize("threads", ["1", "2"])
@pytest.mark.parametrize("n_layer", [1, 2])
def test_lstm_lm_fast_logits_match_plain_forward(monkeypatch, threads, n_layer):
    """Evaluation during --fast training: the fast forward's logits and final state are the plain ones,
    and a training step after it is unchanged (its Workspaces are its own)."""
    monkeypatch.setenv("MINILM_THREADS", threads)
    r = np.random.default_rng(5)
    cfg = lstm_lm.LSTMConfig(vocab_size=9, n_embd=4, n_hidden=5, n_layer=n_layer)
    p = {k: v + 0.1 * r.standard_normal(v.shape) for k, v in lstm_lm.init_params(cfg, r, np.float64).items()}
    state = [tuple(r.standard_normal((2, 4, 5))) for _ in range(n_layer)]
    x, y = r.integers(0, 9, (2, 4, 19))
    model = FastLSTMLM(cfg, p, np.float64)
    before = model.loss_grads_and_state(x[:3], y[:3])[1]
    logits, cache = lstm_lm.forward(p, cfg, x, state=state)
    flogits, ffinal = model.logits(x, state)
    assert flogits.shape == logits.shape and float(np.abs(flogits - logits).max()) <= TOL
    assert max(float(np.abs(a - b).max()) for pa, pb in zip(lstm_lm.final_state(cache), ffinal, strict=True)
               for a, b in zip(pa, pb, strict=True)) <= TOL
    after = model.loss_grads_and_state(x[:3], y[:3])[1]
    assert all(np.array_equal(before[k], after[k]) for k in before)


# ---- BLAS on one thread for every product of a fast step ----


def test_fast_steps_keep_blas_on_one_thread(monkeypatch):
    """Inside every fast model's step, and an LSTM call's last products, BLAS runs on one thread: a product
    on OpenBLAS's threads leaves them spinning on the core the fast path's second thread or process needs
    (minilm.fast.blas.on_one_thread).  Checked where products run: the loss (after the output layer), the
    gradient norm (a dot product) and the LSTM's sum of weight-gradient parts."""
    from threadpoolctl import threadpool_limits

    from minilm import transformer as tr
    from minilm.fast import blas
    from minilm.fast import kernels as K
    from minilm.fast.gpt import FastTransformer

    if not blas.api():
        pytest.skip("NumPy's BLAS is not an OpenBLAS minilm.fast.blas can find")
    get = blas.api()[0]
    seen = []

    def spy(obj, name):
        orig = getattr(obj, name)

        def wrapped(*a, **k):
            seen.append((name, get()))
            return orig(*a, **k)

        monkeypatch.setattr(obj, name, wrapped)

    spy(K, "cross_entropy_inplace"), spy(FlatParams, "grad_norm"), spy(FlatParams, "adamw_step")
    spy(fast_lstm, "_gradients")
    cfg, p, state, x, y = lstm_lm_case()
    r = np.random.default_rng(0)
    gcfg = tr.TransformerConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=8)
    ncfg = ngram.NgramConfig(vocab_size=13, context=3, n_embd=4, n_hidden=6)
    with threadpool_limits(2, user_api="blas"):
        assert get() == 2
        FastLSTMLM(cfg, p, np.float64).step(x, y, 1e-3, state=state)
        FastTransformer(gcfg, tr.init_params(gcfg, r)).step(r.integers(0, 11, (4, 8)), r.integers(0, 11, (4, 8)),
                                                            1e-3)
        FastNgram(ncfg, ngram.init_params(ncfg, r)).step(r.integers(0, 13, (5, 3)), r.integers(0, 13, 5), 1e-3)
        args, dhs, _ = lstm_inputs()
        fast_lstm.lstm_backward(dhs, fast_lstm.lstm_forward(*args)[2])
        assert get() == 2  # restored after each call
    names = {n for n, _ in seen}
    # the Transformer's step split over two processes has its norm from the halves' sum, not grad_norm
    assert names == {"cross_entropy_inplace", "grad_norm", "adamw_step", "_gradients"} and len(seen) >= 10
    assert all(threads == 1 for _, threads in seen), seen


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_axpby_both_ways(dtype, monkeypatch):
    """minilm.fast.blas.axpby: y = alpha x + beta y, through OpenBLAS and through NumPy (no OpenBLAS, or a
    strided x), the same numbers to rounding."""
    from minilm.fast import blas

    r = np.random.default_rng(0)
    x, y = r.standard_normal((2, 1000)).astype(dtype)
    want = 0.3 * x.astype(np.float64) - 1.7 * y
    tol = 1e-6 if dtype == np.float32 else 1e-14
    for strided in (False, True):
        got = y.copy()
        blas.axpby(0.3, np.repeat(x, 2)[::2] if strided else x, -1.7, got)
        assert got.dtype == dtype and np.abs(got - want).max() <= tol * np.abs(want).max()
    monkeypatch.setattr(blas, "_axpby", {})
    got = y.copy()
    blas.axpby(0.3, x, -1.7, got)
    assert np.abs(got - want).max() <= tol * np.abs(want).max()


def test_column_blocks_benchmark_runs_both_and_restores_the_default(capsys):
    """benchmarks/column_blocks.py times both layouts in the steps and leaves minilm.fast.blas as it was."""
    import importlib.util
    from pathlib import Path

    from minilm.fast import blas

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "column_blocks.py"
    spec = importlib.util.spec_from_file_location("column_blocks_bench", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    before = (blas.SMALL_PRODUCT, blas.small_product())
    assert script.main(["--pairs", "1", "--calls", "1"]) == 0
    out = capsys.readouterr().out
    assert "bench LSTM call" in out and "LSTM LM step" in out and out.count("whole / blocks") == 2
    assert f"OpenBLAS kernels: {blas.core() or 'unknown'}" in out and "load average after" in out
    assert (blas.SMALL_PRODUCT, blas.small_product()) == before

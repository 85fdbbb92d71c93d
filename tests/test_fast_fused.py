"""minilm.fast.fused (minilm/fast/loops.c): each compiled loop against the NumPy chain it replaces, and the
models without the loops.

Every kernel of minilm.fast.kernels (and flat.adamw_rows) runs twice on
copies of the same inputs, once with the loops (fused.ON) and once with the
NumPy chains; each run counts the loops it called, so a test says which code
it compared.  In float64 the two differ by rounding only (1e-12 relative); in
float32 by a few units in the last place.  A loop broken on purpose is caught.
"""

import numpy as np
import pytest

from minilm import transformer as tr
from minilm.fast import flat, fused
from minilm.fast import kernels as K

needs_loops = pytest.mark.skipif(not fused.ON, reason="no C compiler here: the fast path runs its NumPy chains")

TOL = {np.float64: 1e-12, np.float32: 2e-5}
LOOPS = ("gelu_forward", "gelu_backward", "layernorm_forward", "layernorm_backward", "softmax_forward",
         "softmax_backward", "adamw", "lstm_derivatives", "add_bias", "combine", "cross_entropy",
         "transpose_heads")


def _inputs(dtype, seed=0):
    r = np.random.default_rng(seed)
    B, H, T, hs, F = 3, 2, 9, 4, 12
    M, C = B * T, H * hs
    f = r.standard_normal((M, F)) * 3
    f[0, :4] = [-30.0, -12.0, 12.0, 30.0]  # -2u > 80 at -30: the loop clamps it, the chain's exp gives inf
    return dict(f=f, bias=r.standard_normal(F), dyF=r.standard_normal((M, F)), x=r.standard_normal((M, C)) * 2 + 1,
                gamma=r.standard_normal(C), beta=r.standard_normal(C), dy=r.standard_normal((M, C)),
                acc=r.standard_normal((M, C)), qkv=r.standard_normal((M, 3 * C)), dout=r.standard_normal((M, C)),
                p=r.standard_normal(50), g=r.standard_normal(50), m=r.standard_normal(50) * 0.1,
                v=np.abs(r.standard_normal(50)) * 0.1, shape=(B, H, T, hs, F))


def _heads(a, B, H, T, hs):
    return a.reshape(B, T, H, hs).transpose(0, 2, 1, 3)  # (M, C) view -> (B, H, T, hs)


def run_kernel(name, dtype, on, causal=True):
    """Run kernel ``name`` with fused.ON = on; returns (its outputs, the loops it called)."""
    d = {k: (a.astype(dtype) if isinstance(a, np.ndarray) else a) for k, a in _inputs(dtype).items()}
    B, H, T, hs, F = d["shape"]
    M, C = B * T, H * hs
    called = []
    saved = {n: getattr(fused, n) for n in LOOPS}
    for n, fn in saved.items():
        setattr(fused, n, lambda *a, _fn=fn, _n=n: (called.append(_n), _fn(*a))[1])
    was, fused.ON = fused.ON, on
    try:
        if name == "gelu":
            f, s, g = d["f"], np.empty((M, F), dtype), np.empty((M, F), dtype)
            f0 = f.copy()
            K.gelu_bias_forward(f, d["bias"], s, g)
            assert (f == f0).all()  # the product is left as it is
            dy, db = d["dyF"], np.empty(F, dtype)
            K.gelu_backward_inplace(dy, f, s, d["bias"], db, np.ones(M, dtype))
            out = dict(s=s, g=g, dx=dy, dbias=db)
        elif name in ("layernorm", "layernorm_no_acc"):
            out_, xhat, rstd = np.empty((M, C), dtype), np.empty((M, C), dtype), np.empty(M, dtype)
            K.layernorm_forward(d["x"], d["gamma"], d["beta"], out_, xhat, rstd)
            dy, acc = d["dy"], (d["acc"] if name == "layernorm" else None)
            dg, db = np.empty(C, dtype), np.empty(C, dtype)
            K.layernorm_backward(dy, xhat, rstd, d["gamma"], acc, dg, db, np.empty((M, C), dtype), np.ones(M, dtype))
            out = dict(out=out_, xhat=xhat, rstd=rstd, dx=dy if acc is None else acc, dgamma=dg, dbeta=db)
        elif name == "attention":
            q, k, v = (_heads(d["qkv"][:, i * C:(i + 1) * C], B, H, T, hs) for i in range(3))
            P, dP, att, dqkv = (np.empty((B, H, T, T), dtype), np.empty((B, H, T, T), dtype),
                                np.empty((M, C), dtype), np.zeros((M, 3 * C), dtype))
            mask = K.causal_additive_mask(T, dtype) if causal else None
            scale = dtype(1 / np.sqrt(hs))
            kT, vT = np.empty((B, H, hs, T), dtype), np.empty((B, H, hs, T), dtype)  # as gpt passes them
            K.attention_forward(q, k, v, P, _heads(att, B, H, T, hs), mask, scale, kT, vT)
            weights = P.copy()
            dq, dk, dv = (_heads(dqkv[:, i * C:(i + 1) * C], B, H, T, hs) for i in range(3))
            K.attention_backward(_heads(d["dout"], B, H, T, hs), q, k, v, P, dP, dq, dk, dv, scale, vT)
            out = dict(P=weights, att=att, dqkv=dqkv)
        elif name == "adamw":
            p, g, m, v = d["p"], d["g"], d["m"], d["v"]
            flat.adamw_rows(p, g, m, v, 30, 0, 50, (1e-2, 0.9, 0.99, 1e-8, 0.1, 0.7, 3))  # 30 decayed entries
            out = dict(p=p, m=m, v=v)
        elif name == "bias":
            y = d["qkv"]
            K.add_bias(y, d["bias"][:8].repeat(3))  # (M, 3C) += (3C,)
            out = dict(y=y)
        elif name in ("cross_entropy", "cross_entropy_ignoring"):  # the masked LM's targets: some ignored
            logits, targets = d["dyF"], np.arange(M) % F
            if name == "cross_entropy_ignoring":
                targets[::3] = tr.IGNORE_INDEX
            loss = K.cross_entropy_inplace(logits, targets, np.ones(F, dtype), tr.IGNORE_INDEX)
            out = dict(dlogits=logits, loss=np.array([loss]))
        elif name == "combine":  # a split step's gradients (minilm.fast.gpt) go through this loop or two passes
            g, g2 = d["p"], d["g"]
            sumsq = flat.combine_halves(g, g2, 0.25, 0.75)  # the loop with fused.ON, else two passes and a dot
            out = dict(g=g, sumsq=np.array([sumsq]))
        else:
            raise ValueError(name)
    finally:
        fused.ON = was
        for n, fn in saved.items():
            setattr(fused, n, fn)
    return out, called


KERNELS = {"gelu": {"gelu_forward", "gelu_backward"},
           "layernorm": {"layernorm_forward", "layernorm_backward"},
           "layernorm_no_acc": {"layernorm_forward", "layernorm_backward"},
           "attention": {"softmax_forward", "softmax_backward", "transpose_heads"}, "adamw": {"adamw"},
           "bias": {"add_bias"},
           "combine": {"combine"}, "cross_entropy": {"cross_entropy"}, "cross_entropy_ignoring": {"cross_entropy"}}


def _error(a, b) -> float:
    return max(float(np.abs(a[k] - b[k]).max() / max(np.abs(b[k]).max(), 1e-30)) for k in b)


@needs_loops
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", KERNELS)
def test_each_loop_matches_its_numpy_chain(name, dtype):
    with np.errstate(over="ignore"):
        looped, called = run_kernel(name, dtype, True)
        chained, none = run_kernel(name, dtype, False)
    assert set(called) == KERNELS[name] and none == []  # which code each run tested
    assert _error(looped, chained) <= TOL[dtype], _error(looped, chained)
    assert all(np.isfinite(a).all() for a in looped.values())


@needs_loops
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_the_softmax_loops_without_the_causal_mask(dtype):
    """The masked LM's attention sees every key: the loops must not mask (mask None)."""
    looped, called = run_kernel("attention", dtype, True, causal=False)
    chained, _ = run_kernel("attention", dtype, False, causal=False)
    assert "softmax_forward" in called
    assert _error(looped, chained) <= TOL[dtype]
    assert (looped["P"] > 0).all()  # no key masked


def _off_by(fn, factor=1.01, out=0):
    """A loop that writes its output args[out] (by default the first) 1% off (a broken backward)."""
    def broken(*args):
        result = fn(*args)
        args[out][...] *= factor
        return result

    return broken


@needs_loops
@pytest.mark.parametrize("name,loop", [("gelu", "gelu_backward"), ("layernorm_no_acc", "layernorm_backward"),
                                       ("attention", "softmax_backward"), ("cross_entropy", "cross_entropy")])
def test_a_broken_loop_is_caught(name, loop, monkeypatch):
    chained, _ = run_kernel(name, np.float64, False)
    monkeypatch.setattr(fused, loop, _off_by(getattr(fused, loop)))
    looped, called = run_kernel(name, np.float64, True)
    assert loop in called
    assert _error(looped, chained) > 1e-4


def test_the_numpy_chains_still_train_the_transformer(monkeypatch):
    """Without the loops (no C compiler, or MINILM_FUSED=0) the fast Transformer is the NumPy chains: the same
    loss and gradients as the plain model, and no loop is called."""
    from minilm.fast.gpt import FastTransformer

    monkeypatch.setenv("MINILM_THREADS", "1")
    monkeypatch.setattr(fused, "ON", False)
    called = []
    for n in LOOPS:
        monkeypatch.setattr(fused, n, lambda *a, _n=n: called.append(_n))
    cfg = tr.TransformerConfig(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=8, ffn="gelu")
    p = tr.init_params(cfg, np.random.default_rng(0), np.float64)
    x, y = np.random.default_rng(1).integers(0, 11, (2, 3, 7))
    loss, grads = tr.loss_and_grads(p, cfg, x, y)
    fl, fg = FastTransformer(cfg, p, np.float64).loss_and_grads(x, y)
    assert called == []
    assert abs(fl - loss) <= 1e-10 * abs(loss)
    assert max(float(np.abs(fg[k] - grads[k]).max()) for k in grads) <= 1e-10 * max(
        float(np.abs(g).max()) for g in grads.values())


def test_fused_off_in_the_environment(tmp_path):
    """MINILM_FUSED=0 turns the loops off in a new process (and in the second process, which inherits it)."""
    import subprocess
    import sys

    code = "from minilm.fast import fused; print(fused.ON)"
    out = subprocess.run([sys.executable, "-c", code], env={**__import__("os").environ, "MINILM_FUSED": "0"},
                         capture_output=True, text=True, cwd=tmp_path, check=True)
    assert out.stdout.strip() == "False"


def run_lstm(dtype, on, monkeypatch, broken: str | None = None):
    """minilm.fast.lstm's forward and backward over one sequence (one thread) with fused.ON = on; returns
    (hs, the gradients, the step loops called).  ``broken``: that step loop's da / h written 1% off."""
    from minilm import lstm
    from minilm.fast import lstm as fast_lstm

    monkeypatch.setenv("MINILM_THREADS", "1")
    monkeypatch.setattr(fused, "ON", on)
    called, get = [], fused.step_function

    def counted(name, dt):
        fn = get(name, dt)

        def step(B, Hd, *ptrs):
            called.append(name)
            fn(B, Hd, *ptrs)
            if name == broken:  # the last pointer is the step's output: h (forward) or da (backward)
                n = B * Hd * (4 if name == "lstm_step_backward" else 1)
                out = np.ctypeslib.as_array((np.ctypeslib.ctypes.c_double * n).from_address(ptrs[-1]))
                out *= 1.01

        return step

    monkeypatch.setattr(fused, "step_function", counted)
    derivatives = fused.lstm_derivatives
    monkeypatch.setattr(fused, "lstm_derivatives", lambda *a: (called.append("lstm_derivatives"), derivatives(*a)))
    r = np.random.default_rng(3)
    B, T, D, Hd = 3, 6, 5, 4
    Wx, Wh, b = (a.astype(dtype) for a in lstm.lstm_init(r, D, Hd))
    b += (0.3 * r.standard_normal(b.shape)).astype(dtype)
    x, dhs = r.standard_normal((B, T, D)).astype(dtype), r.standard_normal((B, T, Hd)).astype(dtype)
    h0, c0 = (0.5 * r.standard_normal((B, Hd))).astype(dtype), (0.5 * r.standard_normal((B, Hd))).astype(dtype)
    hs, _, cache = fast_lstm.lstm_forward(x, h0, c0, Wx, Wh, b)
    grads = fast_lstm.lstm_backward(dhs, cache)
    return np.array(hs), [np.array(g) for g in grads], called


@needs_loops
def test_the_lstm_step_loops_match_the_numpy_steps(monkeypatch):
    hs, grads, called = run_lstm(np.float64, True, monkeypatch)
    hs0, grads0, none = run_lstm(np.float64, False, monkeypatch)
    assert set(called) == {"lstm_step_forward", "lstm_step_backward", "lstm_derivatives"} and none == []
    assert called.count("lstm_step_forward") == called.count("lstm_step_backward") == 6  # one call per step
    assert float(np.abs(hs - hs0).max()) <= 1e-12
    for g, g0 in zip(grads, grads0, strict=True):
        assert float(np.abs(g - g0).max()) <= 1e-12 * max(float(np.abs(g0).max()), 1.0)


@needs_loops
@pytest.mark.parametrize("loop", ["lstm_step_forward", "lstm_step_backward", "lstm_derivatives"])
def test_a_broken_lstm_step_loop_is_caught(loop, monkeypatch):
    hs0, grads0, _ = run_lstm(np.float64, False, monkeypatch)
    if loop == "lstm_derivatives":
        monkeypatch.setattr(fused, loop, _off_by(fused.lstm_derivatives, 1.01, out=2))  # dgate 1% off
    hs, grads, called = run_lstm(np.float64, True, monkeypatch, broken=loop)
    assert loop in called
    worst = max([float(np.abs(hs - hs0).max())] + [float(np.abs(g - g0).max()) for g, g0 in zip(grads, grads0,
                                                                                             strict=True)])
    assert worst > 1e-4


@needs_loops
def test_the_loops_compile_once_into_the_cache_folder(tmp_path):
    """A new cache folder: the first process compiles loops.c there (and removes another source's loops),
    the next one loads what the first compiled."""
    import os
    import subprocess
    import sys

    folder = tmp_path / "minilm"
    folder.mkdir()
    (folder / "loops-0000000000000000.so").write_bytes(b"an older source's loops")
    code = (f"import os; from minilm.fast import fused; f = {str(folder)!r}; names = sorted(os.listdir(f)); "
            "print(fused.ON, names, [os.stat(os.path.join(f, n)).st_mtime_ns for n in names])")
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path), "MINILM_FUSED": "1"}
    runs = [subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True,
                           cwd=tmp_path).stdout.strip() for _ in range(2)]
    assert runs[0] == runs[1], runs  # the same file, not compiled again
    on, names = runs[0].split(" ", 1)
    assert on == "True"
    assert names.count("loops-") == 1 and "0000000000000000" not in names


@needs_loops
def test_a_compiler_that_refuses_the_wide_vector_flag_still_compiles_the_loops(tmp_path):
    """fused.WIDE (-mprefer-vector-width=512 on x86-64) is tried first; a compiler that rejects it (here a
    wrapper around cc that fails on it) gets the tries without it, and the loops still load."""
    import os
    import shutil
    import subprocess
    import sys

    real = shutil.which(os.environ.get("CC") or "cc")
    wrapper = tmp_path / "picky-cc"
    wrapper.write_text("#!/bin/sh\nfor a in \"$@\"; do case \"$a\" in -mprefer-vector-width=*) "
                       "echo 'unknown flag' >&2; exit 1;; esac; done\n" f'exec "{real}" "$@"\n')
    wrapper.chmod(0o755)
    code = "from minilm.fast import fused; print(fused.ON, fused.WIDE)"
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path), "MINILM_FUSED": "1", "CC": str(wrapper)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True,
                         cwd=tmp_path).stdout.strip()
    assert out.startswith("True"), out


@needs_loops
def test_a_loop_refuses_arrays_of_the_wrong_shape_or_layout():
    """The loops index raw memory: a bias one short, a strided view or a mixed dtype is refused, not read past."""
    f, s, g = (np.zeros((4, 6), np.float32) for _ in range(3))
    fused.gelu_forward(f, np.zeros(6, np.float32), s, g)
    strided = np.zeros((4, 12), np.float32)[:, ::2]  # (4, 6), not contiguous
    for bias, out in ((np.zeros(5, np.float32), s), (np.zeros(6, np.float64), s), (np.zeros(6, np.float32), strided)):
        with pytest.raises(ValueError, match="fused.gelu_forward"):
            fused.gelu_forward(f, bias, out, g)
    with pytest.raises(ValueError, match="fused.softmax_forward"):
        fused.softmax_forward(np.zeros((2, 3, 4), np.float32), True, 1.0)


def _softmax_reference(S, causal, scale):
    """softmax(scale S + mask) per row in float64, 0 at the masked keys."""
    x = S.astype(np.float64) * scale
    if causal:
        T = S.shape[-1]
        x = np.where(np.tril(np.ones((T, T), bool)), x, -np.inf)
    x = x - x.max(axis=-1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=-1, keepdims=True)


@needs_loops
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("T", [1, 9, 16, 17, 40, 64])
@pytest.mark.parametrize("causal", [True, False])
def test_the_softmax_loop_at_every_row_length(T, causal, dtype):
    """The loop goes by blocks of 16 keys, a causal row to its length rounded up: rows shorter than, equal to
    and longer than a block, T not a multiple of 16, and scores far apart (exp of -80 and below)."""
    r = np.random.default_rng(T)
    S = (r.standard_normal((3, T, T)) * 40).astype(dtype)  # scale 0.5: differences of 100 and more in a row
    want = _softmax_reference(S, causal, 0.5)
    got = S.copy()
    fused.softmax_forward(got, causal, 0.5)
    # float32: the scores scale c S rounds to float, which moves e^(c S) by up to |c S| 2^-24 relative
    assert float(np.abs(got - want).max()) <= (1e-14 if dtype == np.float64 else 2e-6)
    if causal:
        assert (got[:, np.triu_indices(T, 1)[0], np.triu_indices(T, 1)[1]] == 0).all()  # future keys: exactly 0
    np.testing.assert_allclose(got.sum(-1), 1, rtol=1e-6 if dtype == np.float32 else 1e-14)


@needs_loops
def test_the_softmax_loop_keeps_inf_and_nan_as_numpy_does():
    """A score of nan gives its row nan, as NumPy's chain does; -inf scores are keys with weight 0."""
    S = np.zeros((1, 4, 4), np.float32)
    S[0, 3, 1] = -np.inf
    S[0, 2, 0] = np.nan
    fused.softmax_forward(S, False, 1.0)
    assert np.isnan(S[0, 2]).all()
    np.testing.assert_allclose(S[0, 3], [1 / 3, 0, 1 / 3, 1 / 3], rtol=1e-6)
    np.testing.assert_allclose(S[0, :2], 0.25, rtol=1e-6)


@needs_loops
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_transpose_heads_matches_numpys_copy(dtype):
    B, T, H, hs = 3, 7, 2, 5
    qkv = np.random.default_rng(0).standard_normal((B * T, 3 * H * hs)).astype(dtype)
    k = qkv[:, H * hs:2 * H * hs].reshape(B, T, H, hs).transpose(0, 2, 1, 3)  # gpt's view of k
    out = np.empty((B, H, hs, T), dtype)
    fused.transpose_heads(k, out)
    assert (out == k.swapaxes(-1, -2)).all()
    with pytest.raises(ValueError, match="fused.transpose_heads"):
        fused.transpose_heads(k[:, :, ::2], np.empty((B, H, hs, (T + 1) // 2), dtype))  # every other row: refused
    with pytest.raises(ValueError, match="fused.transpose_heads"):
        fused.transpose_heads(k, np.empty((B, H, T, hs), dtype))  # not the transposed shape


@needs_loops
def test_the_cross_entropy_loop_refuses_a_target_outside_the_vocabulary():
    for bad in (-1, 5):
        with pytest.raises(ValueError, match="fused.cross_entropy: a target outside 0..4"):
            fused.cross_entropy(np.zeros((3, 5), np.float32), np.array([0, bad, 1]), -100)
    assert fused.cross_entropy(np.zeros((2, 5)), np.array([-100, -100]), -100) == 0.0  # no row counts

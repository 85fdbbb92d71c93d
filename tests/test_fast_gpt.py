"""minilm.fast.gpt against minilm.transformer: the same loss, gradients and training steps.

In float64 two correct implementations differ by rounding only, so the
tolerance is 1e-10 (a broken gradient is off by 1e-2 or more, and the
broken-backward tests show the comparison catches it).  In float32 the
yardstick is the plain model itself: the fast path's distance to the float64
result may be at most a few times the plain float32 code's.
"""

import numpy as np
import pytest

from minilm import optim
from minilm import transformer as tr
from minilm.fast import kernels as K
from minilm.fast import threads
from minilm.fast.gpt import FastTransformer, supports
from minilm.gradcheck import TOLERANCE, check_model

TOL = 1e-10  # float64: rounding differences only
BROKEN = 1e-4  # a broken backward is off by far more than this

GPT_CONFIGS = {
    "nanogpt": dict(ffn="gelu", pos="learned", tie_weights=True, scale_embed=False),
    "relu-sinusoidal-untied": dict(ffn="relu", pos="sinusoidal", tie_weights=False, scale_embed=True),
}


def gpt(kind, dtype=np.float64, seed=0):
    cfg = tr.TransformerConfig(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=8, norm="pre",
                               **GPT_CONFIGS[kind])
    r = np.random.default_rng(seed)
    p = tr.init_params(cfg, r, dtype)
    for k in p:  # biases and LayerNorm parameters away from their 0 / 1 start, so every term matters
        if p[k].ndim == 1:
            p[k] += (0.3 * r.standard_normal(p[k].shape)).astype(dtype)
    x, y = r.integers(0, 11, (2, 3, 7))
    return cfg, p, x, y


def grad_error(g, h) -> float:
    """Largest |g - h| over every parameter, relative to the largest |g| (some gradients, such as
    that of the key bias, are exactly 0 in theory: an elementwise relative error would compare noise)."""
    scale = max(float(np.abs(a).max()) for a in g.values())
    return max(float(np.abs(g[k] - h[k]).max()) for k in g) / scale


@pytest.mark.parametrize("kind", GPT_CONFIGS)
def test_transformer_loss_and_grads_match_plain(kind):
    cfg, p, x, y = gpt(kind)
    loss, grads = tr.loss_and_grads(p, cfg, x, y)
    fast = FastTransformer(cfg, p, np.float64)
    for _ in range(2):  # the second call reuses every buffer
        fl, fg = fast.loss_and_grads(x, y)
        assert set(fg) == set(grads)
        assert abs(fl - loss) <= TOL * abs(loss)
        assert grad_error(grads, fg) <= TOL


def test_transformer_fast_gradcheck():
    """The fast path's own gradients against finite differences (a few entries of every parameter)."""
    cfg, p, x, y = gpt("nanogpt")
    fast = FastTransformer(cfg, p, np.float64)

    def loss_and_grads(params):
        fast.load(params)
        return fast.loss_and_grads(x, y)

    errors = check_model(loss_and_grads, p, max_entries=3, float32=False)  # the fast model is built in float64
    assert max(errors.values()) <= TOLERANCE, errors


def _scaled(fn, factor=1.01):
    def broken(*args):
        fn(*args)
        args[0][...] *= factor  # the gradient buffer the kernel just wrote

    return broken


@pytest.mark.parametrize("kernel", ["gelu_backward_inplace", "layernorm_backward_dy", "attention_dq"])
def test_broken_fast_backward_is_caught(kernel, monkeypatch):
    cfg, p, x, y = gpt("nanogpt")
    _, grads = tr.loss_and_grads(p, cfg, x, y)
    if kernel == "gelu_backward_inplace":
        monkeypatch.setattr(K, kernel, _scaled(K.gelu_backward_inplace))
    elif kernel == "layernorm_backward_dy":  # drop the mean(g * xhat) term
        orig = K.layernorm_backward

        def no_xhat_term(dy, xhat, rstd, gamma, dx_acc, dgamma, dbeta, tmp, ones_m):
            orig(dy, np.zeros_like(xhat), rstd, gamma, dx_acc, dgamma, dbeta, tmp, ones_m)

        monkeypatch.setattr(K, "layernorm_backward", no_xhat_term)
    else:  # forget the 1/sqrt(hs) of dq
        orig = K.attention_backward
        monkeypatch.setattr(K, "attention_backward",
                            lambda dout, q, k, v, P, dP, dq, dk, dv, scale: orig(dout, q, k, v, P, dP, dq, dk, dv, 1.0))
    _, fg = FastTransformer(cfg, p, np.float64).loss_and_grads(x, y)
    assert grad_error(grads, fg) > BROKEN


def test_transformer_float32_as_accurate_as_plain():
    cfg, p64, x, y = gpt("nanogpt")
    _, g64 = tr.loss_and_grads(p64, cfg, x, y)
    p32 = {k: v.astype(np.float32) for k, v in p64.items()}
    _, g32 = tr.loss_and_grads(p32, cfg, x, y)
    _, f32 = FastTransformer(cfg, p32, np.float32).loss_and_grads(x, y)
    assert all(g.dtype == np.float32 for g in f32.values())
    flat = lambda g: np.concatenate([g[k].astype(np.float64).ravel() for k in g64])  # noqa: E731
    plain_err = np.linalg.norm(flat(g32) - flat(g64))
    fast_err = np.linalg.norm(flat(f32) - flat(g64))
    assert plain_err < 1e-4 * np.linalg.norm(flat(g64))  # float32 rounding, not a bug
    assert fast_err <= 4 * plain_err


def test_transformer_training_steps_match_plain():
    """Three steps of clipping (which triggers) + AdamW with weight decay: the same parameters."""
    cfg, p, x, y = gpt("nanogpt")
    plain = {k: v.copy() for k, v in p.items()}
    state = optim.init_state(plain)
    fast = FastTransformer(cfg, p, np.float64)
    for step in range(3):
        lr = optim.lr_at(step, 1e-2, 1e-3, 2, 3)
        _, grads = tr.loss_and_grads(plain, cfg, x, y)
        norm = optim.clip_grad_norm(grads, 0.5)
        optim.adamw_step(plain, grads, state, lr, 0.9, 0.99, weight_decay=0.1)
        _, fnorm = fast.step(x, y, lr, 0.9, 0.99, weight_decay=0.1, max_norm=0.5)
        assert norm > 0.5 and abs(fnorm - norm) <= TOL * norm
    assert max(float(np.abs(plain[k] - fast.params[k]).max()) for k in plain) <= TOL
    s = fast.opt_state()
    assert s["t"] == state["t"] == 3
    assert max(float(np.abs(state["m"][k] - s["m"][k]).max()) for k in plain) <= TOL


def test_threads_change_nothing(monkeypatch):
    cfg, p, x, y = gpt("nanogpt", np.float32)
    monkeypatch.setattr(threads, "BLOCK", 64)  # tiny blocks, so the small test arrays are split too
    _, g2 = FastTransformer(cfg, p, np.float32).loss_and_grads(x, y)
    monkeypatch.setenv("MINILM_THREADS", "1")
    _, g1 = FastTransformer(cfg, p, np.float32).loss_and_grads(x, y)
    assert all(np.array_equal(g1[k], g2[k]) for k in g1)


def test_transformer_views_and_bad_input():
    cfg, p, x, y = gpt("nanogpt", np.float32)
    fast = FastTransformer(cfg, p)
    assert np.shares_memory(fast.params["h0.attn.W_q"], fast.flat.p)
    fast.params["h0.attn.W_k"][0, 0] = 5.0  # a view: writing it writes the stored (C, 3C) matrix
    assert fast.flat.raw["h0.attn.W_qkv"][0, cfg.n_embd] == 5.0
    with pytest.raises(ValueError, match="outside"):
        fast.loss_and_grads(x + 11, y)
    with pytest.raises(ValueError, match="block_size"):
        fast.loss_and_grads(np.zeros((1, 9), int), np.zeros((1, 9), int))
    with pytest.raises(ValueError, match="shape"):
        fast.load({**p, "wte": p["wte"][:3]})
    post = tr.TransformerConfig(vocab_size=11, norm="post")
    assert not supports(post)
    with pytest.raises(ValueError, match="pre-LN"):
        FastTransformer(post)




# ---- minilm train --fast ----


def _run(tmp_path, name, text, **kw):
    from minilm.training.loop import TrainOptions, train

    path = tmp_path / "text.txt"
    path.write_text(text)
    opts = TrainOptions(model="transformer", data=str(path), out=str(tmp_path / name), steps=6, eval_every=3,
                        layers=1, heads=2, width=16, block_size=8, batch_size=4, norm="pre", activation="gelu",
                        positions="learned", tie_weights=True, **kw)
    return train(opts, log=lambda *a, **k: None, progress=False, plot=False)


def test_train_fast_matches_plain_and_keeps_the_checkpoint(tmp_path):
    """Six steps with and without --fast: the same losses (to float32 rounding) and the same checkpoint format."""
    from minilm.training import checkpoint

    text = "the cat sees the dog. a dog sees the cat.\n" * 40
    plain = _run(tmp_path, "plain", text)
    fast = _run(tmp_path, "fast", text, fast=True)
    assert abs(fast["val_loss"] - plain["val_loss"]) < 1e-4 * plain["val_loss"]
    a, b = (checkpoint.load(tmp_path / n / "checkpoint.npz") for n in ("plain", "fast"))
    assert set(a["params"]) == set(b["params"])
    assert set(a["opt_state"]["m"]) == set(b["opt_state"]["m"]) and b["opt_state"]["t"] == 6
    # attn.b_k has a gradient of exactly 0 in theory (a constant added to every key leaves the softmax
    # unchanged), so both runs see rounding noise there, and Adam turns any noise into steps of size lr.
    # Every other parameter agrees to float32 rounding.
    diff = {k: float(np.abs(a["params"][k] - b["params"][k]).max()) for k in a["params"]}
    assert max(d for k, d in diff.items() if not k.endswith("attn.b_k")) < 1e-6, diff

"""minilm.fast.gpt against minilm.transformer: the same loss, gradients and training steps.

In float64 two correct implementations differ by rounding only, so the
tolerance is 1e-10 (a broken gradient is off by 1e-2 or more, and the
broken-backward tests show the comparison catches it).  In float32 the
yardstick is the plain model itself: the fast path's distance to the float64
result may be at most a few times the plain float32 code's.
"""

import numpy as np
import pytest

from minilm import mlm, optim
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
    "the-text": dict(norm="post", ffn="relu", pos="sinusoidal", tie_weights=False, scale_embed=True),
    "post-gelu-learned-tied": dict(norm="post", ffn="gelu", pos="learned", tie_weights=True, scale_embed=False),
    "pre-dropout": dict(ffn="gelu", pos="learned", tie_weights=True, scale_embed=False, dropout=0.2),
    "post-dropout": dict(norm="post", ffn="relu", pos="sinusoidal", dropout=0.2),
    "masked-lm": dict(norm="post", ffn="relu", pos="sinusoidal", causal=False, mask_token=10, dropout=0.1),
    "gpt2-head-without-bias": dict(ffn="gelu", pos="learned", tie_weights=True, scale_embed=False, head_bias=False),
    "text-head-without-bias": dict(norm="post", ffn="relu", pos="sinusoidal", head_bias=False),
}


def gpt(kind, dtype=np.float64, seed=0):
    cfg = tr.TransformerConfig(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=8,
                               **{"norm": "pre", **GPT_CONFIGS[kind]})
    r = np.random.default_rng(seed)
    p = tr.init_params(cfg, r, dtype)
    for k in p:  # biases and LayerNorm parameters away from their 0 / 1 start, so every term matters
        if p[k].ndim == 1:
            p[k] += (0.3 * r.standard_normal(p[k].shape)).astype(dtype)
    x, y = r.integers(0, 11, (2, 3, 7))
    if not cfg.causal:  # the masked LM: targets only at the chosen positions
        x, y = mlm.mask_tokens(r.integers(0, 10, (3, 7)), cfg, r)
    return cfg, p, x, y


def grad_error(g, h) -> float:
    """Largest |g - h| over every parameter, relative to the largest |g| (some gradients, such as
    that of the key bias, are exactly 0 in theory: an elementwise relative error would compare noise)."""
    scale = max(float(np.abs(a).max()) for a in g.values())
    return max(float(np.abs(g[k] - h[k]).max()) for k in g) / scale


def rng_for(cfg, seed=1):
    """A generator for the dropout masks (None without dropout, as the plain model allows)."""
    return np.random.default_rng(seed) if cfg.dropout else None


def use(monkeypatch, threads: str) -> None:
    """One thread; two threads of one process; or two processes (the batch in halves, without dropout)."""
    monkeypatch.setenv("MINILM_THREADS", "1" if threads == "1" else "2")
    monkeypatch.setenv("MINILM_PROCESSES", "1" if threads == "processes" else "0")


@pytest.mark.parametrize("threads", ["1", "2", "processes"])
@pytest.mark.parametrize("kind", GPT_CONFIGS)
def test_transformer_loss_and_grads_match_plain(kind, threads, monkeypatch):
    """With two threads the weight gradients' products run on the worker, behind the chain; with one, in it;
    with two processes each runs half of the batch (a model with dropout stays in one process)."""
    use(monkeypatch, threads)
    cfg, p, x, y = gpt(kind)
    fast = FastTransformer(cfg, p, np.float64)
    for seed in range(2):  # the second call reuses every buffer (and, with dropout, draws other masks)
        loss, grads = tr.loss_and_grads(p, cfg, x, y, train=True, rng=rng_for(cfg, seed))
        fl, fg = fast.loss_and_grads(x, y, rng_for(cfg, seed))
        assert set(fg) == set(grads)
        assert abs(fl - loss) <= TOL * abs(loss)
        assert grad_error(grads, fg) <= TOL
    if cfg.causal and not cfg.dropout:
        assert (fast._split is not None) == (threads == "processes")


@pytest.mark.parametrize("broken", [False, True])
def test_transformer_fast_gradcheck(monkeypatch, broken):
    """The fast path's own gradients against finite differences (the three entries of largest |gradient| of
    every parameter), in one process: split over two (tests/test_fast_procs.py checks that against the plain
    model), the loss is the sum of two rounded halves.  The largest entries, not random ones: the fast loss's
    rounding differs with the machine's BLAS kernels, and a tiny entry's centred difference is mostly that
    rounding (a random entry of h0.ln2.gamma gave 2e-7 on one machine).  A GELU backward 1% off is caught."""
    monkeypatch.setenv("MINILM_PROCESSES", "0")
    if broken:
        monkeypatch.setattr(K, "gelu_backward_inplace", _scaled(K.gelu_backward_inplace))
    cfg, p, x, y = gpt("nanogpt")
    fast = FastTransformer(cfg, p, np.float64)

    def loss_and_grads(params):
        fast.load(params)
        return fast.loss_and_grads(x, y)

    errors = check_model(loss_and_grads, p, max_entries=3, float32=False, largest=True)  # built in float64
    if broken:
        assert errors["dh0.ffn.W1"] > 1e-3, errors
    else:
        assert max(errors.values()) <= TOLERANCE, errors


def _scaled(fn, factor=1.01):
    def broken(*args):
        fn(*args)
        args[0][...] *= factor  # the gradient buffer the kernel just wrote

    return broken


@pytest.mark.parametrize("kind,kernel", [("nanogpt", "gelu_backward_inplace"), ("nanogpt", "layernorm_backward_dy"),
                                         ("nanogpt", "attention_dq"), ("the-text", "layernorm_backward_dy"),
                                         ("the-text", "attention_dq"), ("masked-lm", "layernorm_backward_dy")])
def test_broken_fast_backward_is_caught(kind, kernel, monkeypatch):
    cfg, p, x, y = gpt(kind)
    _, grads = tr.loss_and_grads(p, cfg, x, y, train=True, rng=rng_for(cfg))
    if kernel == "gelu_backward_inplace":
        monkeypatch.setattr(K, kernel, _scaled(K.gelu_backward_inplace))
    elif kernel == "layernorm_backward_dy":  # drop the mean(g * xhat) term
        orig = K.layernorm_backward

        def no_xhat_term(dy, xhat, rstd, gamma, dx_acc, dgamma, dbeta, tmp, ones_m):
            orig(dy, np.zeros_like(xhat), rstd, gamma, dx_acc, dgamma, dbeta, tmp, ones_m)

        monkeypatch.setattr(K, "layernorm_backward", no_xhat_term)
    else:  # forget the backward's 1/sqrt(hs) (of dq; with the compiled softmax, of dq and dk)
        orig = K.attention_backward
        monkeypatch.setattr(K, "attention_backward",
                            lambda dout, q, k, v, P, dP, dq, dk, dv, scale, vT=None:
                            orig(dout, q, k, v, P, dP, dq, dk, dv, 1.0, vT))
    _, fg = FastTransformer(cfg, p, np.float64).loss_and_grads(x, y, rng_for(cfg))
    assert grad_error(grads, fg) > BROKEN


def test_broken_dropout_backward_is_caught(monkeypatch):
    """The backward must use the forward's masks: one that sees fresh masks is caught."""
    cfg, p, x, y = gpt("post-dropout")
    _, grads = tr.loss_and_grads(p, cfg, x, y, train=True, rng=rng_for(cfg))
    fast = FastTransformer(cfg, p, np.float64)
    orig = K.cross_entropy_inplace

    def redraw_masks(*args):  # between the forward and the backward, change the first layer's FFN mask
        m = fast._ws["layers"][0]["m2"]
        m[...] = m[::-1]
        return orig(*args)

    monkeypatch.setattr(K, "cross_entropy_inplace", redraw_masks)
    _, fg = fast.loss_and_grads(x, y, rng_for(cfg))
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


@pytest.mark.parametrize("threads", ["1", "2", "processes"])
@pytest.mark.parametrize("kind", ["nanogpt", "the-text", "post-dropout", "masked-lm"])
def test_transformer_training_steps_match_plain(kind, threads, monkeypatch):
    """Three steps of clipping (which triggers) + AdamW with weight decay: the same parameters."""
    use(monkeypatch, threads)
    cfg, p, x, y = gpt(kind)
    plain = {k: v.copy() for k, v in p.items()}
    state = optim.init_state(plain)
    fast = FastTransformer(cfg, p, np.float64)
    for step in range(3):
        lr = optim.lr_at(step, 1e-2, 1e-3, 2, 3)
        _, grads = tr.loss_and_grads(plain, cfg, x, y, train=True, rng=rng_for(cfg, step))
        norm = optim.clip_grad_norm(grads, 0.5)
        optim.adamw_step(plain, grads, state, lr, 0.9, 0.99, weight_decay=0.1)
        _, fnorm = fast.step(x, y, lr, 0.9, 0.99, weight_decay=0.1, max_norm=0.5, rng=rng_for(cfg, step))
        assert norm > 0.5 and abs(fnorm - norm) <= TOL * norm
    assert max(float(np.abs(plain[k] - fast.params[k]).max()) for k in plain) <= TOL
    s = fast.opt_state()
    assert s["t"] == state["t"] == 3
    assert max(float(np.abs(state["m"][k] - s["m"][k]).max()) for k in plain) <= TOL


def test_threads_change_nothing(monkeypatch):
    """One thread or two (products split by rows, blocks between the threads, weight gradients on the
    worker): bit for bit the same gradients."""
    cfg, p, x, y = gpt("nanogpt", np.float32)
    monkeypatch.setenv("MINILM_PROCESSES", "0")  # threads only (two processes sum two halves: not bit for bit)
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
    attention_only = tr.TransformerConfig(vocab_size=11, ffn="none")
    assert not supports(attention_only)
    with pytest.raises(ValueError, match="feed-forward"):
        FastTransformer(attention_only)
    with pytest.raises(ValueError, match="rng"):
        FastTransformer(tr.TransformerConfig(vocab_size=11, dropout=0.1)).loss_and_grads(x, y)




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
    for moment in ("m", "v"):  # the checkpoint's moments are the ones AdamW updated (after they moved, too)
        diff = {k: float(np.abs(a["opt_state"][moment][k] - b["opt_state"][moment][k]).max()) for k in a["params"]}
        assert max(d for k, d in diff.items() if not k.endswith("attn.b_k")) < 1e-6, (moment, diff)


def test_train_fast_refuses_what_it_cannot_train(tmp_path, capsys):
    """--fast where there is no fast path: one line, exit status 2, nothing written."""
    from types import SimpleNamespace

    from minilm.cli import main
    from minilm.fast.training import unsupported

    out = tmp_path / "run"
    code = main(["train", "--model", "seq2seq", "--out", str(out), "--steps", "2", "--fast", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "--fast" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
    # LAS: refused before its data is looked for (nothing downloaded into --data-dir, nothing written)
    fsdd = tmp_path / "fsdd"
    code = main(["train", "--model", "las", "--data-dir", str(fsdd), "--out", str(out), "--fast", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "--fast has no fast path for --model las" in err and len(err.strip().splitlines()) == 1
    assert not out.exists() and not fsdd.exists()
    attention_only = tr.TransformerConfig(vocab_size=11, ffn="none")  # a config of the library, not of train
    assert "--fast" in unsupported(SimpleNamespace(model="transformer"), attention_only)
    assert "feed-forward 'none'" in unsupported(SimpleNamespace(model="transformer"), attention_only)
    no_final = tr.TransformerConfig(vocab_size=11, norm="pre", final_norm=False)
    assert "final LayerNorm" in unsupported(SimpleNamespace(model="transformer"), no_final)
    for kind in GPT_CONFIGS:
        assert unsupported(SimpleNamespace(model="transformer"), gpt(kind)[0]) is None, kind


@pytest.mark.parametrize("model,extra", [("transformer", dict(norm="post", dropout=0.1)),
                                         ("transformer", dict(norm="pre", dropout=0.0, activation="relu")),
                                         ("transformer", dict(norm="pre", activation="gelu", positions="learned",
                                                              tie_weights=True, head_bias=False)),
                                         ("mlm", dict(dropout=0.1)), ("lstm", dict())])
def test_train_fast_matches_plain_every_configuration(tmp_path, model, extra):
    """train --fast and train, six steps of the text's post-LN model, dropout, the masked LM, a 2-layer
    LSTM LM (its evaluation in the fast forward too): the same batches, masks and dropout draws, so the
    same validation loss and parameters to float32 rounding."""
    from minilm.training import checkpoint
    from minilm.training.loop import TrainOptions, train

    path = tmp_path / "text.txt"
    path.write_text("the cat sees the dog. a dog sees the cat.\n" * 40)
    runs = {}
    for name, fast in (("plain", False), ("fast", True)):
        shape = dict(layers=2, hidden=16) if model == "lstm" else dict(layers=1, heads=2)
        opts = TrainOptions(model=model, data=str(path), out=str(tmp_path / name), steps=6, eval_every=3,
                            width=16, block_size=8, batch_size=4, fast=fast, **shape, **extra)
        runs[name] = train(opts, log=lambda *a, **k: None, progress=False, plot=False)
    assert abs(runs["fast"]["val_loss"] - runs["plain"]["val_loss"]) < 1e-4 * runs["plain"]["val_loss"]
    a, b = (checkpoint.load(tmp_path / n / "checkpoint.npz") for n in ("plain", "fast"))
    assert set(a["params"]) == set(b["params"])
    diff = {k: float(np.abs(a["params"][k] - b["params"][k]).max()) for k in a["params"]}
    assert max(d for k, d in diff.items() if not k.endswith("attn.b_k")) < 1e-5, diff  # b_k: see above


@pytest.mark.parametrize("kind", ["nanogpt", "the-text", "masked-lm"])
def test_fast_logits_match_plain_forward(kind):
    """The forward alone (evaluation: no dropout), as minilm.transformer.forward."""
    cfg, p, x, _ = gpt(kind)
    logits, _ = tr.forward(p, cfg, x)
    fast = FastTransformer(cfg, p, np.float64)
    assert np.abs(fast.logits(x) - logits).max() <= TOL * np.abs(logits).max()
    assert np.abs(fast.logits(x[:1, :5]) - tr.forward(p, cfg, x[:1, :5])[0]).max() <= TOL * np.abs(logits).max()

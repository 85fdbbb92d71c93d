"""The feed-forward network, the Transformer block and the causal Transformer
LM: float64 gradient checks (every parameter), broken backwards caught, the
causal and padding properties, the text's missing-mask bug, torch as a
reference, bad input."""

import dataclasses
import functools
import json

import numpy as np
import pytest

from minilm import block as BL
from minilm import optim
from minilm import transformer as TR
from minilm.attention import MHA_KEYS
from minilm.cases import transformer as CT
from minilm.dropout import dropout_backward
from minilm.gradcheck import TOLERANCE, check_pair
from minilm.layernorm import layernorm_backward
from minilm.linear import linear_backward
from minilm.softmax import cross_entropy_backward, cross_entropy_forward

BROKEN = 1e-4  # a broken backward must be off by far more than this (exact ones are <= 1e-7)


# ---- feed-forward ----


@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_ffn_gradient(activation):
    errors = check_pair(BL.ffn_forward, BL.ffn_backward, CT.ffn_inputs(activation), CT.FFN_NAMES,
                        {"activation": activation})
    assert len(errors) == 5 and max(errors.values()) <= TOLERANCE, errors


def ffn_activation_dropped(dy, cache):  # forgets act'(h): as if the FFN were linear
    c1, c_act, activation, c2 = cache
    da, dW2, db2 = linear_backward(dy, c2)
    dx, dW1, db1 = linear_backward(da, c1)
    return dx, dW1, db1, dW2, db2


def ffn_scaled(dy, cache):
    return tuple(1.01 * g for g in BL.ffn_backward(dy, cache))


@pytest.mark.parametrize("activation", ["relu", "gelu"])
@pytest.mark.parametrize("broken", [ffn_activation_dropped, ffn_scaled])
def test_ffn_broken_backward_is_caught(activation, broken):
    errors = check_pair(BL.ffn_forward, broken, CT.ffn_inputs(activation), CT.FFN_NAMES, {"activation": activation})
    assert max(errors.values()) > BROKEN, errors


# ---- the block ----

BLOCKS = {
    "post-LN, ReLU, causal (the text)": CT.post_ln_block,
    "pre-LN, GELU, padding, dropout": CT.pre_ln_block,
    "pre-LN, ReLU, causal": lambda: CT.BlockCase(CT.block_config(norm="pre"), TR.causal_mask(4)),
}


QUICK = ["x", "attn.b_q", "ln1.gamma"]  # a broken variant shows in these already


@functools.cache
def block_inputs(name):  # drawn once per block, shared by the tests below
    return BLOCKS[name]().inputs()


@pytest.mark.parametrize("name", BLOCKS)
def test_block_gradient(name):
    b = BLOCKS[name]()
    errors = b.check(block_inputs(name))
    assert len(errors) == 17 and max(errors.values()) <= TOLERANCE, errors  # x and the 16 parameters


def block_residual_dropped(dy, cache):
    """block_backward without one residual path (post-LN: h -> h + f; pre-LN: x -> h)."""
    c = cache
    if c["norm"] == "post":
        ds2, dgamma2, dbeta2 = layernorm_backward(dy, c["ln2"])
        dh, *dffn = BL.ffn_backward(dropout_backward(ds2, c["d2"]), c["ffn"])  # + ds2 forgotten
        ds1, dgamma1, dbeta1 = layernorm_backward(dh, c["ln1"])
        dx_q, dx_kv, *dattn = BL.mha_backward(dropout_backward(ds1, c["d1"]), c["attn"])
        dx = ds1 + dx_q + dx_kv
    else:
        dn2, *dffn = BL.ffn_backward(dropout_backward(dy, c["d2"]), c["ffn"])
        dh, dgamma2, dbeta2 = layernorm_backward(dn2, c["ln2"])
        dh = dh + dy
        dn1_q, dn1_kv, *dattn = BL.mha_backward(dropout_backward(dh, c["d1"]), c["attn"])
        dx, dgamma1, dbeta1 = layernorm_backward(dn1_q + dn1_kv, c["ln1"])  # + dh forgotten
    grads = dict(zip([f"attn.{k}" for k in MHA_KEYS], dattn, strict=True))
    grads |= dict(zip([f"ffn.{k}" for k in BL.FFN_KEYS], dffn, strict=True))
    grads |= {"ln1.gamma": dgamma1, "ln1.beta": dbeta1, "ln2.gamma": dgamma2, "ln2.beta": dbeta2}
    return dx, grads


def block_scaled(dy, cache):
    dx, grads = BL.block_backward(dy, cache)
    return 1.01 * dx, {k: 1.01 * g for k, g in grads.items()}


@pytest.mark.parametrize("name", list(BLOCKS)[:2])
@pytest.mark.parametrize("broken", [block_residual_dropped, block_scaled])
def test_block_broken_backward_is_caught(name, broken):
    b = BLOCKS[name]()
    errors = b.check(block_inputs(name), backward=lambda dy, cache: b.backward(dy, cache, broken), only=QUICK)
    assert max(errors.values()) > BROKEN, errors


@pytest.mark.parametrize("name", list(BLOCKS)[:2])
def test_block_forgetting_keys_and_values_is_caught(name, monkeypatch):
    """x feeds the queries and the keys/values of self-attention; a backward that keeps only dx_q fails."""
    b = BLOCKS[name]()
    real = BL.mha_backward
    monkeypatch.setattr(BL, "mha_backward", lambda da, c: (lambda g: (g[0], 0 * g[1], *g[2:]))(real(da, c)))
    errors = b.check(block_inputs(name), only=["x"])
    assert errors["dx"] > BROKEN, errors


def test_residual_variant_differs_from_the_real_backward_only_there():
    y, cache = CT.post_ln_block().forward(*block_inputs(list(BLOCKS)[0]))
    dx, grads = BL.block_backward(np.ones_like(y), cache)
    dx_broken, grads_broken = block_residual_dropped(np.ones_like(y), cache)
    assert not np.allclose(dx, dx_broken)
    np.testing.assert_array_equal(grads["ln2.gamma"], grads_broken["ln2.gamma"])  # above the residual: the same


# ---- torch as a reference for the block (float64, the same weights) ----


def torch_layer(torch, params, C, H, norm_first):
    """nn.TransformerEncoderLayer with our weights: post-LN (the text's block) or pre-LN, ReLU, no dropout."""
    layer = torch.nn.TransformerEncoderLayer(C, H, dim_feedforward=4 * C, dropout=0.0, activation="relu",
                                             batch_first=True, norm_first=norm_first, dtype=torch.float64)
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a))  # noqa: E731
    p = lambda k: params[k]  # noqa: E731
    with torch.no_grad():  # torch's Linear stores W^T
        layer.self_attn.in_proj_weight.copy_(t(np.concatenate([p("attn.W_q").T, p("attn.W_k").T, p("attn.W_v").T])))
        layer.self_attn.in_proj_bias.copy_(t(np.concatenate([p("attn.b_q"), p("attn.b_k"), p("attn.b_v")])))
        layer.self_attn.out_proj.weight.copy_(t(p("attn.W_o").T))
        layer.self_attn.out_proj.bias.copy_(t(p("attn.b_o")))
        layer.linear1.weight.copy_(t(p("ffn.W1").T))
        layer.linear1.bias.copy_(t(p("ffn.b1")))
        layer.linear2.weight.copy_(t(p("ffn.W2").T))
        layer.linear2.bias.copy_(t(p("ffn.b2")))
        for i in (1, 2):
            getattr(layer, f"norm{i}").weight.copy_(t(p(f"ln{i}.gamma")))
            getattr(layer, f"norm{i}").bias.copy_(t(p(f"ln{i}.beta")))
    return layer


@pytest.mark.parametrize("norm", ["post", "pre"])
def test_block_matches_torch(norm):
    torch = pytest.importorskip("torch")
    B, T, C, H = 2, 5, 8, 2
    cfg = CT.block_config(n_embd=C, n_head=H, norm=norm)
    r = np.random.default_rng(4)
    params = {k: v + 0.1 * r.standard_normal(v.shape) for k, v in BL.init_block(C, r, np.float64).items()}
    x = r.standard_normal((B, T, C))
    pad = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], bool)
    y, cache = BL.block_forward(x, params, "", cfg, TR.attention_mask(cfg, T, pad))
    layer = torch_layer(torch, params, C, H, norm_first=norm == "pre")
    tx = torch.tensor(x, requires_grad=True)
    ty = layer(tx, src_mask=torch.from_numpy(~TR.causal_mask(T)), src_key_padding_mask=torch.from_numpy(~pad))
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=0, atol=1e-10)
    dy = r.standard_normal(y.shape)
    (ty * torch.from_numpy(dy)).sum().backward()
    dx, grads = BL.block_backward(dy, cache)
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=0, atol=1e-10)
    np.testing.assert_allclose(grads["ffn.W1"].T, layer.linear1.weight.grad.numpy(), rtol=0, atol=1e-10)
    np.testing.assert_allclose(grads["ln1.gamma"], layer.norm1.weight.grad.numpy(), rtol=0, atol=1e-10)


def test_text_model_matches_torch():
    """The text's Transformer (§5.1), built from torch modules with the causal mask it lacks: same logits."""
    torch = pytest.importorskip("torch")
    cfg = TR.TransformerConfig(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=8)
    params = TR.init_params(cfg, np.random.default_rng(5), np.float64)
    idx = np.random.default_rng(6).integers(0, 11, (3, 7))
    logits, _ = TR.forward(params, cfg, idx)
    with torch.no_grad():
        x = torch.from_numpy(params["wte"])[torch.from_numpy(idx)] * np.sqrt(8)  # x * math.sqrt(d_model)
        pos = torch.arange(7, dtype=torch.float64)[:, None]
        div = torch.exp(torch.arange(0, 8, 2, dtype=torch.float64) * (-np.log(10000.0) / 8))
        pe = torch.zeros(7, 8, dtype=torch.float64)
        pe[:, 0::2], pe[:, 1::2] = torch.sin(pos * div), torch.cos(pos * div)
        x = x + pe
        for l in range(2):
            block = {k[3:]: v for k, v in params.items() if k.startswith(f"h{l}.")}
            x = torch_layer(torch, block, 8, 2, norm_first=False)(x, src_mask=torch.from_numpy(~TR.causal_mask(7)))
        ref = x @ torch.from_numpy(params["lm_head.W"]) + torch.from_numpy(params["lm_head.b"])
    np.testing.assert_allclose(logits, ref.numpy(), rtol=0, atol=1e-10)


# ---- the causal LM: every parameter ----

MODELS = {"text's": CT.text_lm, "pre-LN, GELU, learned, tied, dropout": CT.pre_ln_lm}


@functools.cache
def model_inputs(model):  # drawn once per model, shared by the tests below
    return model().inputs()


@pytest.mark.parametrize("name", MODELS)
def test_causal_lm_gradient_every_entry(name):
    m = MODELS[name]()
    errors = m.check(model_inputs(MODELS[name]))
    assert {e[1:].split("=")[0] for e in errors} == set(TR.param_shapes(m.cfg))  # every parameter
    assert max(errors.values()) <= TOLERANCE, errors


@pytest.mark.parametrize("name", MODELS)
def test_deep_causal_lm_gradient_along_directions(name):
    m = MODELS[name](n_layer=3)
    errors = m.check_directions(m.inputs(every_entry=False))
    assert max(errors.values()) <= TOLERANCE, errors


def parts(m, drawn, params):
    """The cache and dlogits of the model's loss (what backward receives)."""
    _, idx, targets, pad = drawn
    logits, cache = TR.forward(params, m.cfg, idx, **m.kwargs(pad))
    targets = np.where(pad, targets, TR.IGNORE_INDEX) if pad is not None else targets
    _, c_ce = cross_entropy_forward(logits, targets, TR.IGNORE_INDEX)
    return cache, cross_entropy_backward(1.0, c_ce)


def tied_head_dropped(m, drawn, params):  # wte gets only the lookup's gradient, not the output layer's
    cache, dlogits = parts(m, drawn, params)
    grads = TR.backward(dlogits, cache)
    grads["wte"] = grads["wte"] - linear_backward(dlogits, cache["head"])[1].T
    return grads


def embedding_scale_dropped(m, drawn, params):  # forgets the sqrt(C) of scale_embed in the backward
    grads = m.loss_and_grads(drawn, params)[1]
    grads["wte"] = grads["wte"] / np.sqrt(m.cfg.n_embd)
    return grads


def model_scaled(m, drawn, params):
    return {k: 1.01 * g for k, g in m.loss_and_grads(drawn, params)[1].items()}


def blocks_not_reversed(m, drawn, params):
    """TR.backward walking the blocks in forward order (a missing ``reversed``)."""
    cache, dlogits = parts(m, drawn, params)
    cache = dict(cache, blocks=cache["blocks"][::-1])  # backward reverses this: forward order again
    return TR.backward(dlogits, cache)


@pytest.mark.parametrize("model,broken", [(CT.pre_ln_lm, tied_head_dropped), (CT.text_lm, embedding_scale_dropped),
                                          (CT.text_lm, model_scaled), (CT.pre_ln_lm, model_scaled)])
def test_model_broken_backward_is_caught(model, broken):
    m = model()
    errors = m.check(model_inputs(model), backward=lambda drawn, p: broken(m, drawn, p), max_entries=2)
    assert max(errors.values()) > BROKEN, errors


@pytest.mark.parametrize("broken", [blocks_not_reversed, model_scaled, embedding_scale_dropped])
def test_deep_model_broken_backward_is_caught_along_directions(broken):
    m = CT.text_lm(n_layer=3)
    errors = m.check_directions(m.inputs(every_entry=False), backward=lambda drawn, p: broken(m, drawn, p))
    assert max(errors.values()) > BROKEN, errors


# ---- what the causal mask does, and the text's bug ----


def small_model(**kwargs):
    cfg = TR.TransformerConfig(**{"vocab_size": 7, "block_size": 8, "n_layer": 2, "n_head": 2, "n_embd": 8} | kwargs)
    return cfg, TR.init_params(cfg, np.random.default_rng(7), np.float64)


@pytest.mark.parametrize("t", [0, 3, 6])
def test_causal_logits_ignore_the_future_and_the_bug_does_not(t):
    idx = np.random.default_rng(8).integers(0, 7, (2, 8))
    idx2 = idx.copy()
    idx2[:, t + 1:] = (idx2[:, t + 1:] + 1) % 7  # every later token changed
    for causal in (True, False):
        cfg, params = small_model(causal=causal)
        a, _ = TR.forward(params, cfg, idx)
        b, _ = TR.forward(params, cfg, idx2)
        assert np.array_equal(a[:, : t + 1], b[:, : t + 1]) == causal


def test_attention_maps_shape_rows_and_causality():
    cfg, params = small_model()
    idx = np.random.default_rng(9).integers(0, 7, (3, 5))
    _, cache = TR.forward(params, cfg, idx)
    w = TR.attention_maps(cache)
    assert w.shape == (2, 3, 2, 5, 5)  # (n_layer, B, H, T, T)
    np.testing.assert_allclose(w.sum(-1), 1, atol=1e-12)
    assert not np.triu(w, k=1).any()


def test_the_texts_missing_mask_leaks_the_answer():
    """On uniformly random tokens no honest model beats log V: the next token is unpredictable.
    Without the causal mask (the text's LM) the held-out loss falls far below log V by copying
    the target from the input; with the mask it stays at log V."""
    held_out = {}
    for causal in (False, True):
        cfg = TR.TransformerConfig(vocab_size=8, block_size=8, n_layer=1, n_head=2, n_embd=16, causal=causal)
        r = np.random.default_rng(0)
        params = TR.init_params(cfg, r)
        state = optim.init_state(params)
        for _ in range(100):
            seq = r.integers(0, 8, (16, 9))
            _, grads = TR.loss_and_grads(params, cfg, seq[:, :-1], seq[:, 1:])
            optim.adamw_step(params, grads, state, 1e-2, weight_decay=0.0)
        seq = np.random.default_rng(1).integers(0, 8, (64, 9))
        held_out[causal] = TR.loss(params, cfg, seq[:, :-1], seq[:, 1:])
    assert held_out[False] < 0.75 * np.log(8)  # the leak
    assert held_out[True] > 0.97 * np.log(8)  # the honest model: nothing to learn


# ---- padding ----


@pytest.mark.parametrize("causal", [True, False])
def test_padded_batch_gives_each_sequence_its_own_result(causal):
    cfg, params = small_model(causal=causal)
    r = np.random.default_rng(10)
    lengths = [6, 2, 4]
    idx = r.integers(0, 6, (3, 6))  # ids 0..5; id 6 appears only as padding
    pad = np.arange(6)[None, :] < np.array(lengths)[:, None]  # (B, T)
    idx[~pad] = 6
    logits, _ = TR.forward(params, cfg, idx, pad_mask=pad)
    for b, n in enumerate(lengths):
        alone, _ = TR.forward(params, cfg, idx[b: b + 1, :n])
        np.testing.assert_allclose(logits[b, :n], alone[0], rtol=0, atol=1e-12)
    targets = r.integers(0, 7, (3, 6))
    loss, grads = TR.loss_and_grads(params, cfg, idx, targets, pad_mask=pad)
    assert not grads["wte"][6].any()  # the padding id got no gradient: padded positions are cut off
    targets2 = np.where(pad, targets, (targets + 1) % 7)
    assert TR.loss(params, cfg, idx, targets2, pad_mask=pad) == loss  # padded targets do not count


# ---- attention-only blocks (ffn="none") ----


@pytest.mark.parametrize("norm", ["post", "pre"])
def test_attention_only_block_gradient(norm):
    b = CT.attention_only_block(norm)
    errors = b.check(b.inputs())
    assert len(errors) == 11 and max(errors.values()) <= TOLERANCE, errors  # x and the 10 parameters


def attention_only_residual_dropped(dy, cache):
    """attention_only_backward without its residual path (post: ds1 -> x; pre: dy -> x)."""
    c = cache
    if c["norm"] == "post":
        ds1, dgamma1, dbeta1 = layernorm_backward(dy, c["ln1"])
        dx_q, dx_kv, *dattn = BL.mha_backward(dropout_backward(ds1, c["d1"]), c["attn"])
        dx = dx_q + dx_kv  # + ds1 forgotten
    else:
        dn1_q, dn1_kv, *dattn = BL.mha_backward(dropout_backward(dy, c["d1"]), c["attn"])
        dx, dgamma1, dbeta1 = layernorm_backward(dn1_q + dn1_kv, c["ln1"])  # + dy forgotten
    grads = dict(zip([f"attn.{k}" for k in MHA_KEYS], dattn, strict=True))
    return dx, grads | {"ln1.gamma": dgamma1, "ln1.beta": dbeta1}


@pytest.mark.parametrize("norm", ["post", "pre"])
@pytest.mark.parametrize("broken", [attention_only_residual_dropped, block_scaled])
def test_attention_only_block_broken_backward_is_caught(norm, broken):
    b = CT.attention_only_block(norm)
    errors = b.check(b.inputs(), backward=lambda dy, cache: b.backward(dy, cache, broken), only=QUICK)
    assert max(errors.values()) > BROKEN, errors


def test_attention_only_lm_gradient():
    one = CT.attention_only_lm(n_layer=1)
    errors = one.check(one.inputs())
    assert {e[1:].split("=")[0] for e in errors} == set(TR.param_shapes(one.cfg))  # every parameter
    assert max(errors.values()) <= TOLERANCE, errors
    two = CT.attention_only_lm(n_layer=2)
    errors = two.check_directions(two.inputs(every_entry=False))
    assert max(errors.values()) <= TOLERANCE, errors


@pytest.mark.parametrize("broken", [blocks_not_reversed, model_scaled])
def test_attention_only_lm_broken_backward_is_caught(broken):
    m = CT.attention_only_lm(n_layer=2)
    errors = m.check_directions(m.inputs(every_entry=False), backward=lambda drawn, p: broken(m, drawn, p))
    assert max(errors.values()) > BROKEN, errors


def test_attention_only_equals_a_block_whose_ffn_adds_zero():
    """No ffn.* or ln2.* parameters, and the same logits as a pre-LN model whose FFN output is 0 (W2 = b2 = 0)."""
    cfg = TR.TransformerConfig(vocab_size=7, block_size=6, n_layer=2, n_head=2, n_embd=8, norm="pre", ffn="none")
    full_cfg = dataclasses.replace(cfg, ffn="relu")
    full = TR.init_params(full_cfg, np.random.default_rng(0), dtype=np.float64)
    for l in range(2):
        full[f"h{l}.ffn.W2"][:] = 0
        full[f"h{l}.ffn.b2"][:] = 0
    only = {k: v for k, v in full.items() if ".ffn." not in k and ".ln2." not in k}
    assert set(only) == set(TR.param_shapes(cfg)) and set(TR.init_params(cfg, np.random.default_rng(0))) == set(only)
    idx = np.random.default_rng(1).integers(0, 7, (3, 6))
    np.testing.assert_allclose(TR.forward(only, cfg, idx)[0], TR.forward(full, full_cfg, idx)[0], rtol=0, atol=1e-12)


# ---- parameters, dtypes and the config ----


def test_init_params_shapes_dtype_and_seed():
    cfg = TR.TransformerConfig(vocab_size=9, n_layer=2, n_embd=16, pos="learned", tie_weights=True, norm="pre")
    p = TR.init_params(cfg, np.random.default_rng(0))
    assert {k: v.shape for k, v in p.items()} == TR.param_shapes(cfg)
    assert all(v.dtype == np.float32 for v in p.values())
    assert "lm_head.W" not in p and "ln_f.gamma" in p and "wpe" in p
    q = TR.init_params(cfg, np.random.default_rng(0))
    assert all(np.array_equal(p[k], q[k]) for k in p)
    json.dumps(dataclasses.asdict(cfg))  # the config is plain data


def test_float32_stays_float32():
    cfg = TR.TransformerConfig(vocab_size=7, block_size=8, n_layer=2, n_head=2, n_embd=8, ffn="gelu", dropout=0.1)
    p = TR.init_params(cfg, np.random.default_rng(0))
    idx = np.random.default_rng(1).integers(0, 7, (2, 8))
    pad = np.ones((2, 8), bool)
    pad[1, 5:] = False
    logits, cache = TR.forward(p, cfg, idx, pad_mask=pad, train=True, rng=np.random.default_rng(2))
    assert logits.dtype == np.float32 and TR.attention_maps(cache).dtype == np.float32
    loss, grads = TR.loss_and_grads(p, cfg, idx, idx, pad_mask=pad, train=True, rng=np.random.default_rng(2))
    assert np.isfinite(loss) and all(g.dtype == np.float32 for g in grads.values())


# ---- bad input ----

CFG = TR.TransformerConfig(vocab_size=5, block_size=4, n_layer=1, n_head=2, n_embd=4)
PARAMS = TR.init_params(CFG, np.random.default_rng(0))


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: TR.TransformerConfig(vocab_size=5, ffn="tanh"), r"ffn must be one of \['gelu', 'none', 'relu'\]"),
        (lambda: TR.TransformerConfig(vocab_size=5, norm="mid"), "norm must be one of"),
        (lambda: TR.TransformerConfig(vocab_size=5, pos="rotary"), "pos must be one of"),
        (lambda: TR.TransformerConfig(vocab_size=5, n_embd=6, n_head=4), "n_head = 4 must divide n_embd = 6"),
        (lambda: TR.TransformerConfig(vocab_size=5, n_embd=9, n_head=3), "even n_embd"),
        (lambda: TR.TransformerConfig(vocab_size=0), "vocab_size must be a positive integer"),
        (lambda: TR.TransformerConfig(vocab_size=5, dropout=1.0), r"dropout must be in \[0, 1\)"),
        (lambda: TR.TransformerConfig(vocab_size=5, mask_token=5), r"mask_token 5 is outside \[0, 5\)"),
        (lambda: TR.forward(PARAMS, CFG, np.array([[0, 5]])), r"token id 5 is outside \[0, 5\)"),
        (lambda: TR.forward(PARAMS, CFG, np.array([[0.0, 1.0]])), "integer token ids"),
        (lambda: TR.forward(PARAMS, CFG, np.array([0, 1])), r"\(B, T\) array"),
        (lambda: TR.forward(PARAMS, CFG, np.zeros((1, 5), int)), "T = 5 exceeds block_size = 4"),
        (lambda: TR.forward(PARAMS, CFG, np.zeros((2, 3), int), pad_mask=np.ones((2, 2), bool)), "pad_mask"),
        (lambda: TR.forward({k: v for k, v in PARAMS.items() if k != "wte"}, CFG, np.zeros((1, 2), int)),
         r"params lack \['wte'\]"),
        (lambda: TR.forward(PARAMS | {"wte": np.zeros((5, 3), np.float32)}, CFG, np.zeros((1, 2), int)),
         r"params\['wte'\] must have shape \(5, 4\)"),
        (lambda: TR.forward(PARAMS | {"lm_head.b": np.zeros(5)}, CFG, np.zeros((1, 2), int)), "one dtype"),
        (lambda: TR.forward(PARAMS, dataclasses.replace(CFG, dropout=0.5), np.zeros((1, 2), int), train=True),
         "np.random.Generator"),
        (lambda: BL.ffn_forward(np.ones((2, 4)), *[np.ones(s) for s in [(4, 16), 16, (16, 4), 4]], "swish"),
         "activation must be one of"),
    ],
)
def test_bad_input_raises_clear_valueerror(call, match):
    with pytest.raises(ValueError, match=match):
        call()

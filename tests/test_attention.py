"""Scaled dot-product and multi-head attention: float64 gradient checks, broken
backwards caught, the causal and padding properties, fully masked rows, the
per-head reading of §4.1, torch as a reference, bad input."""

import numpy as np
import pytest

from minilm import attention as A
from minilm.cases.attention import (
    MHA_NAMES,
    check_mha,
    mha_inputs,
    self_attention_backward,
    self_attention_forward,
)
from minilm.gradcheck import TOLERANCE, check_pair
from minilm.softmax import softmax_forward

BROKEN = 1e-4  # a broken backward must be off by far more than this (exact ones are <= 1e-7)
SDPA_NAMES = ["q", "k", "v"]


def padding_with_empty_row():
    """(B=2, T_q=3, T_k=4): sequence 0 has 3 real keys, sequence 1 has 1; query 2 sees no key at all."""
    mask = np.array([[True, True, True, False], [True, False, False, False]])[:, None, :]  # (B, 1, T_k)
    return mask & np.array([True, True, False])[None, :, None]  # (B, T_q, T_k)


SDPA_CASES = {  # name: (q shape, k shape, v shape, mask)
    "no batch": ((3, 4), (3, 4), (3, 2), None),
    "T_q != T_k": ((2, 3, 4), (2, 5, 4), (2, 5, 3), None),
    "causal": ((2, 2, 4, 3), (2, 2, 4, 3), (2, 2, 4, 3), A.causal_mask(4)),
    "causal, T_k > T_q": ((2, 2, 3), (2, 5, 3), (2, 5, 2), A.causal_mask(2, 5)),
    "padding + empty row": ((2, 3, 4), (2, 4, 4), (2, 4, 2), padding_with_empty_row()),
}


def sdpa_inputs(name, seed=0):
    r = np.random.default_rng(seed)
    *shapes, mask = SDPA_CASES[name]
    return [r.standard_normal(s) for s in shapes], ({} if mask is None else {"mask": mask})


@pytest.mark.parametrize("name", SDPA_CASES)
def test_attention_gradient(name):
    inputs, kwargs = sdpa_inputs(name)
    errors = check_pair(A.attention_forward, A.attention_backward, inputs, SDPA_NAMES, kwargs)
    assert set(errors) == {"dq", "dk", "dv"} and max(errors.values()) <= TOLERANCE, errors


MHA_CASES = {  # name: (B, T_q, T_kv, C, n_head, mask)
    "cross, padding": (2, 3, 5, 6, 3, A.key_padding_mask(np.array([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]], bool))),
    "cross, no mask": (1, 4, 2, 4, 2, None),
    "one head": (2, 3, 3, 4, 1, A.causal_mask(3)),
    "head size 1": (2, 3, 3, 4, 4, A.causal_mask(3)),
}


@pytest.mark.parametrize("name", MHA_CASES)
def test_mha_gradient(name):
    B, T_q, T_kv, C, H, mask = MHA_CASES[name]
    errors = check_mha(A.mha_forward, A.mha_backward, mha_inputs(np.random.default_rng(1), B, T_q, T_kv, C),
                       MHA_NAMES, {"n_head": H, "mask": mask})
    assert len(errors) == 10 and max(errors.values()) <= TOLERANCE, errors


def test_self_attention_gradient_sums_both_roles_of_x():
    x, _, *weights = mha_inputs(np.random.default_rng(2), 2, 4, 4, 6)
    kwargs = {"n_head": 2, "mask": A.causal_mask(4)}
    errors = check_mha(self_attention_forward, self_attention_backward, [x, *weights], ["x"] + MHA_NAMES[2:], kwargs)
    assert max(errors.values()) <= TOLERANCE, errors
    only_q = check_pair(self_attention_forward, lambda d, c: A.mha_backward(d, c)[:1] + A.mha_backward(d, c)[2:],
                        [x, *weights], ["x"] + MHA_NAMES[2:], kwargs, wrt=[0])
    assert only_q["dx"] > BROKEN  # forgetting that x is also the keys and values is caught


def test_key_bias_gradient_is_exactly_zero():
    """softmax ignores a constant added to a row of scores, and q . b_k is the same for every key."""
    inputs = mha_inputs(np.random.default_rng(3), 2, 3, 4, 4)
    out, cache = A.mha_forward(*inputs, n_head=2)
    db_k = A.mha_backward(np.random.default_rng(4).standard_normal(out.shape), cache)[5]
    assert np.abs(db_k).max() < 1e-12
    shifted = list(inputs)
    shifted[5] = inputs[5] + 10.0
    np.testing.assert_allclose(A.mha_forward(*shifted, n_head=2)[0], out, rtol=0, atol=1e-12)


# ---- deliberately broken backwards: each must be caught by the same checker ----


def scaled(backward, k=1.01):
    def scaled(dout, cache):  # every gradient 1% too large
        return tuple(k * g for g in backward(dout, cache))

    return scaled


def sdpa_rowsum_dropped(dout, cache):  # dS = P * dP: forgets the -rowsum(dP * P) term of softmax
    q, k, v, w, mask, c_soft, scale = cache
    dq, dk, dv = A.attention_backward(dout, cache)
    dscores = w * (dout @ np.swapaxes(v, -1, -2))
    return (dscores @ k) * scale, (np.swapaxes(dscores, -1, -2) @ q) * scale, dv


def sdpa_dk_not_transposed(dout, cache):  # dk = dS q instead of dS^T q (T_q = T_k)
    q, k, v, w, mask, c_soft, scale = cache
    dq, dk, dv = A.attention_backward(dout, cache)
    return dq, (_dscores(dout, cache) @ q) * scale, dv


def sdpa_scale_dropped(dout, cache):  # forgets the 1/sqrt(d_k) in dq
    q, k, v, w, mask, c_soft, scale = cache
    dq, dk, dv = A.attention_backward(dout, cache)
    return dq / scale, dk, dv


def sdpa_dv_not_transposed(dout, cache):  # dv = W dout instead of W^T dout (T_q = T_k)
    q, k, v, w, mask, c_soft, scale = cache
    dq, dk, dv = A.attention_backward(dout, cache)
    return dq, dk, w @ dout


def sdpa_mask_dropped(dout, cache):  # dP = dW: the zeroing of fully masked rows is not differentiated
    q, k, v, w, mask, c_soft, scale = cache
    dq, dk, dv = A.attention_backward(dout, cache)
    p = c_soft
    dw = dout @ np.swapaxes(v, -1, -2)
    dscores = p * (dw - (dw * p).sum(-1, keepdims=True))
    return (dscores @ k) * scale, (np.swapaxes(dscores, -1, -2) @ q) * scale, dv


def _dscores(dout, cache):
    q, k, v, w, mask, c_soft, scale = cache
    p = c_soft
    dp = (dout @ np.swapaxes(v, -1, -2)) * (1 if mask is None else mask)
    return p * (dp - (dp * p).sum(-1, keepdims=True))


SDPA_BROKEN = [
    ("causal", sdpa_rowsum_dropped),
    ("causal", sdpa_dk_not_transposed),
    ("T_q != T_k", sdpa_scale_dropped),
    ("causal", sdpa_dv_not_transposed),
    ("padding + empty row", sdpa_mask_dropped),
] + [(name, scaled(A.attention_backward)) for name in SDPA_CASES]


@pytest.mark.parametrize("name,broken", SDPA_BROKEN,
                         ids=[f"{n}-{getattr(b, '__name__', 'scaled')}" for n, b in SDPA_BROKEN])
def test_attention_broken_backward_is_caught(name, broken):
    inputs, kwargs = sdpa_inputs(name, seed=5)
    errors = check_pair(A.attention_forward, broken, inputs, SDPA_NAMES, kwargs)
    assert max(errors.values()) > BROKEN, errors


def mha_variant(dout, cache, merge=A.merge_heads, through_v=True):
    """mha_backward written out again, with one step replaceable."""
    c_q, c_k, c_v, c_att, c_o, n_head = cache
    dconcat, dW_o, db_o = A.linear_backward(dout, c_o)
    dq, dk, dv = A.attention_backward(A.split_heads(dconcat, n_head), c_att)
    dx_q, dW_q, db_q = A.linear_backward(merge(dq), c_q)
    dx_k, dW_k, db_k = A.linear_backward(merge(dk), c_k)
    dx_v, dW_v, db_v = A.linear_backward(merge(dv), c_v)
    dx_kv = dx_k + dx_v if through_v else dx_k
    return dx_q, dx_kv, dW_q, db_q, dW_k, db_k, dW_v, db_v, dW_o, db_o


def mha_dv_term_dropped(dout, cache):  # dx_kv = dK W_k^T only: forgets that x_kv also feeds V
    return mha_variant(dout, cache, through_v=False)


def mha_heads_not_swapped(dout, cache):  # merges (B, H, T, hs) by reshape alone: features of the wrong heads
    return mha_variant(dout, cache, merge=lambda x: x.reshape(*x.shape[:-3], x.shape[-2], -1))


def test_mha_variant_unbroken_agrees():  # the rewritten backward is exact, so what breaks it is the change
    B, T_q, T_kv, C, H, mask = MHA_CASES["cross, padding"]
    inputs = mha_inputs(np.random.default_rng(6), B, T_q, T_kv, C)
    out, cache = A.mha_forward(*inputs, n_head=H, mask=mask)
    for a, b in zip(mha_variant(np.ones_like(out), cache), A.mha_backward(np.ones_like(out), cache), strict=True):
        np.testing.assert_array_equal(a, b)


MHA_BROKEN = [mha_dv_term_dropped, mha_heads_not_swapped, scaled(A.mha_backward)]


@pytest.mark.parametrize("broken", MHA_BROKEN, ids=[getattr(b, "__name__", "scaled") for b in MHA_BROKEN])
def test_mha_broken_backward_is_caught(broken):
    B, T_q, T_kv, C, H, mask = MHA_CASES["cross, padding"]
    errors = check_mha(A.mha_forward, broken, mha_inputs(np.random.default_rng(6), B, T_q, T_kv, C),
                       MHA_NAMES, {"n_head": H, "mask": mask})
    assert max(errors.values()) > BROKEN, errors


# ---- the causal mask ----


def test_causal_mask_shape_and_offset():
    np.testing.assert_array_equal(A.causal_mask(3), [[1, 0, 0], [1, 1, 0], [1, 1, 1]])
    np.testing.assert_array_equal(A.causal_mask(2, 4), [[1, 1, 1, 0], [1, 1, 1, 1]])


@pytest.mark.parametrize("t", [0, 2, 4])
def test_causal_output_ignores_the_future(t):
    """Changing every token after t leaves outputs 0..t unchanged; without the mask they change."""
    r = np.random.default_rng(7)
    inputs = mha_inputs(r, 2, 6, 6, 4)
    x, weights = inputs[0], inputs[2:]
    x2 = x.copy()
    x2[:, t + 1:] = r.standard_normal(x2[:, t + 1:].shape)
    for mask, leaks in ((A.causal_mask(6), False), (None, True)):
        y, _ = A.mha_forward(x, x, *weights, n_head=2, mask=mask)
        y2, _ = A.mha_forward(x2, x2, *weights, n_head=2, mask=mask)
        assert np.array_equal(y[:, : t + 1], y2[:, : t + 1]) != leaks
    w = A.mha_weights(A.mha_forward(x, x, *weights, n_head=2, mask=A.causal_mask(6))[1])
    assert not np.triu(w, k=1).any()  # no weight above the diagonal, in any head


# ---- padding and fully masked rows ----


def test_padded_keys_get_zero_weight_and_zero_gradient():
    inputs, kwargs = sdpa_inputs("padding + empty row")
    out, cache = A.attention_forward(*inputs, **kwargs)
    w = A.attention_weights(cache)
    mask = kwargs["mask"]
    assert not w[~mask].any()  # exactly zero at every masked (query, key)
    np.testing.assert_allclose(w.sum(-1), [[1, 1, 0], [1, 1, 0]], atol=1e-15)
    dq, dk, dv = A.attention_backward(np.ones_like(out), cache)
    assert not dk[0, 3].any() and not dv[0, 3].any()  # padded key of sequence 0
    assert not dk[1, 1:].any() and not dv[1, 1:].any()  # padded keys of sequence 1


def test_fully_masked_row_is_zero_without_nan_or_warning():
    inputs, kwargs = sdpa_inputs("padding + empty row")
    inputs = [x.astype(np.float32) for x in inputs]
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        out, cache = A.attention_forward(*inputs, **kwargs)
        dq, dk, dv = A.attention_backward(np.ones_like(out), cache)
    assert out.dtype == dq.dtype == dk.dtype == dv.dtype == np.float32
    assert np.isfinite(out).all() and np.isfinite(dq).all()
    assert not out[:, 2].any() and not dq[:, 2].any()  # query 2 has no key: zero output, zero gradient
    all_masked = np.zeros((3, 4), bool)
    out, cache = A.attention_forward(*inputs, mask=all_masked)
    assert not out.any() and not any(g.any() for g in A.attention_backward(np.ones_like(out), cache))


def test_mha_key_padding_matches_each_sequence_alone():
    """A batch of unequal lengths, padded with junk, gives each sequence its unpadded result."""
    r = np.random.default_rng(8)
    lengths = [5, 3, 1]
    x_q = r.standard_normal((3, 4, 6))
    x_kv = r.standard_normal((3, 5, 6))
    weights = mha_inputs(r, 1, 1, 1, 6)[2:]
    pad = np.arange(5)[None, :] < np.array(lengths)[:, None]  # (B, T_kv), True = real
    out, cache = A.mha_forward(x_q, x_kv, *weights, n_head=2, mask=A.key_padding_mask(pad))
    dout = r.standard_normal(out.shape)
    dx_q, dx_kv, *_ = A.mha_backward(dout, cache)
    for b, n in enumerate(lengths):
        alone, _ = A.mha_forward(x_q[b], x_kv[b, :n], *weights, n_head=2)
        np.testing.assert_allclose(out[b], alone, rtol=0, atol=1e-12)
        assert not dx_kv[b, n:].any()  # padded positions receive no gradient through attention


# ---- what the weights mean ----


def test_weights_are_the_softmax_of_scaled_scores():
    (q, k, v), _ = sdpa_inputs("T_q != T_k")
    out, cache = A.attention_forward(q, k, v)
    p, _ = softmax_forward(q @ np.swapaxes(k, 1, 2) / np.sqrt(4))
    np.testing.assert_allclose(A.attention_weights(cache), p, atol=1e-15)
    np.testing.assert_allclose(out, p @ v, atol=1e-14)


def test_heads_are_the_column_blocks_of_the_text():
    """head_i = Attention(Q W_i^Q, K W_i^K, V W_i^V) with W_i = columns i*hs:(i+1)*hs, one head at a time."""
    x_q, x_kv, W_q, b_q, W_k, b_k, W_v, b_v, W_o, b_o = mha_inputs(np.random.default_rng(9), 2, 3, 4, 6)
    out, cache = A.mha_forward(x_q, x_kv, W_q, b_q, W_k, b_k, W_v, b_v, W_o, b_o, n_head=3)
    weights, heads = A.mha_weights(cache), []
    for i in range(3):
        s = slice(2 * i, 2 * i + 2)
        head, c = A.attention_forward(x_q @ W_q[:, s] + b_q[s], x_kv @ W_k[:, s] + b_k[s], x_kv @ W_v[:, s] + b_v[s])
        np.testing.assert_allclose(weights[:, i], A.attention_weights(c), atol=1e-15)
        heads.append(head)
    np.testing.assert_allclose(out, np.concatenate(heads, -1) @ W_o + b_o, atol=1e-13)


def test_float32_stays_float32():
    inputs = [a.astype(np.float32) for a in mha_inputs(np.random.default_rng(10), 2, 3, 3, 4)]
    out, cache = A.mha_forward(*inputs, n_head=2, mask=A.causal_mask(3))
    grads = A.mha_backward(np.ones_like(out), cache)
    assert out.dtype == np.float32 and all(g.dtype == np.float32 for g in grads)
    assert A.mha_weights(cache).dtype == np.float32


# ---- a trusted reference: torch, float64, the same weights ----


def test_mha_matches_torch():
    torch = pytest.importorskip("torch")
    B, T_q, T_kv, C, H = 2, 3, 5, 8, 2
    inputs = mha_inputs(np.random.default_rng(11), B, T_q, T_kv, C)
    x_q, x_kv, W_q, b_q, W_k, b_k, W_v, b_v, W_o, b_o = inputs
    pad = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], bool)
    causal = A.causal_mask(T_q, T_kv)
    out, cache = A.mha_forward(*inputs, n_head=H, mask=A.key_padding_mask(pad) & causal)

    ref = torch.nn.MultiheadAttention(C, H, batch_first=True, dtype=torch.float64)
    with torch.no_grad():  # torch stores y = x W^T + b: our W transposed, q, k, v stacked
        ref.in_proj_weight.copy_(torch.from_numpy(np.concatenate([W_q.T, W_k.T, W_v.T])))
        ref.in_proj_bias.copy_(torch.from_numpy(np.concatenate([b_q, b_k, b_v])))
        ref.out_proj.weight.copy_(torch.from_numpy(W_o.T))
        ref.out_proj.bias.copy_(torch.from_numpy(b_o))
    tq, tkv = (torch.tensor(a, requires_grad=True) for a in (x_q, x_kv))
    tout, tw = ref(tq, tkv, tkv, key_padding_mask=torch.from_numpy(~pad), attn_mask=torch.from_numpy(~causal),
                   average_attn_weights=False)  # torch's masks read True = may NOT attend
    np.testing.assert_allclose(out, tout.detach().numpy(), rtol=0, atol=1e-10)
    np.testing.assert_allclose(A.mha_weights(cache), tw.detach().numpy(), rtol=0, atol=1e-10)

    dout = np.random.default_rng(12).standard_normal(out.shape)
    (tout * torch.from_numpy(dout)).sum().backward()
    dx_q, dx_kv, dW_q, db_q, dW_k, db_k, dW_v, db_v, dW_o, db_o = A.mha_backward(dout, cache)
    np.testing.assert_allclose(dx_q, tq.grad.numpy(), rtol=0, atol=1e-10)
    np.testing.assert_allclose(dx_kv, tkv.grad.numpy(), rtol=0, atol=1e-10)
    np.testing.assert_allclose(np.concatenate([dW_q.T, dW_k.T, dW_v.T]), ref.in_proj_weight.grad.numpy(), atol=1e-10)
    np.testing.assert_allclose(dW_o.T, ref.out_proj.weight.grad.numpy(), rtol=0, atol=1e-10)


# ---- bad input ----

X, W = np.ones((2, 3, 4)), np.eye(4)


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: A.attention_forward(np.ones((3, 4)), np.ones((3, 5)), np.ones((3, 2))),
         "k must have last dimension 4"),
        (lambda: A.attention_forward(np.ones((2, 3, 4)), np.ones((3, 3, 4)), np.ones((3, 3, 4))), "leading dimensions"),
        (lambda: A.attention_forward(np.ones((3, 4)), np.ones((3, 4)), np.ones((2, 4))), "the length T_k"),
        (lambda: A.attention_forward(np.ones((3, 4), np.float32), np.ones((3, 4)), np.ones((3, 4))), "one dtype"),
        (lambda: A.attention_forward(np.ones((3, 4)), np.ones((3, 4)), np.ones((3, 4)), mask=np.ones((3, 3))),
         "boolean"),
        (lambda: A.attention_forward(np.ones((3, 4)), np.ones((3, 4)), np.ones((3, 4)), mask=np.ones((3, 2), bool)),
         r"does not broadcast to the scores' shape \(3, 3\)"),
        (lambda: A.attention_forward(np.ones(4), np.ones(4), np.ones(4)), "at least 2 dimension"),
        (lambda: A.mha_forward(X, X, *[W, np.zeros(4)] * 4, n_head=3), "n_head must divide"),
        (lambda: A.mha_forward(X, np.ones((2, 3, 5)), *[W, np.zeros(4)] * 4, n_head=2),
         "x_kv must have last dimension 4"),
        (lambda: A.mha_forward(X, X, *[W, np.zeros(4)] * 3, np.ones((4, 3)), np.zeros(3), n_head=2),
         r"W_o must have shape \(4, 4\)"),
        (lambda: A.key_padding_mask(np.ones((2, 3))), "boolean"),
    ],
)
def test_bad_input_raises_clear_valueerror(call, match):
    with pytest.raises(ValueError, match=match):
        call()

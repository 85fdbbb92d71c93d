"""The Transformer block of §5.1 and its feed-forward network.

    FFN(x)          = act(x W1 + b1) W2 + b2                     act: ReLU (the text) or GELU, F = 4C
    post-LN:    h   = LN1(x + MHA(x, x, x)),   y = LN2(h + FFN(h))      (the text's TransformerBlock)
    pre-LN:     h   = x + MHA(LN1(x)),         y = h + FFN(LN2(h))      (GPT-2 and later)

Post-LN normalises the sum after each residual; pre-LN normalises the
sublayer's input and leaves the residual stream x -> y an identity, which is
why deep pre-LN stacks train without warmup and need one LayerNorm after the
last block (``ln_f`` in minilm.transformer).

A block's parameters live in the model's dict under a prefix (``h0.``):
``attn.W_q`` ... ``attn.b_o`` (minilm.attention), ``ln1.gamma``,
``ln1.beta``, ``ffn.W1``, ``ffn.b1``, ``ffn.W2``, ``ffn.b2``, ``ln2.gamma``,
``ln2.beta``.

An *attention-only* block (``cfg.ffn == "none"``) keeps the first sublayer
alone: post-LN y = LN1(x + MHA(x)), pre-LN y = x + MHA(LN1(x)); it has no
``ffn.*`` and no ``ln2.*`` parameters.  Two such layers are the smallest
model in which an induction head can form (attention reads attention).
"""

from __future__ import annotations

import numpy as np

from minilm.activations import gelu_backward, gelu_forward, relu_backward, relu_forward
from minilm.attention import MHA_KEYS, init_mha, mha_backward, mha_cached_forward, mha_forward, mha_params, mha_weights
from minilm.dropout import dropout_backward, dropout_forward
from minilm.layernorm import layernorm_backward, layernorm_forward
from minilm.linear import linear_backward, linear_forward

# ---- the feed-forward network ----

ACTIVATIONS = {"relu": (relu_forward, relu_backward), "gelu": (gelu_forward, gelu_backward)}


def ffn_forward(x, W1, b1, W2, b2, activation: str = "relu"):
    """y = act(x W1 + b1) W2 + b2 (§5.1: Linear(C, 4C), ReLU, Linear(4C, C)).

    Inputs: x (..., C), W1 (C, F), b1 (F,), W2 (F, C), b2 (C,); activation 'relu' or 'gelu'.
    Returns: y (..., C), cache.
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
    h, c1 = linear_forward(x, W1, b1)  # (..., C) x (C, F) -> (..., F)
    a, c_act = ACTIVATIONS[activation][0](h)  # (..., F)
    y, c2 = linear_forward(a, W2, b2)  # (..., F) x (F, C) -> (..., C)
    return y, (c1, c_act, activation, c2)


def ffn_backward(dy, cache):
    """da, dW2, db2 = linear_backward(dy);  dh = act'(h) da;  dx, dW1, db1 = linear_backward(dh).

    Returns dx, dW1, db1, dW2, db2.
    """
    c1, c_act, activation, c2 = cache
    ### BEGIN SOLUTION
    da, dW2, db2 = linear_backward(dy, c2)  # (..., F)
    dh = ACTIVATIONS[activation][1](da, c_act)  # (..., F)
    dx, dW1, db1 = linear_backward(dh, c1)  # (..., C)
    ### END SOLUTION
    return dx, dW1, db1, dW2, db2


# ---- the block ----

FFN_KEYS = ("W1", "b1", "W2", "b2")


def block_forward(x, params, prefix: str, cfg, mask=None, *, train: bool = False, rng=None):
    """One Transformer block (§5.1), post-LN (the text) or pre-LN:

        post:  h = LN1(x + Drop(MHA(x))),   y = LN2(h + Drop(FFN(h)))
        pre:   h = x + Drop(MHA(LN1(x))),   y = h + Drop(FFN(LN2(h)))

    Inputs:  x (B, T, C); params holding ``prefix + 'attn.W_q'`` etc. (module
             docstring); cfg: anything with n_head, ffn, norm, dropout; mask
             boolean, broadcastable to (B, H, T, T), True = may attend.
    Returns: y (B, T, C), cache (a dict; ``cache['attn']`` is the MHA cache).
    """
    attn_w = mha_params(params, prefix + "attn.")
    ln1 = params[prefix + "ln1.gamma"], params[prefix + "ln1.beta"]
    if cfg.ffn == "none":
        return attention_only_forward(x, attn_w, ln1, prefix, cfg, mask, train=train, rng=rng)
    ffn_w = [params[prefix + "ffn." + k] for k in FFN_KEYS]
    ln2 = params[prefix + "ln2.gamma"], params[prefix + "ln2.beta"]
    if cfg.norm == "post":
        a, c_attn = mha_forward(x, x, *attn_w, cfg.n_head, mask)  # (B, T, C)
        a, c_d1 = dropout_forward(a, cfg.dropout, rng, train)
        h, c_ln1 = layernorm_forward(x + a, *ln1)  # (B, T, C)
        f, c_ffn = ffn_forward(h, *ffn_w, cfg.ffn)  # (B, T, C)
        f, c_d2 = dropout_forward(f, cfg.dropout, rng, train)
        y, c_ln2 = layernorm_forward(h + f, *ln2)  # (B, T, C)
    else:
        n1, c_ln1 = layernorm_forward(x, *ln1)  # (B, T, C)
        a, c_attn = mha_forward(n1, n1, *attn_w, cfg.n_head, mask)  # (B, T, C)
        a, c_d1 = dropout_forward(a, cfg.dropout, rng, train)
        h = x + a  # (B, T, C)
        n2, c_ln2 = layernorm_forward(h, *ln2)  # (B, T, C)
        f, c_ffn = ffn_forward(n2, *ffn_w, cfg.ffn)  # (B, T, C)
        f, c_d2 = dropout_forward(f, cfg.dropout, rng, train)
        y = h + f  # (B, T, C)
    cache = {"prefix": prefix, "norm": cfg.norm, "attn": c_attn, "d1": c_d1, "ln1": c_ln1,
             "ffn": c_ffn, "d2": c_d2, "ln2": c_ln2}
    return y, cache


def block_cached_forward(x, past, params, prefix: str, cfg):
    """The block of ``block_forward`` (causal, no dropout) on T new positions, reading the keys and
    values ``past`` of the t positions before them (minilm.attention.mha_cached_forward):

        post:  h = LN1(x + MHA(x | past)),   y = LN2(h + FFN(h))
        pre:   h = x + MHA(LN1(x) | past),   y = h + FFN(LN2(h))

    Only attention mixes positions; LayerNorm, the FFN and the residuals act
    on each position alone, so they run on the T new rows only.
    Inputs:  x (B, T, C); past (K, V), each (B, H, t, hs), or None.
    Returns: y (B, T, C), present (K, V), each (B, H, t + T, hs).
    """
    attn_w = mha_params(params, prefix + "attn.")
    ln1 = params[prefix + "ln1.gamma"], params[prefix + "ln1.beta"]
    if cfg.norm == "post":
        a, present = mha_cached_forward(x, past, *attn_w, cfg.n_head)  # (B, T, C)
        h, _ = layernorm_forward(x + a, *ln1)  # (B, T, C)
    else:
        n1, _ = layernorm_forward(x, *ln1)  # (B, T, C)
        a, present = mha_cached_forward(n1, past, *attn_w, cfg.n_head)  # (B, T, C)
        h = x + a  # (B, T, C)
    if cfg.ffn == "none":
        return h, present
    ffn_w = [params[prefix + "ffn." + k] for k in FFN_KEYS]
    ln2 = params[prefix + "ln2.gamma"], params[prefix + "ln2.beta"]
    if cfg.norm == "post":
        f, _ = ffn_forward(h, *ffn_w, cfg.ffn)  # (B, T, C)
        y, _ = layernorm_forward(h + f, *ln2)  # (B, T, C)
    else:
        n2, _ = layernorm_forward(h, *ln2)  # (B, T, C)
        f, _ = ffn_forward(n2, *ffn_w, cfg.ffn)  # (B, T, C)
        y = h + f  # (B, T, C)
    return y, present


def block_backward(dy, cache):
    """The forward in reverse; each residual sum sends its gradient down both paths:

        post:  ds2 = LN2'(dy);  dh = ds2 + FFN'(Drop'(ds2));  ds1 = LN1'(dh);  dx = ds1 + MHA'(Drop'(ds1))
        pre:   dh = dy + LN2'(FFN'(Drop'(dy)));  dx = dh + LN1'(MHA'(Drop'(dh)))

    MHA' returns gradients for the queries and for the keys/values; both
    come from the same input, so they add.  Returns dx (B, T, C), grads (a
    dict keyed like the block's parameters).
    """
    c = cache
    if c["ffn"] is None:
        return attention_only_backward(dy, c)
    ### BEGIN SOLUTION
    if c["norm"] == "post":
        ds2, dgamma2, dbeta2 = layernorm_backward(dy, c["ln2"])  # (B, T, C), gradient of h + f
        df = dropout_backward(ds2, c["d2"])
        dh, *dffn = ffn_backward(df, c["ffn"])
        dh = dh + ds2  # the residual path h -> h + f
        ds1, dgamma1, dbeta1 = layernorm_backward(dh, c["ln1"])  # (B, T, C), gradient of x + a
        da = dropout_backward(ds1, c["d1"])
        dx_q, dx_kv, *dattn = mha_backward(da, c["attn"])
        dx = ds1 + dx_q + dx_kv  # residual path + the queries' and keys/values' paths
    else:
        df = dropout_backward(dy, c["d2"])
        dn2, *dffn = ffn_backward(df, c["ffn"])
        dh, dgamma2, dbeta2 = layernorm_backward(dn2, c["ln2"])
        dh = dh + dy  # the residual path h -> y
        da = dropout_backward(dh, c["d1"])
        dn1_q, dn1_kv, *dattn = mha_backward(da, c["attn"])
        dx, dgamma1, dbeta1 = layernorm_backward(dn1_q + dn1_kv, c["ln1"])
        dx = dx + dh  # the residual path x -> h
    ### END SOLUTION
    pre = c["prefix"]
    grads = {pre + "attn." + k: g for k, g in zip(MHA_KEYS, dattn, strict=True)}
    grads |= {pre + "ln1.gamma": dgamma1, pre + "ln1.beta": dbeta1}
    grads |= {pre + "ffn." + k: g for k, g in zip(FFN_KEYS, dffn, strict=True)}
    grads |= {pre + "ln2.gamma": dgamma2, pre + "ln2.beta": dbeta2}
    return dx, grads


def attention_only_forward(x, attn_w, ln1, prefix: str, cfg, mask=None, *, train: bool = False, rng=None):
    """The block without its feed-forward sublayer (``cfg.ffn == "none"``):

        post:  y = LN1(x + Drop(MHA(x)))        pre:  y = x + Drop(MHA(LN1(x)))

    Inputs as ``block_forward``, with the attention's eight arrays ``attn_w``
    (mha_forward's order) and ``ln1`` = (gamma, beta).  Returns y (B, T, C), cache.
    """
    if cfg.norm == "post":
        a, c_attn = mha_forward(x, x, *attn_w, cfg.n_head, mask)  # (B, T, C)
        a, c_d1 = dropout_forward(a, cfg.dropout, rng, train)
        y, c_ln1 = layernorm_forward(x + a, *ln1)  # (B, T, C)
    else:
        n1, c_ln1 = layernorm_forward(x, *ln1)  # (B, T, C)
        a, c_attn = mha_forward(n1, n1, *attn_w, cfg.n_head, mask)  # (B, T, C)
        a, c_d1 = dropout_forward(a, cfg.dropout, rng, train)
        y = x + a  # (B, T, C)
    cache = {"prefix": prefix, "norm": cfg.norm, "attn": c_attn, "d1": c_d1, "ln1": c_ln1,
             "ffn": None, "d2": None, "ln2": None}
    return y, cache


def attention_only_backward(dy, cache):
    """post:  ds1 = LN1'(dy);  dx = ds1 + MHA'(Drop'(ds1))        pre:  dx = dy + LN1'(MHA'(Drop'(dy)))

    Returns dx (B, T, C), grads (the ``attn.*`` and ``ln1.*`` of the block).
    """
    c = cache
    ### BEGIN SOLUTION
    if c["norm"] == "post":
        ds1, dgamma1, dbeta1 = layernorm_backward(dy, c["ln1"])  # (B, T, C), gradient of x + a
        dx_q, dx_kv, *dattn = mha_backward(dropout_backward(ds1, c["d1"]), c["attn"])
        dx = ds1 + dx_q + dx_kv  # residual path + the queries' and keys/values' paths
    else:
        dn1_q, dn1_kv, *dattn = mha_backward(dropout_backward(dy, c["d1"]), c["attn"])
        dx, dgamma1, dbeta1 = layernorm_backward(dn1_q + dn1_kv, c["ln1"])
        dx = dx + dy  # the residual path x -> y
    ### END SOLUTION
    pre = c["prefix"]
    grads = {pre + "attn." + k: g for k, g in zip(MHA_KEYS, dattn, strict=True)}
    return dx, grads | {pre + "ln1.gamma": dgamma1, pre + "ln1.beta": dbeta1}


def block_attention_weights(cache) -> np.ndarray:
    """Per-head attention weights (B, H, T, T) of one ``block_forward`` call."""
    return mha_weights(cache["attn"])


def block_shapes(C: int, prefix: str = "", ffn: bool = True) -> dict[str, tuple[int, ...]]:
    """Name and shape of each of a block's parameters, F = 4C (ffn=False: an attention-only block's)."""
    F = 4 * C
    shapes = {prefix + "attn." + k: (C, C) if k.startswith("W") else (C,) for k in MHA_KEYS}
    shapes |= {prefix + "ln1.gamma": (C,), prefix + "ln1.beta": (C,)}
    if not ffn:
        return shapes
    shapes |= {prefix + "ffn.W1": (C, F), prefix + "ffn.b1": (F,), prefix + "ffn.W2": (F, C), prefix + "ffn.b2": (C,)}
    return shapes | {prefix + "ln2.gamma": (C,), prefix + "ln2.beta": (C,)}


def init_block(C: int, rng: np.random.Generator, dtype=np.float32, prefix: str = "",
               ffn: bool = True) -> dict[str, np.ndarray]:
    """Weights N(0, 1/fan_in), biases 0, LayerNorm gamma 1 and beta 0; F = 4C (ffn=False: attention only)."""
    F = 4 * C
    p = init_mha(C, rng, dtype, prefix + "attn.")
    p[prefix + "ln1.gamma"], p[prefix + "ln1.beta"] = np.ones(C, dtype), np.zeros(C, dtype)
    if not ffn:
        return p
    p[prefix + "ffn.W1"] = (rng.standard_normal((C, F)) / np.sqrt(C)).astype(dtype)  # (C, F)
    p[prefix + "ffn.b1"] = np.zeros(F, dtype)  # (F,)
    p[prefix + "ffn.W2"] = (rng.standard_normal((F, C)) / np.sqrt(F)).astype(dtype)  # (F, C)
    p[prefix + "ffn.b2"] = np.zeros(C, dtype)  # (C,)
    p[prefix + "ln2.gamma"], p[prefix + "ln2.beta"] = np.ones(C, dtype), np.zeros(C, dtype)
    return p

"""Attention (§4.1): scaled dot-product attention and multi-head attention.

    Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k) + M) V
    MultiHead(Q, K, V) = Concat(head_1, ..., head_h) W^O,
    head_i             = Attention(Q W_i^Q, K W_i^K, V W_i^V)

Masks are boolean and read **True = may attend**.  ``M`` above is 0 where the
mask is True and -infinity where it is False, so a masked key gets weight 0.
Two masks cover the text's models:

* causal: query t may attend to keys 0..t only (``causal_mask``), so a
  language model cannot look at the word it must predict;
* key padding: no query attends to a padded key (``key_padding_mask``), so a
  batch of sequences of unequal length gives each sequence the result it
  would have alone.

Masks combine with ``&``.  A query whose every key is masked (a *fully
masked row*: a padded query under left padding, say) has no distribution to take;
it is defined here to have zero weights, hence zero output and zero gradient,
never NaN.

The h heads of multi-head attention are not a loop: the width C is split
into H heads of hs = C / H features, and one batched matmul over (B, H)
computes every head at once.  W_i^Q of the text is columns i*hs..(i+1)*hs of
W_q (and likewise for K, V); W^O is W_o.
"""

from __future__ import annotations

import numpy as np

from minilm.linear import linear_backward, linear_forward
from minilm.softmax import softmax_backward, softmax_forward
from minilm.validate import check_float


def causal_mask(T_q: int, T_k: int | None = None) -> np.ndarray:
    """(T_q, T_k) boolean, True on and below the diagonal: query t sees keys 0..t.

    With T_k > T_q the queries are the *last* T_q positions of the keys
    (query t sees keys 0..t + T_k - T_q).
    """
    T_k = T_q if T_k is None else T_k
    return np.tril(np.ones((T_q, T_k), dtype=bool), k=T_k - T_q)  # (T_q, T_k)


def key_padding_mask(pad_mask: np.ndarray) -> np.ndarray:
    """(B, T) boolean, True = real token  ->  (B, 1, 1, T): broadcasts over heads and queries."""
    pad_mask = np.asarray(pad_mask)
    if pad_mask.dtype != bool or pad_mask.ndim != 2:
        raise ValueError(f"pad_mask must be a (B, T) boolean array (True = real token), "
                         f"got dtype {pad_mask.dtype} and shape {pad_mask.shape}")
    return pad_mask[:, None, None, :]  # (B, 1, 1, T)


def _check_mask(mask, scores_shape) -> np.ndarray:
    if not isinstance(mask, np.ndarray) or mask.dtype != bool:
        raise ValueError(f"mask must be a boolean numpy array (True = may attend), got "
                         f"{getattr(mask, 'dtype', type(mask).__name__)}")
    try:
        ok = np.broadcast_shapes(mask.shape, scores_shape) == tuple(scores_shape)
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(f"mask of shape {mask.shape} does not broadcast to the scores' shape "
                         f"{tuple(scores_shape)} (..., T_q, T_k)")
    return mask


def attention_forward(q: np.ndarray, k: np.ndarray, v: np.ndarray, mask: np.ndarray | None = None):
    """out = softmax(q k^T / sqrt(d_k) + M) v   (§4.1), M = 0 where mask, -inf elsewhere.

    Inputs:  q (..., T_q, d_k), k (..., T_k, d_k), v (..., T_k, d_v), one
             dtype and the same leading dimensions; mask boolean, broadcastable
             to (..., T_q, T_k), True = may attend (None: every key).
    Returns: out (..., T_q, d_v), cache.  ``attention_weights(cache)`` gives
             the weights (..., T_q, T_k): each row sums to 1, or is all zero
             when the mask leaves that query no key.
    """
    check_float(q, "q", min_ndim=2)
    check_float(k, "k", min_ndim=2, last_dim=q.shape[-1])
    check_float(v, "v", min_ndim=2)
    if not q.dtype == k.dtype == v.dtype:
        raise ValueError(f"q, k, v must share one dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if q.shape[:-2] != k.shape[:-2] or k.shape[:-1] != v.shape[:-1]:
        raise ValueError(f"q, k, v must share leading dimensions and k, v the length T_k: "
                         f"got q {q.shape}, k {k.shape}, v {v.shape}")
    scale = q.dtype.type(1 / np.sqrt(q.shape[-1]))  # 1/sqrt(d_k), in the inputs' dtype
    ### BEGIN SOLUTION
    scores = (q @ np.swapaxes(k, -1, -2)) * scale  # (..., T_q, d_k) x (..., d_k, T_k) -> (..., T_q, T_k)
    if mask is not None:
        mask = _check_mask(mask, scores.shape)
        # -inf would make a fully masked row NaN (-inf - -inf); the lowest finite
        # number gives weight exactly 0 to masked keys all the same.
        scores = np.where(mask, scores, np.finfo(q.dtype).min)  # (..., T_q, T_k)
    p, c_soft = softmax_forward(scores)  # (..., T_q, T_k), rows sum to 1
    w = p if mask is None else p * mask  # (..., T_q, T_k); a fully masked row (uniform p) -> 0
    out = w @ v  # (..., T_q, T_k) x (..., T_k, d_v) -> (..., T_q, d_v)
    ### END SOLUTION
    return out, (q, k, v, w, mask, c_soft, scale)


def attention_backward(dout: np.ndarray, cache):
    """With S = q k^T / sqrt(d_k), P = softmax(S), W = P * mask:

        dv = W^T dout,   dW = dout v^T,   dP = dW * mask,
        dS = P * (dP - rowsum(dP * P))          (softmax_backward),
        dq = dS k / sqrt(d_k),   dk = dS^T q / sqrt(d_k)

    A masked key gets dS = 0 (P = 0 there, and dP = 0 in a fully masked row),
    so padded keys receive no gradient through attention.  Returns dq, dk, dv.
    """
    q, k, v, w, mask, c_soft, scale = cache
    ### BEGIN SOLUTION
    dv = np.swapaxes(w, -1, -2) @ dout  # (..., T_k, T_q) x (..., T_q, d_v) -> (..., T_k, d_v)
    dw = dout @ np.swapaxes(v, -1, -2)  # (..., T_q, d_v) x (..., d_v, T_k) -> (..., T_q, T_k)
    dp = dw if mask is None else dw * mask  # (..., T_q, T_k)
    dscores = softmax_backward(dp, c_soft)  # (..., T_q, T_k), 0 at masked keys: there P = 0 or dP = 0
    dq = (dscores @ k) * scale  # (..., T_q, T_k) x (..., T_k, d_k) -> (..., T_q, d_k)
    dk = (np.swapaxes(dscores, -1, -2) @ q) * scale  # (..., T_k, T_q) x (..., T_q, d_k) -> (..., T_k, d_k)
    ### END SOLUTION
    return dq, dk, dv


def attention_weights(cache) -> np.ndarray:
    """The attention weights (..., T_q, T_k) of an ``attention_forward`` call, from its cache."""
    return cache[3]


def split_heads(x: np.ndarray, n_head: int) -> np.ndarray:
    """(..., T, C) -> (..., H, T, hs): head i takes features i*hs..(i+1)*hs."""
    *lead, T, C = x.shape
    return np.swapaxes(x.reshape(*lead, T, n_head, C // n_head), -3, -2)  # (..., T, H, hs) -> (..., H, T, hs)


def merge_heads(x: np.ndarray) -> np.ndarray:
    """(..., H, T, hs) -> (..., T, C): Concat(head_1, ..., head_h), the inverse of split_heads."""
    *lead, H, T, hs = x.shape
    return np.swapaxes(x, -3, -2).reshape(*lead, T, H * hs)  # (..., T, H, hs) -> (..., T, C)


def mha_forward(x_q, x_kv, W_q, b_q, W_k, b_k, W_v, b_v, W_o, b_o, n_head: int, mask=None):
    """MultiHead(Q, K, V) = Concat(head_1..head_h) W^O,  head_i = Attention(Q W_i^Q, K W_i^K, V W_i^V)  (§4.1).

    Self-attention: ``x_q`` and ``x_kv`` are the same array.  Cross-attention:
    queries come from ``x_q`` and keys and values from ``x_kv`` (a decoder
    reading an encoder).  Each projection has a bias, as nn.Linear in §5.1.

    Inputs:  x_q (..., T_q, C), x_kv (..., T_kv, C); W_q, W_k, W_v, W_o (C, C);
             b_q, b_k, b_v, b_o (C,); n_head H divides C; mask boolean,
             broadcastable to (..., H, T_q, T_kv), True = may attend (a
             (T_q, T_kv) causal mask or a (B, 1, 1, T_kv) key padding mask).
    Returns: out (..., T_q, C), cache.  ``mha_weights(cache)`` gives the
             per-head weights (..., H, T_q, T_kv).
    """
    check_float(W_q, "W_q", min_ndim=2)
    C = W_q.shape[0]
    if n_head < 1 or C % n_head:
        raise ValueError(f"n_head must divide the model width: C = {C}, n_head = {n_head}")
    check_float(x_q, "x_q", min_ndim=2, last_dim=C)
    check_float(x_kv, "x_kv", min_ndim=2, last_dim=C)
    for name, W in (("W_q", W_q), ("W_k", W_k), ("W_v", W_v), ("W_o", W_o)):
        if np.shape(W) != (C, C):
            raise ValueError(f"{name} must have shape ({C}, {C}), got {np.shape(W)}")
    Q, c_q = linear_forward(x_q, W_q, b_q)  # (..., T_q, C)
    K, c_k = linear_forward(x_kv, W_k, b_k)  # (..., T_kv, C)
    V, c_v = linear_forward(x_kv, W_v, b_v)  # (..., T_kv, C)
    heads, c_att = attention_forward(split_heads(Q, n_head), split_heads(K, n_head), split_heads(V, n_head),
                                     mask)  # (..., H, T_q, hs)
    out, c_o = linear_forward(merge_heads(heads), W_o, b_o)  # (..., T_q, C) x (C, C) -> (..., T_q, C)
    return out, (c_q, c_k, c_v, c_att, c_o, n_head)


def mha_backward(dout: np.ndarray, cache):
    """Reverse of mha_forward, through the same primitives:

        dconcat, dW_o, db_o = linear_backward(dout);  dq, dk, dv = attention_backward(split(dconcat))
        dx_q = dQ W_q^T,   dx_kv = dK W_k^T + dV W_v^T   (x_kv feeds both K and V)

    For self-attention (x_q is x_kv) the input's gradient is dx_q + dx_kv.
    Returns dx_q, dx_kv, dW_q, db_q, dW_k, db_k, dW_v, db_v, dW_o, db_o.
    """
    c_q, c_k, c_v, c_att, c_o, n_head = cache
    ### BEGIN SOLUTION
    dconcat, dW_o, db_o = linear_backward(dout, c_o)  # (..., T_q, C)
    dq, dk, dv = attention_backward(split_heads(dconcat, n_head), c_att)  # (..., H, T, hs) each
    dx_q, dW_q, db_q = linear_backward(merge_heads(dq), c_q)  # (..., T_q, C)
    dx_k, dW_k, db_k = linear_backward(merge_heads(dk), c_k)  # (..., T_kv, C)
    dx_v, dW_v, db_v = linear_backward(merge_heads(dv), c_v)  # (..., T_kv, C)
    dx_kv = dx_k + dx_v  # (..., T_kv, C)
    ### END SOLUTION
    return dx_q, dx_kv, dW_q, db_q, dW_k, db_k, dW_v, db_v, dW_o, db_o


def mha_weights(cache) -> np.ndarray:
    """Per-head attention weights (..., H, T_q, T_kv) of an ``mha_forward`` call, from its cache."""
    return attention_weights(cache[3])


def mha_cached_forward(x, past, W_q, b_q, W_k, b_k, W_v, b_v, W_o, b_o, n_head: int):
    """Causal self-attention of T new positions that also read the keys and values of t earlier ones.

        K = [K_past; x W_k + b_k],   V = [V_past; x W_v + b_v],   out = MultiHead(x W_q + b_q, K, V) W^O

    This is KV-cache decoding (§6.3 text generation): under a causal mask the
    keys and values of a position never change once it has been read, so a
    decoder that writes one token at a time keeps them (the *KV cache*) and
    computes, per new token, one row of Q, K and V instead of all t + 1.  With
    ``past`` None it is ``mha_forward(x, x, ..., causal_mask(T))`` and also
    returns the K and V it computed.

    Inputs:  x (B, T, C) the new positions t .. t + T - 1; past (K, V), each
             (B, H, t, hs), or None (t = 0); the eight arrays and n_head as mha_forward.
    Returns: out (B, T, C), present (K, V), each (B, H, t + T, hs).  No
             backward: this path is for generation (training reads whole windows).
    """
    T = x.shape[-2]
    Q, _ = linear_forward(x, W_q, b_q)  # (B, T, C) x (C, C) -> (B, T, C)
    K, _ = linear_forward(x, W_k, b_k)  # (B, T, C)
    V, _ = linear_forward(x, W_v, b_v)  # (B, T, C)
    K, V = split_heads(K, n_head), split_heads(V, n_head)  # (B, H, T, hs) each
    if past is not None:
        K = np.concatenate([past[0], K], axis=-2)  # (B, H, t, hs) ++ (B, H, T, hs) -> (B, H, t + T, hs)
        V = np.concatenate([past[1], V], axis=-2)  # (B, H, t + T, hs)
    mask = causal_mask(T, K.shape[-2])  # (T, t + T): new query i sees keys 0 .. t + i
    heads, _ = attention_forward(split_heads(Q, n_head), K, V, mask)  # (B, H, T, hs)
    out, _ = linear_forward(merge_heads(heads), W_o, b_o)  # (B, T, C) x (C, C) -> (B, T, C)
    return out, (K, V)


MHA_KEYS = ("W_q", "b_q", "W_k", "b_k", "W_v", "b_v", "W_o", "b_o")  # mha_forward's parameter order


def mha_params(params: dict[str, np.ndarray], prefix: str) -> list[np.ndarray]:
    """The eight arrays of mha_forward, in order, from a parameter dict: params[prefix + 'W_q'], ..."""
    return [params[prefix + key] for key in MHA_KEYS]


def init_mha(C: int, rng: np.random.Generator, dtype=np.float32, prefix: str = "") -> dict[str, np.ndarray]:
    """W ~ N(0, 1/C) (fan-in scaling: each projection keeps unit variance), biases 0."""
    p = {}
    for key in MHA_KEYS:
        if key.startswith("W"):
            p[prefix + key] = (rng.standard_normal((C, C)) / np.sqrt(C)).astype(dtype)  # (C, C)
        else:
            p[prefix + key] = np.zeros(C, dtype)  # (C,)
    return p

"""The fast path's building blocks: the same formulas as the plain modules, written into buffers.

Each function here mirrors a plain one and says which; the formula is the
same, only the way it is evaluated differs:

* every result goes into an array the caller allocated once (``out=``), so a
  training step allocates almost nothing;
* row sums and means are matrix-vector products with a ones vector (one BLAS
  call instead of a reduction along a short axis, which NumPy does slowly);
* long elementwise chains run in cache-sized blocks on two threads
  (minilm.fast.threads);
* constants are cast to the arrays' dtype, so float32 stays float32;
* where a C compiler is found, the elementwise chains of GELU, LayerNorm,
  the attention's softmax and head transposes, the cross-entropy and the bias
  adds run as single compiled loops instead
  (minilm/fast/loops.c, loaded by minilm.fast.fused, which says why and what
  stays NumPy's); the NumPy chains below stay the reference they are tested
  against, and run where there is no compiler or MINILM_FUSED=0.

Shapes follow the package legend; M = B T is the number of token positions.
"""

from __future__ import annotations

import numpy as np

from minilm.activations import GELU_C
from minilm.fast import fused
from minilm.fast.threads import run_halves, run_rows, scratch

# ---- matrix products ----


def matmul(a, b, out) -> None:
    """out = a @ b, 2-D, in one BLAS call."""
    np.matmul(a, b, out=out)


def matmul_split(a, b, out) -> None:
    """out = a @ b, 2-D, on two threads (with BLAS on one thread: minilm.fast.blas): the two halves of a's
    rows, or with few rows and many columns (the n-gram's (B, Hd) x (Hd, V)) the two halves of b's columns."""
    if a.shape[0] >= 128:
        run_halves(lambda lo, hi: np.matmul(a[lo:hi], b, out=out[lo:hi]), a.shape[0])
    elif a.shape[0] * a.shape[1] * b.shape[1] >= SPLIT_MACS:
        run_halves(lambda lo, hi: np.matmul(a, b[:, lo:hi], out=out[:, lo:hi]), b.shape[1])
    else:
        np.matmul(a, b, out=out)


SPLIT_MACS = 1 << 22  # multiply-adds from which a few-row product is worth two threads


def add_bias(y, b) -> None:
    """y += b on every row: a linear layer's bias, y (M, N), b (N,).  NumPy's broadcast add makes one inner
    loop per row, about twice as slow per element as a plain add; the compiled loop does not."""
    if fused.ON and y.flags.c_contiguous:
        fused.add_bias(y, b)
    else:
        y += b  # (M, N) + (N,)


# ---- LayerNorm (mirrors minilm.layernorm) -------------------------------------------------------


def layernorm_forward(x, gamma, beta, out, xhat, rstd, eps: float = 1e-5) -> None:
    """out = gamma * xhat + beta,  xhat = (x - mu) / sqrt(var + eps)   (minilm.layernorm.layernorm_forward).

    x, out, xhat: (M, C); rstd: (M,) receives 1 / sqrt(var + eps).  out is used as scratch first.
    """
    if fused.ON:
        fused.layernorm_forward(x, gamma, beta, out, xhat, rstd, eps)  # one loop over each row
        return
    f = x.dtype.type
    C = x.shape[1]
    inv_c = np.full(C, 1 / C, x.dtype)  # (C,): x @ inv_c is the row mean
    mu = x @ inv_c  # (M, C) x (C,) -> (M,)
    np.subtract(x, mu[:, None], out=xhat)  # (M, C), x - mu
    np.multiply(xhat, xhat, out=out)  # (M, C)
    var = out @ inv_c  # (M,), biased variance
    var += f(eps)
    np.sqrt(var, out=rstd)
    np.reciprocal(rstd, out=rstd)  # (M,)
    xhat *= rstd[:, None]  # (M, C)
    np.multiply(xhat, gamma, out=out)  # (M, C)
    out += beta


def layernorm_backward(dy, xhat, rstd, gamma, dx_acc, dgamma, dbeta, tmp, ones_m) -> None:
    """dx = rstd * (g - mean(g) - xhat * mean(g * xhat)),  g = dy * gamma   (minilm.layernorm.layernorm_backward).

    Adds dx into dx_acc (M, C) -- the residual stream's gradient, so the add is free -- (or, with
    dx_acc None, leaves dx in dy) and writes
    dgamma = sum_rows dy * xhat and dbeta = sum_rows dy.  dy (M, C) is overwritten; tmp (M, C) is scratch.
    The row means are matrix-vector products: mean(g) = dy @ (gamma / C), mean(g * xhat) = (dy * xhat) @ (gamma / C).
    """
    if fused.ON:
        fused.layernorm_backward(dy, xhat, rstd, gamma, dy if dx_acc is None else dx_acc, dx_acc is not None,
                                 dgamma, dbeta)
        return
    C = dy.shape[1]
    gamma_c = gamma / dy.dtype.type(C)  # (C,)
    np.matmul(ones_m, dy, out=dbeta)  # (M,) x (M, C) -> (C,)
    np.multiply(dy, xhat, out=tmp)  # (M, C), dy * xhat
    np.matmul(ones_m, tmp, out=dgamma)  # (C,)
    b = tmp @ gamma_c  # (M,), mean(g * xhat)
    a = dy @ gamma_c  # (M,), mean(g)
    dy *= gamma  # (M, C), g
    dy -= a[:, None]
    np.multiply(xhat, b[:, None], out=tmp)  # (M, C)
    dy -= tmp
    dy *= rstd[:, None]  # (M, C), dx
    if dx_acc is not None:  # None: dx stays in dy (post-LN, where the LayerNorm's input is not a residual stream)
        dx_acc += dy


# ---- GELU, tanh form (mirrors minilm.activations.gelu_forward / gelu_backward) -------------------

GELU_K = 0.044715


def gelu_bias_forward(f, bias, s, g) -> None:
    """x = f + bias;  g = x * s,  s = sigmoid(2u) = 1 / (1 + exp(-2u)),  u = sqrt(2/pi) (x + 0.044715 x^3).

    f (M, F), the feed-forward's first product, is read and left as it is (the backward adds the bias
    again: one array fewer to write); s and g (M, F) are kept for the backward.  The plain gelu_forward
    clamps u at -40 so that exp cannot overflow; here exp may overflow to inf instead (for x < -10 or
    so), which gives s = 1 / (1 + inf) = 0 where the clamp gives s < 1e-27: the same y = x s and
    gradient to within 1e-26, without np.minimum (the slowest pass of the chain).
    """
    dt = f.dtype.type
    c = dt(2 * GELU_C)
    ck = dt(-2 * GELU_C * GELU_K)

    def loop(lo, hi, _):  # the whole chain in one loop (minilm.fast.fused)
        fused.gelu_forward(f[lo:hi], bias, s[lo:hi], g[lo:hi])

    def chain(lo, hi, store):
        z, x = s[lo:hi], scratch(store, "x", f[lo:hi].shape, f.dtype)
        np.add(f[lo:hi], bias, out=x)  # (rows, F), the linear layer's bias
        np.multiply(x, x, out=z)
        z *= ck
        z -= c  # -c (1 + 0.044715 x^2)
        z *= x  # -2u
        with np.errstate(over="ignore"):  # exp(-2u) = inf: s = 0, which is right
            np.exp(z, out=z)
        z += dt(1)
        np.reciprocal(z, out=z)  # s = sigmoid(2u)
        np.multiply(x, z, out=g[lo:hi])  # (rows, F)

    run_rows(loop if fused.ON else chain, f.shape[0], f.shape[1])


def gelu_backward_inplace(dy, f, s, bias, dbias, ones_m) -> None:
    """dy *= s + x s (1 - s) c (1 + 3 * 0.044715 x^2),  c = 2 sqrt(2/pi),  x = f + bias   (in place, (M, F));
    dbias (F,) = the sum of dy's rows, the bias's gradient (``ones_m`` (M,) ones: the chain's product).

    The compiled loop makes both in one pass over the rows, on this thread (its column sums add up
    row after row)."""
    if fused.ON:
        fused.gelu_backward(dy, f, bias, s, dbias)
        return
    dt = f.dtype.type
    c, c3k = dt(2 * GELU_C), dt(2 * GELU_C * 3 * GELU_K)

    def chain(lo, hi, store):
        sv, d = s[lo:hi], dy[lo:hi]
        x = scratch(store, "x", d.shape, d.dtype)
        t = scratch(store, "t", d.shape, d.dtype)
        u = scratch(store, "u", d.shape, d.dtype)
        np.add(f[lo:hi], bias, out=x)
        np.multiply(x, x, out=t)
        t *= c3k
        t += c  # c (1 + 3k x^2), du/dx times 2
        t *= x
        np.subtract(dt(1), sv, out=u)  # 1 - s
        u *= sv  # s (1 - s)
        t *= u
        t += sv
        d *= t

    run_rows(chain, f.shape[0], f.shape[1])
    np.matmul(ones_m, dy, out=dbias)  # (M,) x (M, F) -> (F,)


# ---- embedding (mirrors minilm.embedding.embedding_backward) -------------------------------------------

ONEHOT_MAX_V = 1024  # up to this vocabulary the gradient is a product with a one-hot matrix


def embedding_backward_add(dE, ids, dx, onehot=None) -> None:
    """dE[v] += sum of the rows dx[m] with ids[m] = v   (minilm.embedding.embedding_backward, added into dE).

    ids (M,), dx (M, C), dE (V, C).  With ``onehot`` (V, M) scratch it is one product dE += onehot dx,
    onehot[v, m] = [ids[m] = v] (about six times faster than np.add.at for a character vocabulary);
    without, np.add.at (for a large V, where the one-hot matrix would be large).
    """
    if onehot is None:
        np.add.at(dE, ids, dx)  # (V, C), repeated ids accumulate
        return
    dE += fill_onehot(onehot, ids) @ dx  # (V, M) x (M, C) -> (V, C)


def fill_onehot(onehot, ids):
    """onehot (V, M) := [ids[m] = v] for ids (M,); returns onehot."""
    onehot.fill(0)
    onehot[ids, np.arange(len(ids))] = 1  # (V, M)
    return onehot


# ---- causal self-attention core (mirrors minilm.attention.attention_forward / _backward) ----------


def causal_additive_mask(T: int, dtype) -> np.ndarray:
    """(T, T): 0 where query t may see key s (s <= t), -inf above the diagonal.

    Added to the scores this is the plain code's np.where(mask, scores, lowest): a masked key
    gets weight exactly 0.  The diagonal is always visible, so no row is fully masked.
    """
    return np.triu(np.full((T, T), -np.inf, dtype), k=1)  # (T, T)


def _transpose(heads, out) -> None:
    """out (b, H, hs, T) = heads (b, H, T, hs) transposed: one compiled loop (minilm.fast.fused) for gpt's views of
    the projection, else NumPy's copy."""
    if fused.ON and heads.strides[-1] == heads.itemsize:
        fused.transpose_heads(heads, out)
    else:
        np.copyto(out, heads.swapaxes(-1, -2))


def attention_forward(q, k, v, P, out, mask_add, scale, kT=None, vT=None) -> None:
    """out = softmax(q k^T / sqrt(hs) + M) v over the batch axis in two halves (two threads).

    q, k, v: (B, H, T, hs) views.  P: (B, H, T, T) receives the weights; out: (B, H, T, hs) view
    receives the heads.  The NumPy chain scales q by 1/sqrt(hs) in place (its backward uses the scaled
    q); the compiled softmax (minilm.fast.fused) scales the scores instead and leaves q as it is.  With
    ``kT`` (B, H, hs, T) scratch, k^T is copied there first: the product with a contiguous right-hand
    side runs faster than with the transposed view of the heads, copy included.  With ``vT`` (B, H, hs, T),
    v^T is copied there for the backward (attention_backward's vT), while v is still in the cache.
    """
    T = P.shape[-1]

    def half(lo, hi):
        qs, S, kt = q[lo:hi], P[lo:hi], k[lo:hi].swapaxes(-1, -2)  # kt: (b, H, hs, T) view
        if kT is not None:
            kt = kT[lo:hi]
            _transpose(k[lo:hi], kt)  # (b, H, hs, T), contiguous
        if vT is not None:
            _transpose(v[lo:hi], vT[lo:hi])  # kept for the backward's dout v^T
        if fused.ON:  # one loop per row: the scale, the causal mask (mask_add) and the softmax
            np.matmul(qs, kt, out=S)  # (b, H, T, hs) x (b, H, hs, T) -> (b, H, T, T), q k^T
            fused.softmax_forward(S.reshape(-1, T, T), mask_add is not None, scale)  # (b H, T, T), rows sum to 1
            np.matmul(S, v[lo:hi], out=out[lo:hi])
            return
        qs *= scale  # (b, H, T, hs)
        np.matmul(qs, kt, out=S)  # (b, H, T, hs) x (b, H, hs, T) -> (b, H, T, T)
        ones_t = np.ones(T, P.dtype)
        if mask_add is not None:  # None: no causal mask (the masked LM sees both sides)
            S += mask_add  # (b, H, T, T), -inf at future keys
        S -= S.max(axis=-1, keepdims=True)  # every exponent <= 0
        np.exp(S, out=S)
        r = S @ ones_t  # (b, H, T), the row sums
        np.reciprocal(r, out=r)
        S *= r[..., None]  # (b, H, T, T), rows sum to 1
        np.matmul(S, v[lo:hi], out=out[lo:hi])  # (b, H, T, T) x (b, H, T, hs) -> (b, H, T, hs)

    run_halves(half, q.shape[0])


def attention_backward(dout, q, k, v, P, dP, dq, dk, dv, scale, vT=None) -> None:
    """dv = P^T dout;  dP = dout v^T;  dS = P * (dP - rowsum(dP * P));  dq = dS k / sqrt(hs);  dk = dS^T q / sqrt(hs).

    q is what attention_forward left: in the NumPy chain the scaled q, so dk = dS^T q needs no further
    scale; with the compiled softmax the q of the projection, and the loop scales dS itself.  P and dP
    (B, H, T, T) are overwritten; dq, dk, dv are (B, H, T, hs) views into the gradient of the q/k/v
    projection.  ``vT`` (B, H, hs, T): v^T as attention_forward kept it, for dout v^T (the product with a
    contiguous right-hand side runs faster than with the transposed view of the heads); None: that view.
    """
    T = P.shape[-1]

    def half(lo, hi):
        p, d, g = P[lo:hi], dP[lo:hi], dout[lo:hi]
        np.matmul(p.swapaxes(-1, -2), g, out=dv[lo:hi])  # (b, H, T, T) x (b, H, T, hs) -> (b, H, T, hs)
        vt = v[lo:hi].swapaxes(-1, -2) if vT is None else vT[lo:hi]  # (b, H, hs, T)
        np.matmul(g, vt, out=d)  # (b, H, T, hs) x (b, H, hs, T) -> (b, H, T, T)
        if fused.ON:  # dS / sqrt(hs), one loop: the gradient of q k^T
            fused.softmax_backward(d.reshape(-1, T, T), p.reshape(-1, T, T), scale)
            np.matmul(d, k[lo:hi], out=dq[lo:hi])  # (b, H, T, T) x (b, H, T, hs) -> (b, H, T, hs)
            np.matmul(d.swapaxes(-1, -2), q[lo:hi], out=dk[lo:hi])  # (b, H, T, T) x (b, H, T, hs) -> (b, H, T, hs)
            return
        d *= p  # dP * P
        r = d @ np.ones(T, P.dtype)  # (b, H, T), rowsum(dP * P)
        p *= r[..., None]
        d -= p  # dS = P dP - P rowsum(dP P)
        np.matmul(d, k[lo:hi], out=dq[lo:hi])  # (b, H, T, T) x (b, H, T, hs) -> (b, H, T, hs)
        dq[lo:hi] *= scale
        np.matmul(d.swapaxes(-1, -2), q[lo:hi], out=dk[lo:hi])  # (b, H, T, T) x (b, H, T, hs) -> (b, H, T, hs)

    run_halves(half, P.shape[0])


# ---- cross-entropy (mirrors minilm.softmax.cross_entropy_forward / _backward) -----------------------


def cross_entropy_inplace(logits, targets, ones_v, ignore_index: int | None = None) -> float:
    """Mean of -log softmax(logits)[target]; logits (M, V) is replaced by dloss/dlogits = (softmax - onehot) / M.

    With ``ignore_index``, positions whose target equals it do not count: the mean is over the n counted
    positions (0.0 if none), and their rows of dlogits are (softmax - onehot) / n or 0.
    """
    if fused.ON:  # one loop over the rows (minilm/fast/loops.c)
        return fused.cross_entropy(logits, targets, ignore_index)
    if ignore_index is not None and (targets == ignore_index).any():
        return _cross_entropy_ignoring(logits, targets, ones_v, targets != ignore_index)
    M = logits.shape[0]
    rows = np.arange(M)
    logits -= logits.max(axis=1, keepdims=True)  # (M, V), every exponent <= 0
    picked = logits[rows, targets]  # (M,), z at the target
    np.exp(logits, out=logits)  # (M, V)
    total = logits @ ones_v  # (M,), sum of exponentials
    loss = float(np.mean(np.log(total) - picked, dtype=np.float64))
    total *= logits.dtype.type(M)
    np.reciprocal(total, out=total)
    logits *= total[:, None]  # softmax / M
    logits[rows, targets] -= logits.dtype.type(1 / M)
    return loss


def _cross_entropy_ignoring(logits, targets, ones_v, keep) -> float:
    """cross_entropy_inplace over the rows where ``keep`` (M,) is True (minilm.softmax.cross_entropy_forward's
    ignore_index); the other rows of the gradient are 0."""
    M = logits.shape[0]
    rows, safe = np.arange(M), np.where(keep, targets, 0)  # (M,), ignored rows point at id 0
    count = max(int(keep.sum()), 1)
    logits -= logits.max(axis=1, keepdims=True)  # (M, V)
    picked = logits[rows, safe]  # (M,)
    np.exp(logits, out=logits)
    total = logits @ ones_v  # (M,)
    loss = float(np.sum((np.log(total) - picked) * keep, dtype=np.float64) / count)
    total *= logits.dtype.type(count)
    np.reciprocal(total, out=total)
    logits *= total[:, None]  # softmax / n
    logits[rows, safe] -= logits.dtype.type(1 / count)
    logits[~keep] = 0
    return loss

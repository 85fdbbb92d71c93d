"""The vanilla (Elman) RNN: the recurrent baseline that the LSTM of §5.2 improves on.

One step, for the input x_t (B, D) and the previous hidden state h_{t-1} (B, Hd):

    h_t = tanh(x_t W_x + h_{t-1} W_h + b)        W_x (D, Hd), W_h (Hd, Hd), b (Hd,)

This is torch.nn.RNN with nonlinearity="tanh": W_x = weight_ih.T, W_h = weight_hh.T, b = bias_ih + bias_hh.

Over a sequence x (B, T, D) the step repeats with the same weights (rnn_forward), and
backpropagation through time walks t = T-1 down to 0 (rnn_backward).  h_t feeds the output at t and
step t+1, so the gradient reaching it is the sum of the two.  The only path from h_t back to h_{t-1} is

    dh_{t-1} = (dh_t * (1 - h_t^2)) W_h^T,   i.e. the Jacobian  dh_t/dh_{t-1} = diag(1 - h_t^2) W_h^T,

a product of one such Jacobian per step: with no additive cell path (the LSTM's c_t) the gradient
shrinks or grows geometrically, at a rate set by W_h's spectral radius and the tanh slopes.

Truncated BPTT: ``rnn_forward`` takes the initial state h0 and returns the final one h_T, which the
next contiguous batch passes in as its h0; the backward of that batch returns dh0, which the caller
drops (no gradient crosses the batch boundary).
"""

from __future__ import annotations

import numpy as np

from minilm.activations import tanh_backward, tanh_forward
from minilm.linear import linear_backward, linear_forward
from minilm.validate import check_float


def rnn_init(rng: np.random.Generator, D: int, Hd: int, dtype=np.float32):
    """W_x (D, Hd), W_h (Hd, Hd), b (Hd,) ~ U(-1/sqrt(Hd), 1/sqrt(Hd)), torch.nn.RNN's default."""
    k = 1 / np.sqrt(Hd)
    Wx = rng.uniform(-k, k, (D, Hd))  # (D, Hd)
    Wh = rng.uniform(-k, k, (Hd, Hd))  # (Hd, Hd)
    b = rng.uniform(-k, k, Hd)  # (Hd,)
    return Wx.astype(dtype), Wh.astype(dtype), b.astype(dtype)


def _check(x, h0, Wx, Wh, b, x_ndim: int, what: str) -> None:
    """Shapes and dtypes of an RNN call: x (B, D) for a step or (B, T, D) for a sequence."""
    names = ("x", "h0" if x_ndim == 3 else "h_prev", "Wx", "Wh", "b")
    arrays = (x, h0, Wx, Wh, b)
    for name, a in zip(names, arrays, strict=True):
        check_float(a, name)
    if x.ndim != x_ndim:
        raise ValueError(f"{what}: x must have shape {'(B, T, D)' if x_ndim == 3 else '(B, D)'}, got {x.shape}")
    if Wh.ndim != 2 or Wh.shape[0] != Wh.shape[1]:
        raise ValueError(f"{what}: Wh must have shape (Hd, Hd), got {Wh.shape}")
    Hd, D = Wh.shape[0], x.shape[-1]
    expected = (None, (x.shape[0], Hd), (D, Hd), (Hd, Hd), (Hd,))
    for name, a, shape in zip(names[1:], arrays[1:], expected[1:], strict=True):
        if a.shape != shape:
            raise ValueError(f"{what}: {name} must have shape {shape} (B = {x.shape[0]}, D = {D}, Hd = {Hd}), "
                             f"got {a.shape}")
    if len({a.dtype for a in arrays}) != 1:
        found = ", ".join(f"{n} {a.dtype}" for n, a in zip(names, arrays, strict=True))
        raise ValueError(f"{what}: every array must have the same dtype (no silent upcast), got {found}")
    if x_ndim == 3 and x.shape[1] == 0:
        raise ValueError(f"{what}: x must have at least one time step, got shape {x.shape}")


def rnn_step_forward(x, h_prev, Wx, Wh, b):
    """One tanh RNN step:  h_t = tanh(x_t W_x + h_{t-1} W_h + b).

    Inputs: x (B, D), h_prev (B, Hd), Wx (D, Hd), Wh (Hd, Hd), b (Hd,).
    Returns: h (B, Hd), cache = (cache_x, cache_h, cache_tanh): two ``linear_forward`` caches
    (x W_x + b, and h_prev W_h with no bias) and the ``tanh_forward`` cache.
    """
    _check(x, h_prev, Wx, Wh, b, 2, "rnn_step_forward")
    ### BEGIN SOLUTION
    ax, cache_x = linear_forward(x, Wx, b)  # (B, D) x (D, Hd) -> (B, Hd)
    ah, cache_h = linear_forward(h_prev, Wh)  # (B, Hd) x (Hd, Hd) -> (B, Hd)
    h, cache_tanh = tanh_forward(ax + ah)  # (B, Hd)
    ### END SOLUTION
    return h, (cache_x, cache_h, cache_tanh)


def rnn_step_backward(dh, cache):
    """With a = x W_x + h_prev W_h + b and h = tanh(a), in reverse order of the forward:

        da = dh * (1 - h^2)                                               h = tanh(a)
        dx = da W_x^T,  dW_x = x^T da,  db = sum_b da                     x W_x + b
        dh_prev = da W_h^T,  dW_h = h_prev^T da                           h_prev W_h (no bias)

    Inputs: dh (B, Hd), the gradient reaching h_t; the cache of rnn_step_forward
    (use ``tanh_backward`` and ``linear_backward`` on its three entries).
    Returns: dx (B, D), dh_prev (B, Hd), dWx (D, Hd), dWh (Hd, Hd), db (Hd,).
    """
    cache_x, cache_h, cache_tanh = cache
    ### BEGIN SOLUTION
    da = tanh_backward(dh, cache_tanh)  # (B, Hd)
    dx, dWx, db = linear_backward(da, cache_x)  # (B, D), (D, Hd), (Hd,)
    dh_prev, dWh, _ = linear_backward(da, cache_h)  # (B, Hd), (Hd, Hd); this product has no bias
    ### END SOLUTION
    return dx, dh_prev, dWx, dWh, db


def rnn_forward(x, h0, Wx, Wh, b):
    """rnn_step_forward for t = 0 .. T-1 with shared weights, from the state h0.

    Inputs: x (B, T, D), h0 (B, Hd), Wx (D, Hd), Wh (Hd, Hd), b (Hd,).
    Returns: hs (B, T, Hd), the hidden state of every step; h_T (B, Hd), the final state
    (= hs[:, -1]), to pass as h0 of the next contiguous batch; cache, the list of step caches.
    """
    _check(x, h0, Wx, Wh, b, 3, "rnn_forward")
    B, T, _ = x.shape
    hs = np.empty((B, T, Wh.shape[0]), dtype=x.dtype)  # (B, T, Hd)
    h, steps = h0, []
    for t in range(T):
        h, cache_t = rnn_step_forward(x[:, t], h, Wx, Wh, b)  # (B, Hd)
        hs[:, t] = h
        steps.append(cache_t)
    return hs, h, steps


def rnn_backward(dhs, cache, dh_T=None):
    """Backpropagation through time, t = T-1 down to 0, carrying dh backwards:

        dx_t, dh, dW_x^(t), dW_h^(t), db^(t) = rnn_step_backward(dhs_t + dh)     h_t feeds the output and step t+1
        dW_x = sum_t dW_x^(t),  dW_h = sum_t dW_h^(t),  db = sum_t db^(t)        the weights are shared

    Inputs: dhs (B, T, Hd), the gradients reaching each h_t from the outputs; dh_T (B, Hd), the gradient
    reaching the final state from elsewhere, or None (a final state that only feeds the next batch is
    detached: it gets no gradient).
    Returns: dx (B, T, D), dh0 (B, Hd), dWx (D, Hd), dWh (Hd, Hd), db (Hd,).
    """
    steps = cache
    B, T, Hd = dhs.shape
    D = steps[0][0][1].shape[0]  # the step's x W_x cache holds W_x (D, Hd)
    ### BEGIN SOLUTION
    dx = np.empty((B, T, D), dtype=dhs.dtype)  # (B, T, D)
    dh = np.zeros((B, Hd), dtype=dhs.dtype) if dh_T is None else dh_T  # (B, Hd)
    dWx, dWh, db = 0, 0, 0
    for t in reversed(range(T)):
        dx[:, t], dh, dWx_t, dWh_t, db_t = rnn_step_backward(dhs[:, t] + dh, cache[t])  # dh now reaches h_{t-1}
        dWx, dWh, db = dWx + dWx_t, dWh + dWh_t, db + db_t  # (D, Hd), (Hd, Hd), (Hd,)
    ### END SOLUTION
    return dx, dh, dWx, dWh, db

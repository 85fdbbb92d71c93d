"""The LSTM of §5.2: one step, a whole sequence (backpropagation through time), stacked layers.

One step, for inputs x_t (B, D) and the previous state h_{t-1}, c_{t-1} (B, Hd):

    a   = x_t W_x + h_{t-1} W_h + b        (B, 4Hd), cut into four (B, Hd) blocks a_i, a_f, a_g, a_o
    i   = sigmoid(a_i)                     input gate: how much of the candidate to write
    f   = sigmoid(a_f)                     forget gate: how much of the old cell to keep
    g   = tanh(a_g)                        candidate values
    o   = sigmoid(a_o)                     output gate: how much of the cell to show
    c_t = f * c_{t-1} + i * g
    h_t = o * tanh(c_t)

W_x is (D, 4Hd), W_h is (Hd, 4Hd), b is (4Hd,).  The gate order i, f, g, o is
torch.nn.LSTM's: W_x = weight_ih.T, W_h = weight_hh.T and b = bias_ih + bias_hh
(torch keeps two bias vectors that only ever appear as their sum).

Over a sequence x (B, T, D) the step repeats with the same weights.  The input
term x_t W_x + b does not depend on the state, so it is computed for all T
steps in one matmul before the loop; only h_{t-1} W_h and the gates run step by
step.  The backward walks t = T-1 down to 0 (h_t feeds both the output at t and
step t+1, so its gradient is the sum of the two), then forms the weight
gradients of all steps as single stacked matmuls.

Truncated BPTT: ``lstm_forward`` takes the initial state (h0, c0) and returns
the final one (h_T, c_T); the next contiguous batch passes that in as its
(h0, c0).  The arrays carry no graph, so no gradient crosses the batch
boundary: the backward of the next batch computes dh0, dc0 and the caller
simply drops them (torch's ``.detach()``).
"""

from __future__ import annotations

import numpy as np

from minilm.activations import sigmoid_backward, sigmoid_forward, tanh_backward, tanh_forward
from minilm.linear import linear_backward, linear_forward
from minilm.validate import check_float


def lstm_init(rng: np.random.Generator, D: int, Hd: int, dtype=np.float32, forget_bias: float = 1.0):
    """Weights W_x (D, 4Hd), W_h (Hd, 4Hd) ~ U(-1/sqrt(Hd), 1/sqrt(Hd)) (torch's default), bias 0 except the
    forget-gate block b_f = forget_bias.  A positive b_f starts the forget gate near sigmoid(1) ~ 0.73, open,
    so the cell keeps its memory and its gradient early in training (Jozefowicz et al. 2015)."""
    k = 1 / np.sqrt(Hd)
    Wx = rng.uniform(-k, k, (D, 4 * Hd))  # (D, 4Hd)
    Wh = rng.uniform(-k, k, (Hd, 4 * Hd))  # (Hd, 4Hd)
    b = np.zeros(4 * Hd)  # (4Hd,)
    b[Hd : 2 * Hd] = forget_bias  # the f block
    return Wx.astype(dtype), Wh.astype(dtype), b.astype(dtype)


def _check(x, h0, c0, Wx, Wh, b, x_ndim: int, what: str) -> None:
    """Shapes and dtypes of an LSTM call: x (B, D) for a step or (B, T, D) for a sequence."""
    names = ("x", "h0", "c0", "Wx", "Wh", "b") if x_ndim == 3 else ("x", "h_prev", "c_prev", "Wx", "Wh", "b")
    for name, a in zip(names, (x, h0, c0, Wx, Wh, b), strict=True):
        check_float(a, name)
    Hd = Wh.shape[0]
    D = x.shape[-1]
    if x.ndim != x_ndim:
        raise ValueError(f"{what}: x must have shape {'(B, T, D)' if x_ndim == 3 else '(B, D)'}, got {x.shape}")
    expected = {"Wx": (D, 4 * Hd), "Wh": (Hd, 4 * Hd), "b": (4 * Hd,), names[1]: (x.shape[0], Hd),
                names[2]: (x.shape[0], Hd)}
    for name, a in zip(names[1:], (h0, c0, Wx, Wh, b), strict=True):
        if a.shape != expected[name]:
            raise ValueError(f"{what}: {name} must have shape {expected[name]} (B = {x.shape[0]}, D = {D}, "
                             f"Hd = {Hd}), got {a.shape}")
    dtypes = {a.dtype for a in (x, h0, c0, Wx, Wh, b)}
    if len(dtypes) != 1:
        found = ", ".join(f"{n} {a.dtype}" for n, a in zip(names, (x, h0, c0, Wx, Wh, b), strict=True))
        raise ValueError(f"{what}: every array must have the same dtype (no silent upcast), got {found}")
    if x_ndim == 3 and x.shape[1] == 0:
        raise ValueError(f"{what}: x must have at least one time step, got shape {x.shape}")


def lstm_gates_forward(a: np.ndarray, c_prev: np.ndarray):
    """The gates of one step from the pre-activations a = x_t W_x + h_{t-1} W_h + b:

        i, f, g, o = sigmoid(a_i), sigmoid(a_f), tanh(a_g), sigmoid(a_o)
        c_t = f * c_{t-1} + i * g,    h_t = o * tanh(c_t)

    Inputs: a (B, 4Hd), c_prev (B, Hd).  Returns h (B, Hd), c (B, Hd), cache.
    """
    Hd = c_prev.shape[-1]
    ### BEGIN SOLUTION
    i, cache_i = sigmoid_forward(a[:, :Hd])  # (B, Hd) input gate
    f, cache_f = sigmoid_forward(a[:, Hd : 2 * Hd])  # (B, Hd) forget gate
    g, cache_g = tanh_forward(a[:, 2 * Hd : 3 * Hd])  # (B, Hd) candidate
    o, cache_o = sigmoid_forward(a[:, 3 * Hd :])  # (B, Hd) output gate
    c = f * c_prev + i * g  # (B, Hd)
    tc, cache_tc = tanh_forward(c)  # (B, Hd)
    h = o * tc  # (B, Hd)
    ### END SOLUTION
    return h, c, (i, f, g, o, c_prev, tc, cache_i, cache_f, cache_g, cache_o, cache_tc)


def lstm_gates_backward(dh: np.ndarray, dc: np.ndarray, cache):
    """With dc the gradient reaching c_t from step t+1, in reverse order of the forward:

        do = dh * tanh(c_t),   dc_t = dc + tanh'(c_t) * (dh * o)            h_t = o * tanh(c_t)
        di = dc_t * g,  dg = dc_t * i,  df = dc_t * c_{t-1},  dc_{t-1} = dc_t * f      c_t = f c_{t-1} + i g
        da = [di * i(1-i),  df * f(1-f),  dg * (1-g^2),  do * o(1-o)]       the gate nonlinearities

    Returns da (B, 4Hd), dc_prev (B, Hd).
    """
    i, f, g, o, c_prev, tc, cache_i, cache_f, cache_g, cache_o, cache_tc = cache
    ### BEGIN SOLUTION
    do = dh * tc  # (B, Hd)
    dc = dc + tanh_backward(dh * o, cache_tc)  # (B, Hd): c_t reaches the loss through h_t and through c_{t+1}
    di, dg, df = dc * g, dc * i, dc * c_prev  # (B, Hd) each
    dc_prev = dc * f  # (B, Hd)
    da = np.concatenate([sigmoid_backward(di, cache_i), sigmoid_backward(df, cache_f),
                         tanh_backward(dg, cache_g), sigmoid_backward(do, cache_o)], axis=-1)  # (B, 4Hd)
    ### END SOLUTION
    return da, dc_prev


def lstm_step_forward(x, h_prev, c_prev, Wx, Wh, b):
    """One LSTM step (§5.2):

        a = x W_x + h_{t-1} W_h + b;   i, f, g, o = sigmoid(a_i), sigmoid(a_f), tanh(a_g), sigmoid(a_o)
        c_t = f * c_{t-1} + i * g;     h_t = o * tanh(c_t)

    Inputs: x (B, D), h_prev (B, Hd), c_prev (B, Hd), Wx (D, 4Hd), Wh (Hd, 4Hd), b (4Hd,).
    Returns: h (B, Hd), c (B, Hd), cache.
    """
    _check(x, h_prev, c_prev, Wx, Wh, b, 2, "lstm_step_forward")
    ### BEGIN SOLUTION
    ax, cache_x = linear_forward(x, Wx, b)  # (B, D) x (D, 4Hd) -> (B, 4Hd)
    ah, cache_h = linear_forward(h_prev, Wh)  # (B, Hd) x (Hd, 4Hd) -> (B, 4Hd)
    h, c, cache_gates = lstm_gates_forward(ax + ah, c_prev)  # (B, Hd), (B, Hd)
    ### END SOLUTION
    return h, c, (cache_x, cache_h, cache_gates)


def lstm_step_backward(dh, dc, cache):
    """da, dc_prev from the gates (lstm_gates_backward(dh, dc, cache_gates)), then a = x W_x + b + h_prev W_h:

        dx = da W_x^T,  dh_prev = da W_h^T,  dW_x = x^T da,  dW_h = h_prev^T da,  db = sum_b da

    Inputs: dh, dc (B, Hd), the gradients reaching h_t and c_t.  The cache:
    cache_x and cache_h are the caches of linear_forward(x, Wx, b) and
    linear_forward(h_prev, Wh) (no bias: linear_backward returns None for its
    db), so linear_backward(da, cache_x) gives dx, dWx, db; cache_gates is
    lstm_gates_forward's.
    Returns: dx (B, D), dh_prev (B, Hd), dc_prev (B, Hd), dWx (D, 4Hd), dWh (Hd, 4Hd), db (4Hd,).
    """
    cache_x, cache_h, cache_gates = cache
    ### BEGIN SOLUTION
    da, dc_prev = lstm_gates_backward(dh, dc, cache_gates)  # (B, 4Hd), (B, Hd)
    dx, dWx, db = linear_backward(da, cache_x)  # (B, D), (D, 4Hd), (4Hd,)
    dh_prev, dWh, _ = linear_backward(da, cache_h)  # (B, Hd), (Hd, 4Hd)
    ### END SOLUTION
    return dx, dh_prev, dc_prev, dWx, dWh, db


def lstm_forward(x, h0, c0, Wx, Wh, b):
    """The step of lstm_step_forward for t = 0 .. T-1 with shared weights, from the state (h0, c0).

    Inputs: x (B, T, D), h0 (B, Hd), c0 (B, Hd), Wx (D, 4Hd), Wh (Hd, 4Hd), b (4Hd,).
    Returns: hs (B, T, Hd) the hidden state of every step; (h_T, c_T) the final state, each (B, Hd),
    to pass as (h0, c0) of the next contiguous batch; cache.
    """
    _check(x, h0, c0, Wx, Wh, b, 3, "lstm_forward")
    B, T, _ = x.shape
    Hd = Wh.shape[0]
    ax, cache_x = linear_forward(x, Wx, b)  # (B, T, D) x (D, 4Hd) -> (B, T, 4Hd): every step's x_t W_x + b at once
    hs = np.empty((B, T, Hd), dtype=x.dtype)  # (B, T, Hd)
    h, c, steps = h0, c0, []
    for t in range(T):
        a = ax[:, t] + h @ Wh  # (B, 4Hd) + (B, Hd) x (Hd, 4Hd) -> (B, 4Hd)
        h, c, cache_t = lstm_gates_forward(a, c)  # (B, Hd), (B, Hd)
        hs[:, t] = h
        steps.append(cache_t)
    return hs, (h, c), (cache_x, h0, hs, Wh, steps)


def lstm_backward(dhs, cache, dstate=None):
    """Backpropagation through time, t = T-1 down to 0, carrying dh and dc backwards:

        da_t, dc = gates backward of (dhs_t + dh, dc);   dh = da_t W_h^T      (a_t = ... + h_{t-1} W_h)
        then over all steps at once:  dW_h = sum_t h_{t-1}^T da_t,  dx, dW_x, db from the input projection

    Inputs: dhs (B, T, Hd); dstate = (dh_T, dc_T), gradients reaching the final state, or None for none
    (a final state that only feeds the next batch is detached: it gets no gradient).
    Returns: dx (B, T, D), dh0 (B, Hd), dc0 (B, Hd), dWx, dWh, db.
    """
    cache_x, h0, hs, Wh, steps = cache
    B, T, Hd = hs.shape
    ### BEGIN SOLUTION
    dh, dc = (np.zeros_like(h0), np.zeros_like(h0)) if dstate is None else dstate  # (B, Hd) each
    da = np.empty((B, T, 4 * Hd), dtype=dhs.dtype)  # (B, T, 4Hd)
    for t in reversed(range(T)):
        da[:, t], dc = lstm_gates_backward(dhs[:, t] + dh, dc, steps[t])  # h_t feeds the output at t and step t+1
        dh = da[:, t] @ Wh.T  # (B, 4Hd) x (4Hd, Hd) -> (B, Hd), the gradient reaching h_{t-1}
    h_prev = np.concatenate([h0[:, None], hs[:, :-1]], axis=1)  # (B, T, Hd): h_{t-1} for every t
    dWh = h_prev.reshape(-1, Hd).T @ da.reshape(-1, 4 * Hd)  # (Hd, B T) x (B T, 4Hd) -> (Hd, 4Hd)
    dx, dWx, db = linear_backward(da, cache_x)  # (B, T, D), (D, 4Hd), (4Hd,)
    ### END SOLUTION
    return dx, dh, dc, dWx, dWh, db


def lstm_stack_forward(x, state, layers):
    """n stacked LSTMs: the hidden states of layer l are the inputs of layer l+1 (torch's num_layers).

    Inputs: x (B, T, D); state, a list with one (h0, c0) per layer, each (B, Hd);
            layers, a list with one (Wx, Wh, b) per layer (layer 0's Wx is (D, 4Hd), the others' (Hd, 4Hd)).
    Returns: hs (B, T, Hd) of the top layer; the final state, a list of (h_T, c_T) per layer; cache.
    """
    if len(state) != len(layers):
        raise ValueError(f"state must hold one (h0, c0) per layer: {len(layers)} layers, got {len(state)} states")
    final, caches = [], []
    for (h0, c0), (Wx, Wh, b) in zip(state, layers, strict=True):
        x, hc, cache = lstm_forward(x, h0, c0, Wx, Wh, b)  # (B, T, Hd)
        final.append(hc)
        caches.append(cache)
    return x, final, caches


def lstm_stack_backward(dhs, cache, dstate=None):
    """Layers in reverse: the dx of layer l is the dhs of layer l-1.

    Inputs: dhs (B, T, Hd) for the top layer; dstate, a list of (dh_T, dc_T) per layer, or None (detached).
    The cache is the list of each layer's lstm_forward cache; lstm_backward(dhs, cache_l, dstate_l)
    returns that layer's dx, dh0, dc0, dWx, dWh, db.
    Returns: dx (B, T, D); dstate0, the list of (dh0, dc0) per layer, each (B, Hd); dlayers, the list
    of (dWx, dWh, db) per layer, shaped as the layer's (Wx, Wh, b).
    """
    caches = cache
    L = len(caches)
    dstate = [None] * L if dstate is None else dstate
    dstate0, dlayers = [None] * L, [None] * L
    ### BEGIN SOLUTION
    for l in reversed(range(L)):
        dhs, dh0, dc0, dWx, dWh, db = lstm_backward(dhs, caches[l], dstate[l])  # dhs becomes layer l-1's
        dstate0[l], dlayers[l] = (dh0, dc0), (dWx, dWh, db)
    ### END SOLUTION
    return dhs, dstate0, dlayers

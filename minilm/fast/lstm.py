"""The LSTM of minilm.lstm over a whole sequence, fast: same signature, same numbers.

``lstm_forward`` / ``lstm_backward`` here are drop-in replacements for the
functions of the same name in minilm.lstm (tests/test_fast.py checks that
they agree).  The formulas are those of minilm.lstm.lstm_gates_forward:

    a = x_t W_x + h_{t-1} W_h + b;   i, f, o = sigmoid(a_i, a_f, a_o);   g = tanh(a_g)
    c_t = f * c_{t-1} + i * g;       h_t = o * tanh(c_t)

NumPy pays about a microsecond per call, and inside the loop over t every
call is paid T times on arrays small enough to sit in the cache, so the
loop body is written with as few calls as the formulas allow:

* all four gates come from ONE exponential: with the g block's
  pre-activation doubled, s = 1 / (1 + exp(-a)) is sigmoid for i, f, o and
  sigma = sigmoid(2 a_g) for g, and tanh(a_g) = 2 sigma - 1.  The factors -1
  (i, f, o) and -2 (g) are folded into copies of W_x, W_h and b made once per
  call, so the step computes -a directly: s = 1 / (1 + exp(h W_h' + (x W_x' + b'))).
* the gate derivatives are all s (1 - s): i(1-i), f(1-f), o(1-o) directly, and
  1 - g^2 = 4 sigma (1 - sigma).  The backward keeps the g block's gradient
  divided by 4 (one (B, 4Hd) multiply per step for all gates), and the
  factor 4 goes into the weights it is multiplied by (W_h^T, W_x^T) and into
  the g columns of dW_x, dW_h, db, once per call.
* W_h^T is stored contiguous for the backward's h-products (OpenBLAS is
  about a third slower on the transposed view at this size).
* every per-step result is written into preallocated (T, B, .) arrays (out=).

As in minilm.lstm, x_t W_x + b for all steps is one matmul before the loop,
and dW_x, dW_h, db, dx are single stacked matmuls after the backward loop.
The batch rows never interact, so the two halves of the batch may run on two
threads (``_split_batch``); with BLAS on one thread inside the loop either way.
"""

from __future__ import annotations

import numpy as np

from minilm.fast.blas import one_thread
from minilm.fast.threads import n_threads, run_halves

MIN_SPLIT = 64  # batch rows needed before the halves go to two threads (below that, the handover costs more)


def _split_batch(rows, B: int) -> None:
    """rows(lo, hi) over the batch, with BLAS on one thread: in two halves on two threads when B is large."""
    with one_thread():
        if n_threads() == 1 or B < MIN_SPLIT:
            rows(0, B)
        else:
            run_halves(rows, B)


def _gate_signs(Hd: int, dtype) -> np.ndarray:
    """(4Hd,): -1 for the i, f, o columns and -2 for g (tanh via sigmoid(2a))."""
    neg = np.full(4 * Hd, -1, dtype)
    neg[2 * Hd : 3 * Hd] = -2
    return neg


def _steps_forward(lo, hi, NA, Whn, S, G, H, Cs, TC):
    """The recurrence of batch rows lo:hi, t = 0 .. T-1 (minilm.lstm.lstm_step_forward, per step).

    NA (T, B, 4Hd) holds -(x_t W_x + b) with the g block doubled; S receives s = i, f, sigma, o;
    G receives g = tanh(a_g); H, Cs (T+1, B, Hd) the h and c of every step; TC tanh(c_t).
    """
    T, Hd = NA.shape[0], H.shape[2]
    one, two = NA.dtype.type(1), NA.dtype.type(2)
    tmp = np.empty((hi - lo, Hd), NA.dtype)
    with np.errstate(over="ignore"):  # exp(-a) = inf for a << 0 gives s = 0, which is right
        for t in range(T):
            s = S[t, lo:hi]  # (b, 4Hd)
            np.matmul(H[t, lo:hi], Whn, out=s)  # (b, Hd) x (Hd, 4Hd) -> (b, 4Hd): -h_{t-1} W_h
            s += NA[t, lo:hi]  # -a
            np.exp(s, out=s)
            s += one
            np.reciprocal(s, out=s)  # s = sigmoid(a) for i, f, o;  sigma = sigmoid(2 a_g) for g
            i, f, sg, o = s[:, :Hd], s[:, Hd : 2 * Hd], s[:, 2 * Hd : 3 * Hd], s[:, 3 * Hd :]
            g = G[t, lo:hi]
            np.multiply(sg, two, out=g)
            g -= one  # g = tanh(a_g) = 2 sigma - 1
            c = Cs[t + 1, lo:hi]
            np.multiply(f, Cs[t, lo:hi], out=c)  # f * c_{t-1}
            np.multiply(i, g, out=tmp)  # i * g
            c += tmp  # c_t
            tc = TC[t, lo:hi]
            np.tanh(c, out=tc)
            np.multiply(o, tc, out=H[t + 1, lo:hi])  # h_t = o * tanh(c_t)


def lstm_forward_tm(xt, T, h0, c0, Wx, Wh, b):
    """lstm_forward on time-major input: xt (T B, D), row t B + n = x[n, t] -> H (T+1, B, Hd), cache.

    H[0] = h0 and H[t+1] = h_t; a stack of layers (minilm.fast.lstm_lm) feeds H[1:] to the next layer as is.
    """
    B, Hd = h0.shape
    neg = _gate_signs(Hd, xt.dtype)
    NA = (xt @ (Wx * neg)).reshape(T, B, 4 * Hd)  # (T B, D) x (D, 4Hd) -> (T, B, 4Hd): -(x_t W_x), g doubled
    NA += b * neg  # -(x_t W_x + b)
    S = np.empty((T, B, 4 * Hd), xt.dtype)  # (T, B, 4Hd): i, f, sigma, o
    G = np.empty((T, B, Hd), xt.dtype)  # (T, B, Hd): g
    H = np.empty((T + 1, B, Hd), xt.dtype)  # (T+1, B, Hd): h_{-1} = h0, h_0, ..., h_{T-1}
    Cs = np.empty((T + 1, B, Hd), xt.dtype)  # (T+1, B, Hd): c0, c_0, ..., c_{T-1}
    TC = np.empty((T, B, Hd), xt.dtype)  # (T, B, Hd): tanh(c_t)
    H[0], Cs[0] = h0, c0
    Whn = Wh * neg  # (Hd, 4Hd): -W_h, g columns doubled
    _split_batch(lambda lo, hi: _steps_forward(lo, hi, NA, Whn, S, G, H, Cs, TC), B)
    return H, (xt, Wx, Wh, S, G, H, Cs, TC)


def lstm_forward(x, h0, c0, Wx, Wh, b):
    """minilm.lstm.lstm_forward: x (B, T, D), h0, c0 (B, Hd) -> hs (B, T, Hd), (h_T, c_T), cache."""
    B, T, D = x.shape
    xt = x.transpose(1, 0, 2).reshape(T * B, D)  # (T B, D) copy, time-major
    H, cache = lstm_forward_tm(xt, T, h0, c0, Wx, Wh, b)
    Cs = cache[6]
    hs = H[1:].transpose(1, 0, 2)  # (B, T, Hd) view
    return hs, (H[T].copy(), Cs[T].copy()), cache


def _steps_backward(lo, hi, dy, S, G, Cs, TC, WhT4, dA, dh, dc):
    """Batch rows lo:hi, t = T-1 down to 0 (minilm.lstm.lstm_step_backward, per step).

    dA (T, B, 4Hd) receives [di i(1-i), df f(1-f), dg (1-g^2) / 4, do o(1-o)]; WhT4 is W_h^T with
    its g rows times 4, so dA W_h^T4 = dh_{t-1}.  dh, dc (B, Hd) carry the state's gradients.
    """
    T, Hd = S.shape[0], G.shape[2]
    one = S.dtype.type(1)
    dh_, dc_ = dh[lo:hi], dc[lo:hi]  # views: the final values are dh0, dc0
    dS = np.empty((hi - lo, 4 * Hd), S.dtype)  # gradients of i, f, g, o
    tmp = np.empty((hi - lo, Hd), S.dtype)
    for t in reversed(range(T)):
        s, g, tc = S[t, lo:hi], G[t, lo:hi], TC[t, lo:hi]
        i, f, o = s[:, :Hd], s[:, Hd : 2 * Hd], s[:, 3 * Hd :]
        dh_ += dy[t, lo:hi]  # h_t feeds the output at t and step t+1
        np.multiply(dh_, tc, out=dS[:, 3 * Hd :])  # do = dh tanh(c_t)
        np.multiply(dh_, o, out=tmp)  # dh * o
        np.multiply(tc, tc, out=dh_)  # dh is free now: tanh(c)^2
        np.subtract(one, dh_, out=dh_)
        tmp *= dh_
        dc_ += tmp  # dc_t = dc + (1 - tanh(c_t)^2) (dh o)
        np.multiply(dc_, g, out=dS[:, :Hd])  # di = dc g
        np.multiply(dc_, Cs[t, lo:hi], out=dS[:, Hd : 2 * Hd])  # df = dc c_{t-1}
        np.multiply(dc_, i, out=dS[:, 2 * Hd : 3 * Hd])  # dg = dc i
        dc_ *= f  # dc_{t-1} = dc f
        da = dA[t, lo:hi]
        np.subtract(one, s, out=da)
        da *= s  # s (1 - s): i(1-i), f(1-f), (1 - g^2) / 4, o(1-o)
        da *= dS
        np.matmul(da, WhT4, out=dh_)  # (b, 4Hd) x (4Hd, Hd) -> (b, Hd), reaches h_{t-1}


def lstm_backward_tm(dy, cache, dstate=None):
    """lstm_backward on time-major gradients: dy (T, B, Hd) -> dxt (T B, D), dh0, dc0, dWx, dWh, db."""
    xt, Wx, Wh, S, G, H, Cs, TC = cache
    T, B, Hd = TC.shape
    dt = xt.dtype
    four = np.ones(4 * Hd, dt)  # (4Hd,): the g block of dA is kept divided by 4
    four[2 * Hd : 3 * Hd] = 4
    dh = np.zeros((B, Hd), dt) if dstate is None else dstate[0].copy()  # (B, Hd)
    dc = np.zeros((B, Hd), dt) if dstate is None else dstate[1].copy()  # (B, Hd)
    dA = np.empty((T, B, 4 * Hd), dt)  # (T, B, 4Hd): each step's pre-activation gradient (g block / 4)
    WhT4 = np.ascontiguousarray((Wh * four).T)  # (4Hd, Hd), contiguous
    _split_batch(lambda lo, hi: _steps_backward(lo, hi, dy, S, G, Cs, TC, WhT4, dA, dh, dc), B)
    dA2 = dA.reshape(T * B, 4 * Hd)  # (T B, 4Hd)
    dWh = H[:T].reshape(T * B, Hd).T @ dA2  # (Hd, T B) x (T B, 4Hd) -> (Hd, 4Hd)
    dWh *= four
    dWx = xt.T @ dA2  # (D, T B) x (T B, 4Hd) -> (D, 4Hd)
    dWx *= four
    db = dA2.sum(axis=0)  # (4Hd,)
    db *= four
    dxt = dA2 @ np.ascontiguousarray((Wx * four).T)  # (T B, 4Hd) x (4Hd, D) -> (T B, D)
    return dxt, dh, dc, dWx, dWh, db


def lstm_backward(dhs, cache, dstate=None):
    """minilm.lstm.lstm_backward: dhs (B, T, Hd) -> dx (B, T, D), dh0, dc0, dWx, dWh, db."""
    T, B, _ = cache[-1].shape
    dxt, dh, dc, dWx, dWh, db = lstm_backward_tm(dhs.transpose(1, 0, 2), cache, dstate)
    dx = dxt.reshape(T, B, -1).transpose(1, 0, 2)  # (B, T, D) view
    return dx, dh, dc, dWx, dWh, db

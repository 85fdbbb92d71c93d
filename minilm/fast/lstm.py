"""The LSTM of minilm.lstm over a whole sequence, fast: same signature, same numbers.

``lstm_forward`` / ``lstm_backward`` here are drop-in replacements for the
functions of the same name in minilm.lstm (tests/test_fast.py checks that
they agree).  The formulas are those of minilm.lstm.lstm_gates_forward:

    a = x_t W_x + h_{t-1} W_h + b;   i, f, o = sigmoid(a_i, a_f, a_o);   g = tanh(a_g)
    c_t = f * c_{t-1} + i * g;       h_t = o * tanh(c_t)

What is done differently, all of it inside the loop over t, where NumPy's
per-call cost is paid T times:

* all four gates come from ONE exponential: with the g block's
  pre-activation doubled, s = 1 / (1 + exp(-a)) gives sigmoid for i, f, o and
  sigmoid(2 a_g) for g, and tanh(a_g) = 2 sigmoid(2 a_g) - 1;
* the gate derivatives i(1-i), f(1-f), 1-g^2, o(1-o) are all s(1-s) (times 4
  for g), stored in one (B, 4Hd) block per step, so the backward multiplies once;
* every per-step result is written into preallocated (T, B, .) arrays (out=).

As in minilm.lstm, x_t W_x + b for all steps is one matmul before the loop,
and dW_x, dW_h, db, dx are single stacked matmuls after the backward loop.
"""

from __future__ import annotations

import numpy as np

from minilm.fast.blas import one_thread
from minilm.fast.threads import n_threads, run_halves


def _split_batch(rows, B: int) -> None:
    """rows(lo, hi) for the two halves of the batch on two threads, BLAS on one thread each."""
    if n_threads() == 1 or B < 8:
        rows(0, B)
        return
    with one_thread():
        run_halves(rows, B)


def lstm_forward(x, h0, c0, Wx, Wh, b):
    """minilm.lstm.lstm_forward: x (B, T, D), h0, c0 (B, Hd) -> hs (B, T, Hd), (h_T, c_T), cache."""
    B, T, D = x.shape
    Hd = Wh.shape[0]
    dt = x.dtype.type
    # every step's input term at once, time-major so each step reads one contiguous block
    xt = x.transpose(1, 0, 2).reshape(T * B, D)  # (T B, D) copy, time-major
    A = (xt @ Wx).reshape(T, B, 4 * Hd)  # (T B, D) x (D, 4Hd) -> (T, B, 4Hd)
    A += b
    neg = np.full(4 * Hd, dt(-1), x.dtype)  # (4Hd,): -1 for i, f, o and -2 for g (tanh via sigmoid(2a))
    neg[2 * Hd : 3 * Hd] = dt(-2)
    S = np.empty((T, B, 4 * Hd), x.dtype)  # (T, B, 4Hd): i, f, 2 sigmoid(2a_g) - 1 = g, o
    H = np.empty((T + 1, B, Hd), x.dtype)  # (T+1, B, Hd): h_{-1} = h0, h_0, ..., h_{T-1}
    Cs = np.empty((T + 1, B, Hd), x.dtype)  # (T+1, B, Hd): c0, c_0, ..., c_{T-1}
    TC = np.empty((T, B, Hd), x.dtype)  # (T, B, Hd): tanh(c_t)
    H[0], Cs[0] = h0, c0
    one, two = dt(1), dt(2)

    def rows(lo, hi):  # the recurrence of batch rows lo:hi (rows never interact)
        tmp = np.empty((hi - lo, Hd), x.dtype)
        with np.errstate(over="ignore"):  # exp(-a) = inf for a << 0 gives s = 0, which is right
            for t in range(T):
                a, s = A[t, lo:hi], S[t, lo:hi]  # (b, 4Hd)
                np.matmul(H[t, lo:hi], Wh, out=s)  # (b, Hd) x (Hd, 4Hd) -> (b, 4Hd)
                a += s  # a = x_t W_x + b + h_{t-1} W_h
                np.multiply(a, neg, out=s)
                np.exp(s, out=s)
                s += one
                np.reciprocal(s, out=s)  # sigmoid(a) for i, f, o;  sigmoid(2 a_g) for g
                g = s[:, 2 * Hd : 3 * Hd]
                g *= two
                g -= one  # g = tanh(a_g)
                c = Cs[t + 1, lo:hi]
                np.multiply(s[:, Hd : 2 * Hd], Cs[t, lo:hi], out=c)  # f * c_{t-1}
                np.multiply(s[:, :Hd], g, out=tmp)  # i * g
                c += tmp  # c_t
                np.tanh(c, out=TC[t, lo:hi])
                np.multiply(s[:, 3 * Hd :], TC[t, lo:hi], out=H[t + 1, lo:hi])  # h_t = o * tanh(c_t)

    _split_batch(rows, B)
    hs = H[1:].transpose(1, 0, 2)  # (B, T, Hd) view
    return hs, (H[T].copy(), Cs[T].copy()), (xt, Wx, Wh, S, H, Cs, TC)


def lstm_backward(dhs, cache, dstate=None):
    """minilm.lstm.lstm_backward: dhs (B, T, Hd) -> dx (B, T, D), dh0, dc0, dWx, dWh, db."""
    xt, Wx, Wh, S, H, Cs, TC = cache
    T, B, Hd = TC.shape
    dt = xt.dtype.type
    one = dt(1)
    dh = np.zeros((B, Hd), xt.dtype) if dstate is None else dstate[0].copy()  # (B, Hd)
    dc = np.zeros((B, Hd), xt.dtype) if dstate is None else dstate[1].copy()  # (B, Hd)
    dA = np.empty((T, B, 4 * Hd), xt.dtype)  # (T, B, 4Hd): the gradient of each step's pre-activation
    dy = dhs.transpose(1, 0, 2)  # (T, B, Hd) view

    def rows(lo, hi):  # batch rows lo:hi, t = T-1 down to 0
        dh_, dc_ = dh[lo:hi], dc[lo:hi]  # views: the final values are dh0, dc0
        dS = np.empty((hi - lo, 4 * Hd), xt.dtype)  # gradients of i, f, g, o
        tmp = np.empty((hi - lo, Hd), xt.dtype)
        for t in reversed(range(T)):
            s, tc = S[t, lo:hi], TC[t, lo:hi]
            i, f, g, o = s[:, :Hd], s[:, Hd : 2 * Hd], s[:, 2 * Hd : 3 * Hd], s[:, 3 * Hd :]
            dh_ += dy[t, lo:hi]  # h_t feeds the output at t and step t+1
            np.multiply(dh_, tc, out=dS[:, 3 * Hd :])  # do = dh tanh(c_t)
            np.multiply(dh_, o, out=tmp)  # dh * o
            np.multiply(tc, tc, out=dh_)  # dh is free now: tanh(c)^2
            np.subtract(one, dh_, out=dh_)
            tmp *= dh_
            dc_ += tmp  # dc_t = dc + tanh'(c_t) (dh o)
            np.multiply(dc_, g, out=dS[:, :Hd])  # di = dc g
            np.multiply(dc_, Cs[t, lo:hi], out=dS[:, Hd : 2 * Hd])  # df = dc c_{t-1}
            np.multiply(dc_, i, out=dS[:, 2 * Hd : 3 * Hd])  # dg = dc i
            dc_ *= f  # dc_{t-1} = dc f
            da = dA[t, lo:hi]
            np.subtract(one, s, out=da)  # 1 - s for i, f, o;  1 - g for g
            np.multiply(da, s, out=da)  # s (1 - s)
            gd = da[:, 2 * Hd : 3 * Hd]
            np.multiply(g, g, out=gd)
            np.subtract(one, gd, out=gd)  # 1 - g^2
            da *= dS  # da = [di i(1-i), df f(1-f), dg (1-g^2), do o(1-o)]
            np.matmul(da, Wh.T, out=dh_)  # (b, 4Hd) x (4Hd, Hd) -> (b, Hd), reaches h_{t-1}

    _split_batch(rows, B)
    D = xt.shape[1]
    dA2 = dA.reshape(T * B, 4 * Hd)  # (T B, 4Hd)
    dWh = H[:T].reshape(T * B, Hd).T @ dA2  # (Hd, T B) x (T B, 4Hd) -> (Hd, 4Hd)
    dWx = xt.T @ dA2  # (D, T B) x (T B, 4Hd) -> (D, 4Hd)
    db = dA2.sum(axis=0)  # (4Hd,)
    dx = (dA2 @ Wx.T).reshape(T, B, D).transpose(1, 0, 2)  # (T B, 4Hd) x (4Hd, D) -> (B, T, D)
    return dx, dh, dc, dWx, dWh, db

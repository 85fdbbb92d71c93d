"""The LSTM of minilm.lstm over a whole sequence, fast: same signature, same numbers.

``lstm_forward`` / ``lstm_backward`` here are drop-in replacements for the
functions of the same name in minilm.lstm (tests/test_fast.py checks that
they agree).  The formulas are those of minilm.lstm.lstm_gates_forward (§5.2):

    a = x_t W_x + h_{t-1} W_h + b;   i, f, o = sigmoid(a_i, a_f, a_o);   g = tanh(a_g)
    c_t = f * c_{t-1} + i * g;       h_t = o * tanh(c_t)

Where a call's time goes (``python -m minilm bench --profile``): the loop over
t must run one step after another, and NumPy pays about a microsecond per
call inside it, on arrays small enough to sit in the cache; the products
x_t W_x (forward) and dW_x, dW_h, dx (backward) do not depend on the
recurrence and are twice the loop's arithmetic.  So:

* the products run on the second core BEHIND (backward) or AHEAD OF
  (forward) the loop, CHUNK steps at a time (minilm.fast.threads.Background):
  while this thread works on steps t0..t1, the worker multiplies the chunk
  the loop has just finished (or is about to need); the two threads share
  what is left at the end.  BLAS stays on one thread (minilm.fast.blas).
* with no second thread to hand them to (each process's half of a batch,
  below, or MINILM_THREADS=1) nothing can overlap the loop: each product is
  then made once over all T steps, after (or before) the loop, and fewer,
  larger products run faster than T / CHUNK products of CHUNK steps.
* where a C compiler is found (minilm.fast.fused), the rest of a step after
  its recurrent product is ONE call of a compiled loop of minilm/fast/loops.c
  (lstm_step_forward: the gates, c_t, tanh(c_t), h_t; lstm_step_backward:
  dA_t and dc_{t-1}), with the arrays' pointers made once per Workspace; so
  are the gates' derivatives (lstm_derivatives).  The NumPy lines of
  _steps_forward and _steps_backward below are what those loops compute
  (tests/test_fast_fused.py checks them against each other), and what runs
  without a compiler or with MINILM_FUSED=0;
* in NumPy, ONE call gives all four gates, in one of two forms (gate_form()):
  "tanh", sigmoid(a) = (1 + tanh(a / 2)) / 2, one tanh over all four blocks;
  or "exp", sigmoid(a) = 1 / (1 + exp(-a)) and tanh(a) = 2 sigmoid(2a) - 1,
  one exp over all four.  The factors (1/2 for a_i, a_f, a_o in the first
  form; -1 for them and -2 for a_g in the second) are folded into copies of
  W_x, W_h and b made once per call.  The tanh form makes two fewer passes;
  the exp form wins where NumPy's float32 tanh is much slower than its exp
  (on some AVX2 machines twice as slow).  gate_form() times both forms'
  calls once per process and takes the faster.
  Inside the step the gates are stored in the order i, f, o, g,
  so the three sigmoids are one block; the copies' columns are reordered to
  match and the gradients' columns put back in the plain order at the end.
* the gates' derivatives, i (1 - i), ..., 1 - g^2 and o (1 - tanh^2(c_t)), are
  computed for a whole chunk at a time (a few calls on large arrays) before
  the backward loop enters it, so the backward step only multiplies by them;
  this thread has time for that in the backward, where the worker's
  products take longer than the loop.
* where OpenBLAS's kernels have a small-matrix kernel (its AVX-512 ones:
  minilm.fast.blas.small_product), the recurrent products h_{t-1} W_h' and
  dA_t W_h^T are made a block of W's columns at a time
  (minilm.fast.blas.column_blocks): at the bench's size each block is small
  enough for that kernel, which runs it faster than the whole product; the
  blocks are contiguous copies.  With other kernels they are whole products.
  The backward's W_h^T and W_x^T copies are OpenBLAS transposes
  (minilm.fast.blas.transpose), not NumPy's strided copies.
* every array, and every per-step view of it, belongs to a ``Workspace``
  allocated once for a shape (T, B, D, Hd) and reused by every call: fresh
  arrays on every call cost thousands of page faults (``bench --profile``
  counts them).  A model keeps one Workspace per layer (minilm.fast.lstm_lm);
  ``lstm_forward`` without one makes a new one per call.
* one layer with a second process (``lstm_forward(..., peer)``, from 2 SPLIT_ROWS
  rows): the rows of a batch are independent, so the second half of the
  batch runs the whole layer in the peer's process over a shared Workspace,
  each process on one core, and only the outputs and the weights' gradients
  are put together at the end.  (Two threads could not share the loops: see
  the next point.)
* a stack of layers (``stack_forward_tm``, ``stack_backward_tm``) runs as a
  wavefront: layer l + 1 works on a chunk on the other core as soon as
  layer l has finished it, so two recurrences run at the same time, each
  side making its own layer's products.  The other core is a second
  process (minilm.fast.procs) that shares the layers' Workspaces: two loops
  over t on two threads of one process wait for each other at the
  interpreter lock at every NumPy call and gain little; two processes do
  not share a lock.  Without a second process, a thread.  In the backward a
  side that would wait runs weight-gradient products instead.

Shapes: B batch, T steps, D input size, Hd hidden size; time-major rows of
(T B, .) arrays are ordered t B + n.
"""

from __future__ import annotations

import os
import time
import weakref

import numpy as np

from minilm.fast import blas, fused
from minilm.fast.blas import column_blocks, on_one_thread, one_thread, transpose
from minilm.fast.threads import Background, Wavefront, n_threads, run_halves

CHUNK = 8  # time steps per product handed to the worker
WEIGHT_ROWS = 192  # rows (steps x batch) at least in one weight-gradient product: a few chunks' when B is small
STEP_BLOCKS = (0, 1, 3, 2)  # the step's gate blocks i, f, o, g are minilm.lstm's blocks 0, 1, 3, 2 (i, f, g, o)


GATE_FORMS = {"tanh": (0.5, 1.0), "exp": (-1.0, -2.0)}  # the factors of a_i, a_f, a_o and of a_g in W_x', W_h', b'
_gate_form = None


def gate_form() -> str:
    """"tanh" or "exp": how the step makes its gates (this module's docstring).  MINILM_LSTM_GATES sets it;
    else "tanh" where the compiled loops run (the form they make), and without them the faster of the two on
    this machine: each form's calls of one step (form_timings), timed once per process over a (32, 512) block.
    The two differ only in rounding (tests/test_fast.py checks both against minilm.lstm)."""
    global _gate_form
    if _gate_form is None:  # the compiled step (minilm.fast.fused) makes the tanh form
        _gate_form = os.environ.get("MINILM_LSTM_GATES") or ("tanh" if fused.ON else _faster_form())
        if _gate_form not in GATE_FORMS:
            raise ValueError(f"MINILM_LSTM_GATES={_gate_form!r}: expected one of {', '.join(GATE_FORMS)}")
    return _gate_form


def _faster_form() -> str:
    t_tanh, t_exp = form_timings()
    return "exp" if t_exp < t_tanh else "tanh"


def form_timings(rounds: int = 7) -> tuple[float, float]:
    """Seconds of each gate form's calls in one step (_steps_forward) over a (32, 512) block of gates:
    "tanh", a tanh then two passes over the sigmoids' three quarters; "exp", an exp, two passes over the
    whole and two over g's quarter.  The medians of ``rounds`` rounds of ten calls each, the two forms
    taking turns (a machine whose speed drifts slows both), after one untimed round."""
    B, Hd = 32, 128
    a = np.linspace(-4, 4, B * 4 * Hd, dtype=np.float32).reshape(B, 4 * Hd)  # (B, 4Hd) pre-activations
    s = np.empty_like(a)
    sig, g = s[:, : 3 * Hd], s[:, 3 * Hd :]  # i, f, o and g, as in the step
    half, one, two = (np.float32(k) for k in (0.5, 1, 2))

    def by_tanh():
        np.tanh(a, out=s)
        np.multiply(sig, half, out=sig)
        np.add(sig, half, out=sig)

    def by_exp():
        np.exp(a, out=s)
        np.add(s, one, out=s)
        np.reciprocal(s, out=s)
        np.multiply(g, two, out=g)
        np.subtract(g, one, out=g)

    def seconds(fn) -> float:
        t0 = time.perf_counter()
        for _ in range(10):
            fn()
        return (time.perf_counter() - t0) / 10

    seconds(by_tanh), seconds(by_exp)  # untimed: a process's first calls run slower
    pairs = [(seconds(by_tanh), seconds(by_exp)) for _ in range(rounds)]
    return float(np.median([t for t, _ in pairs])), float(np.median([e for _, e in pairs]))


def _step_order(W, out, scales=None) -> None:
    """out = W's gate blocks i, f, g, o (minilm.lstm's order, last axis) as i, f, o, g (the step's),
    i, f, o times scales[0] and g times scales[1] (GATE_FORMS; None: unscaled).  W (..., 4Hd), out the same shape."""
    Hd = W.shape[-1] // 4
    out[..., : 2 * Hd] = W[..., : 2 * Hd]  # i, f
    out[..., 2 * Hd : 3 * Hd] = W[..., 3 * Hd :]  # o
    out[..., 3 * Hd :] = W[..., 2 * Hd : 3 * Hd]  # g
    if scales is not None:
        sig, tan = (out.dtype.type(k) for k in scales)
        out[..., : 3 * Hd] *= sig
        if tan != 1:
            out[..., 3 * Hd :] *= tan


def _plain_order(W_step, out=None):
    """The inverse of _step_order (no halving): the gate blocks i, f, g, o, into ``out`` or a new array."""
    Hd = W_step.shape[-1] // 4
    return np.concatenate([W_step[..., : 2 * Hd], W_step[..., 3 * Hd :], W_step[..., 2 * Hd : 3 * Hd]], axis=-1,
                          out=out)


class Workspace:
    """The arrays of one LSTM layer's forward and backward for one shape, allocated once.

    A (T, B, 4Hd)   the gates of every step, i, f, o, g (step order)
    Z (T, B, 4Hd)   x_t W_x' + b' (forward), then dA, the pre-activations' gradient (backward)
    Dg (T, B, 4Hd)  the gates' derivatives: i (1 - i), f (1 - f), o (1 - o), 1 - g^2
    H, C (T+1, B, Hd)  h_{t-1} and c_{t-1} at index t: H[0] = h0, H[t+1] = h_t
    TC, DTC (T, B, Hd) tanh(c_t) and o (1 - tanh^2(c_t))
    dY (T, B, Hd)   the upstream gradient, time-major;  dxt (T B, D) the input's gradient
    dWh_parts (n_parts, Hd, 4Hd), dWx_parts (n_parts, D, 4Hd): one weight-gradient product per part, a part
                    being ``per_part`` chunks (at least WEIGHT_ROWS rows: small products of few rows run slower)
    gWx, gWh, gb    the weights' gradients, minilm.lstm's gate order;  Wx, Wh: the call's weights (a stack's
                    layers in minilm.fast.procs' second process read them here)
    left_parts (n_parts, V, 4Hd), left_of (V, T B): a backward given a ``left`` (the LSTM LM's one-hot
                    matrix, layer 0 only, never shared) makes left dA into left_parts, one part each

    With a ``peer`` (minilm.fast.procs.Peer) every array lives in one buffer shared with the peer's
    process, which keeps a Workspace of its own over the same memory (same layout, same views).
    """

    def __init__(self):
        self.shape = None
        self.left_parts = self.left_of = None  # _prepare_backward's, for input_gradient_product

    def ready(self, T: int, B: int, D: int, Hd: int, dtype, peer=None, with_input: bool = False) -> Workspace:
        shape = (T, B, D, Hd, np.dtype(dtype), peer and peer.generation, with_input)
        if shape == self.shape:
            return self
        if self.shape is not None and self.shape[5] == "attached":  # the peer's side: the shared arrays only
            if shape[:5] != self.shape[:5]:
                raise ValueError(f"a shared LSTM Workspace of shape {self.shape[:5]} asked for {shape[:5]}")
            return self
        layout = (CHUNK, WEIGHT_ROWS, blas.small_product(), with_input, gate_form())  # what else decides them
        if peer is None:
            self._allocate(T, B, D, Hd, dtype, lambda *s: np.empty(s, dtype), layout)
        else:
            sizes = []  # a first pass only measures the arrays
            self._allocate(T, B, D, Hd, dtype, lambda *s: sizes.append(_aligned(np.empty(s, dtype).nbytes)) or
                           np.empty(s, dtype), layout)
            if getattr(self, "peer", None) is peer:  # a new shape: the peer's old Workspace goes
                peer.forget(self.key)
            self.key, self.buffer = peer.share(sum(sizes))
            weakref.finalize(self, peer.release, self.key)  # the peer's Workspace goes with this one
            self.peer = peer
            self._allocate(T, B, D, Hd, dtype, _carve(self.buffer, dtype), layout)
            peer.mirror(self.key, (T, B, D, Hd, np.dtype(dtype).str), layout)
        self.shape = shape
        return self

    def attach(self, buffer, T: int, B: int, D: int, Hd: int, dtype, layout) -> Workspace:
        """The peer's side of ready(..., peer): the same arrays over the shared ``buffer``."""
        self.buffer = buffer
        self._allocate(T, B, D, Hd, dtype, _carve(buffer, dtype), layout)
        self.shape = (T, B, D, Hd, np.dtype(dtype), "attached", layout[3])
        return self

    def _allocate(self, T: int, B: int, D: int, Hd: int, dtype, e, layout) -> None:
        chunk, weight_rows, small, with_input, self.form = layout
        self.chunks = [(t0, min(t0 + chunk, T)) for t0 in range(0, T, chunk)]
        self.A, self.Z, self.Dg = e(T, B, 4 * Hd), e(T, B, 4 * Hd), e(T, B, 4 * Hd)
        self.H, self.C, self.TC, self.DTC, self.dY = e(T + 1, B, Hd), e(T + 1, B, Hd), e(T, B, Hd), e(T, B, Hd), \
            e(T, B, Hd)
        self.dxt = e(T * B, D)
        self.per_part = max(1, -(-weight_rows // (B * chunk)))  # chunks per weight-gradient part
        n_parts = -(-len(self.chunks) // self.per_part)
        self.dWh_parts, self.dWx_parts = e(n_parts, Hd, 4 * Hd), e(n_parts, D, 4 * Hd)
        self.tmp, self.dh, self.dc, self.dS = e(B, Hd), e(B, Hd), e(B, Hd), e(B, 4 * Hd)
        self.ones = np.ones(T * B, dtype)
        self.Wxp, self.Whp, self.bp = e(D, 4 * Hd), e(Hd, 4 * Hd), e(4 * Hd)  # W_x', W_h', b' (step order, scaled)
        self.WxT = e(4 * Hd, D)  # W_x^T (step order) for the backward
        # the recurrent products a block of columns at a time (minilm.fast.blas.column_blocks)
        self.fwd_cols, self.bwd_cols = column_blocks(B, Hd, 4 * Hd, small), column_blocks(B, 4 * Hd, Hd, small)
        self.Whp_blocks = [e(Hd, c1 - c0) for c0, c1 in self.fwd_cols]  # W_h' columns c0..c1-1, contiguous
        self.WhT_blocks = [e(4 * Hd, c1 - c0) for c0, c1 in self.bwd_cols]  # W_h^T columns c0..c1-1
        self.dh_blocks = [self.dh[:, c0:c1] for c0, c1 in self.bwd_cols]
        g = lambda a: (a[:, :Hd], a[:, Hd : 2 * Hd], a[:, 2 * Hd : 3 * Hd], a[:, 3 * Hd :])  # noqa: E731
        A, H, C = self.A, self.H, self.C
        # per step t: the views the step's lines use, made once here instead of T times per call
        # (the last of each: the pointers minilm/fast/loops.c's step takes, in its order)
        self.forward_views = [(A[t], [A[t][:, c0:c1] for c0, c1 in self.fwd_cols], A[t][:, : 3 * Hd], *g(A[t]),
                               H[t], H[t + 1], C[t], C[t + 1], self.TC[t], self.Z[t],
                               fused.pointers(A[t], self.Z[t], C[t], C[t + 1], self.TC[t], H[t + 1]))
                              for t in range(T)]
        self.backward_views = [(self.dY[t], *g(A[t])[:2], g(A[t])[3], C[t], self.TC[t], self.DTC[t], self.Dg[t],
                                self.Z[t], fused.pointers(self.dh, self.dc, self.dY[t], A[t], C[t], self.TC[t],
                                                          self.DTC[t], self.Dg[t], self.Z[t]))
                               for t in range(T)]  # o is in DTC
        self.dS_blocks = g(self.dS)  # di, df, do, dg
        self.gWx, self.gWh, self.gb, self.Wx, self.Wh = e(D, 4 * Hd), e(Hd, 4 * Hd), e(4 * Hd), e(D, 4 * Hd), \
            e(Hd, 4 * Hd)
        self.b, self.X = e(4 * Hd), (e(T * B, D) if with_input else None)  # a half batch's b and input, time-major


def _aligned(nbytes: int) -> int:
    return -(-nbytes // 64) * 64  # every shared array starts on a cache line


def _carve(buffer, dtype):
    """An allocator e(*shape) that hands out consecutive, aligned arrays of ``buffer``."""
    offset = [0]

    def e(*shape):
        a = np.ndarray(shape, dtype, buffer=buffer, offset=offset[0])
        offset[0] += _aligned(a.nbytes)
        return a

    return e


# ---- forward ----------------------------------------------------------------------------------


def _steps_forward(views, Whp_blocks, tmp, form: str) -> None:
    """Steps t0 .. t1-1 (minilm.lstm.lstm_step_forward, per step); Whp_blocks: W_h' (Hd, 4Hd), step order,
    scaled for the gate ``form`` (GATE_FORMS), a block of columns each."""
    half, one, two = (tmp.dtype.type(k) for k in (0.5, 1, 2))
    by_exp = form == "exp"
    B, Hd = tmp.shape
    loop = fused.step_function("lstm_step_forward", tmp.dtype) if fused.ON and not by_exp else None
    with np.errstate(over="ignore"):  # "exp": exp(-a) = inf gives sigmoid(a) = 0, which is right
        for s, s_blocks, sig, i, f, o, g, h_prev, h, c_prev, c, tc, z, ptrs in views:
            for W_block, s_block in zip(Whp_blocks, s_blocks, strict=True):
                np.matmul(h_prev, W_block, out=s_block)  # (B, Hd) x (Hd, cols) -> (B, cols): h_{t-1} W_h'
            if loop is not None:  # the lines below in one compiled loop (minilm/fast/loops.c, minilm.fast.fused)
                loop(B, Hd, *ptrs)
                continue
            s += z  # a': "tanh" a / 2 for i, f, o and a for g;  "exp" -a for i, f, o and -2a for g
            if by_exp:
                np.exp(s, out=s)
                s += one
                np.reciprocal(s, out=s)  # i, f, o = sigmoid(a) = 1 / (1 + exp(-a));  sigmoid(2 a_g)
                g *= two
                g -= one  # g = tanh(a_g) = 2 sigmoid(2 a_g) - 1
            else:
                np.tanh(s, out=s)  # tanh(a/2) for i, f, o;  g = tanh(a_g)
                sig *= half
                sig += half  # i, f, o = sigmoid(a) = (1 + tanh(a/2)) / 2
            np.multiply(f, c_prev, out=c)  # f * c_{t-1}
            np.multiply(i, g, out=tmp)  # i * g
            c += tmp  # c_t
            np.tanh(c, out=tc)
            np.multiply(o, tc, out=h)  # h_t = o * tanh(c_t)


def _inputs(ws, xt, Wxp, bp, t0: int, t1: int) -> None:
    """Z[t0:t1] = x_t W_x' + b' for steps t0..t1-1: (rows, D) x (D, 4Hd) -> (rows, 4Hd), one product."""
    B = ws.H.shape[1]
    z = ws.Z[t0:t1].reshape((t1 - t0) * B, -1)  # (rows, 4Hd) view, rows t B + n
    np.matmul(xt[t0 * B : t1 * B], Wxp, out=z)
    z += bp


def _derivatives(ws, t0: int, t1: int) -> None:
    """Dg = gate'(a) and DTC = o (1 - tanh^2(c_t)) for steps t0..t1-1, from the stored gates (for the backward)."""
    Hd = ws.H.shape[2]
    A, Dg, tc, dtc = ws.A[t0:t1], ws.Dg[t0:t1], ws.TC[t0:t1], ws.DTC[t0:t1]
    if fused.ON:  # the lines below in one compiled loop (minilm/fast/loops.c)
        rows = A.shape[0] * A.shape[1]
        fused.lstm_derivatives(A.reshape(rows, -1), tc.reshape(rows, -1), Dg.reshape(rows, -1), dtc.reshape(rows, -1))
        return
    one = A.dtype.type(1)
    np.multiply(A, A, out=Dg)  # i^2, f^2, o^2, g^2
    np.subtract(A[..., : 3 * Hd], Dg[..., : 3 * Hd], out=Dg[..., : 3 * Hd])  # s - s^2 = s (1 - s)
    np.subtract(one, Dg[..., 3 * Hd :], out=Dg[..., 3 * Hd :])  # 1 - g^2
    np.multiply(tc, tc, out=dtc)
    np.subtract(one, dtc, out=dtc)  # 1 - tanh^2(c_t)
    dtc *= A[..., 2 * Hd : 3 * Hd]  # o (1 - tanh^2(c_t)): dc_t gets dh_t times this


def _transposes(ws, Wx, Wh) -> None:
    """ws.WxT = W_x^T (4Hd, D) and ws.WhT_blocks = W_h^T (4Hd, Hd) by blocks of columns, step order,
    contiguous: the backward's right-hand sides, copied one gate block at a time (minilm.fast.blas.transpose)."""
    Hd = Wh.shape[0]
    for k, plain in enumerate(STEP_BLOCKS):
        rows, cols = slice(k * Hd, (k + 1) * Hd), slice(plain * Hd, (plain + 1) * Hd)
        transpose(Wx[:, cols], ws.WxT[rows])  # (D, Hd) -> (Hd, D)
        for (j0, j1), block in zip(ws.bwd_cols, ws.WhT_blocks, strict=True):
            transpose(Wh[j0:j1, cols], block[rows])  # (cols, Hd) -> (Hd, cols): W_h^T's columns j0..j1-1


def _prepare_forward(ws, h0, c0, Wx, Wh, b) -> None:
    """The call's weight copies in step order (C order even for a transposed W_h, which would slow every
    step), scaled for the Workspace's gate form (GATE_FORMS); H[0] = h0 and C[0] = c0."""
    scales = GATE_FORMS[ws.form]
    _step_order(Wx, ws.Wxp, scales)  # (D, 4Hd)
    _step_order(Wh, ws.Whp, scales)  # (Hd, 4Hd)
    _step_order(b, ws.bp, scales)  # (4Hd,)
    for (j0, j1), block in zip(ws.fwd_cols, ws.Whp_blocks, strict=True):
        np.copyto(block, ws.Whp[:, j0:j1])
    ws.H[0], ws.C[0] = h0, c0


def _alone(inline: bool) -> bool:
    """True when this call has no second thread to hand products to: ``inline`` (each of two processes
    has half of the batch) or one core (MINILM_THREADS=1)."""
    return inline or n_threads() == 1


@on_one_thread
def lstm_forward_tm(xt, T, h0, c0, Wx, Wh, b, ws: Workspace | None = None, inline: bool = False):
    """lstm_forward on time-major input: xt (T B, D), row t B + n = x[n, t] -> H (T+1, B, Hd), cache.

    H[0] = h0 and H[t+1] = h_t; a stack of layers (stack_forward_tm) feeds H[1:] to the next layer as is.
    H and the cache live in ``ws``: the next call with the same Workspace overwrites them.
    ``inline``: everything on this thread (each of two processes has half of the batch, see lstm_forward).
    """
    B, Hd = h0.shape
    ws = (ws or Workspace()).ready(T, B, xt.shape[1], Hd, xt.dtype)
    _prepare_forward(ws, h0, c0, Wx, Wh, b)
    if _alone(inline):  # one core: nothing to overlap, and one product over all T steps beats T / CHUNK of them
        with one_thread():
            _inputs(ws, xt, ws.Wxp, ws.bp, 0, T)
            _steps_forward(ws.forward_views, ws.Whp_blocks, ws.tmp, ws.form)
            _transposes(ws, Wx, Wh)
        return ws.H, (ws, xt, Wx, Wh)
    with one_thread(), Background(inline) as bg:
        ahead = [bg.submit(_inputs, ws, xt, ws.Wxp, ws.bp, t0, t1) for t0, t1 in ws.chunks]
        bg.submit(_transposes, ws, Wx, Wh)  # for the backward, while the worker has time
        for (t0, t1), job in zip(ws.chunks, ahead, strict=True):
            bg.wait(job)  # this chunk's x_t W_x' + b'
            _steps_forward(ws.forward_views[t0:t1], ws.Whp_blocks, ws.tmp, ws.form)
    return ws.H, (ws, xt, Wx, Wh)


@on_one_thread
def lstm_forward(x, h0, c0, Wx, Wh, b, ws: Workspace | None = None, peer=None):
    """minilm.lstm.lstm_forward: x (B, T, D), h0, c0 (B, Hd) -> hs (B, T, Hd), (h_T, c_T), cache.

    With a ``peer`` (minilm.fast.procs.peer()) on two cores and a batch of at least 2 SPLIT_ROWS rows,
    the second half of the batch runs in the peer's process (_split_forward); else on two threads here.
    """
    B, T, D = x.shape
    if peer is not None and n_threads() == 2 and B >= 2 * SPLIT_ROWS:
        return _split_forward(peer, x, h0, c0, Wx, Wh, b, ws or Workspace())
    xt = x.transpose(1, 0, 2).reshape(T * B, D)  # (T B, D) copy, time-major
    H, cache = lstm_forward_tm(xt, T, h0, c0, Wx, Wh, b, ws)
    hs = H[1:].transpose(1, 0, 2)  # (B, T, Hd) view
    return hs, (H[T].copy(), cache[0].C[T].copy()), cache


# ---- backward ---------------------------------------------------------------------------------


def _steps_backward(views, WhT_blocks, dS, dS_blocks, tmp, dh, dh_blocks, dc) -> None:
    """Steps t1-1 down to t0 (minilm.lstm.lstm_step_backward, per step), ``views`` in that order.

    dh, dc (B, Hd) carry the state's gradients; each step writes dA_t = dgates * gate'(a) into its view
    of Z, and dh_{t-1} = dA_t W_h^T (WhT_blocks: W_h^T (4Hd, Hd), step order, a block of columns each,
    into dh_blocks, the same columns of dh).
    """
    di, df, do, dg = dS_blocks
    B, Hd = dh.shape
    loop = fused.step_function("lstm_step_backward", dh.dtype) if fused.ON else None
    for dy, i, f, g, c_prev, tc, o_dtc, dgate, da, ptrs in views:
        if loop is not None:  # the lines below in one compiled loop (minilm/fast/loops.c, minilm.fast.fused)
            loop(B, Hd, *ptrs)
        else:
            dh += dy  # h_t feeds the output at t and step t+1
            np.multiply(dh, tc, out=do)  # do = dh tanh(c_t)
            np.multiply(dh, o_dtc, out=tmp)  # dh o (1 - tanh^2(c_t))
            dc += tmp  # dc_t
            np.multiply(dc, g, out=di)  # di = dc g
            np.multiply(dc, c_prev, out=df)  # df = dc c_{t-1}
            np.multiply(dc, i, out=dg)  # dg = dc i
            dc *= f  # dc_{t-1} = dc f
            np.multiply(dS, dgate, out=da)  # dA_t: i (1 - i) di, f (1 - f) df, o (1 - o) do, (1 - g^2) dg
        for W_block, dh_block in zip(WhT_blocks, dh_blocks, strict=True):
            np.matmul(da, W_block, out=dh_block)  # (B, 4Hd) x (4Hd, cols) -> (B, cols): dh_{t-1}


def _weight_products(ws, xt, k: int, t0: int, t1: int) -> None:
    """Part k's shares (steps t0..t1-1) of dW_h = sum_t h_{t-1}^T dA_t and dW_x = sum_t x_t^T dA_t (step order)."""
    B = ws.H.shape[1]
    dA = ws.Z[t0:t1].reshape((t1 - t0) * B, -1)  # (rows, 4Hd)
    np.matmul(ws.H[t0:t1].reshape((t1 - t0) * B, -1).T, dA, out=ws.dWh_parts[k])  # (Hd, rows) x (rows, 4Hd)
    np.matmul(xt[t0 * B : t1 * B].T, dA, out=ws.dWx_parts[k])  # (D, rows) x (rows, 4Hd) -> (D, 4Hd)


def _left_products(ws, left, k: int, t0: int, t1: int) -> None:
    """Part k's share (steps t0..t1-1) of left dA: (V, rows) x (rows, 4Hd) -> (V, 4Hd) (input_gradient_product)."""
    B = ws.H.shape[1]
    np.matmul(left[:, t0 * B : t1 * B], ws.Z[t0:t1].reshape((t1 - t0) * B, -1), out=ws.left_parts[k])


def _input_products(ws, WxT, t0: int, t1: int) -> None:
    """dx_t = dA_t W_x^T for steps t0..t1-1: (rows, 4Hd) x (4Hd, D) -> (rows, D)."""
    B = ws.H.shape[1]
    np.matmul(ws.Z[t0:t1].reshape((t1 - t0) * B, -1), WxT, out=ws.dxt[t0 * B : t1 * B])


def _prepare_backward(ws, dstate, left=None) -> None:
    """The carried state's gradients (dh, dc) before the last step; with ``left`` (V, T B), room for the
    parts of left dA (_left_products)."""
    ws.left_of = None
    if left is not None:
        n, V = len(ws.dWh_parts), left.shape[0]
        if ws.left_parts is None or ws.left_parts.shape != (n, V, ws.Z.shape[2]) or ws.left_parts.dtype != ws.Z.dtype:
            ws.left_parts = np.empty((n, V, ws.Z.shape[2]), ws.Z.dtype)  # here only: layer 0 is never the peer's
        ws.left_of = left
    if dstate is None:
        ws.dh.fill(0), ws.dc.fill(0)
    else:
        np.copyto(ws.dh, dstate[0]), np.copyto(ws.dc, dstate[1])


def _backward_chunk(ws, k: int) -> None:
    """The backward loop over chunk k's steps (_backward_steps)."""
    _backward_steps(ws, *ws.chunks[k])


def _backward_steps(ws, t0: int, t1: int) -> None:
    """The backward loop over steps t1-1 down to t0 (ws.dY holds their upstream gradient), after their
    gates' derivatives."""
    _derivatives(ws, t0, t1)
    _steps_backward(ws.backward_views[t1 - 1 : t0 - 1 if t0 else None : -1], ws.WhT_blocks, ws.dS, ws.dS_blocks,
                    ws.tmp, ws.dh, ws.dh_blocks, ws.dc)


def _part_done(ws, k: int):
    """(part, t0, t1) when chunk k is the last of its part the backward reaches (the backward goes from the
    last chunk down), or None: the part's weight products can then be made."""
    if k % ws.per_part:
        return None
    last = min(k + ws.per_part, len(ws.chunks)) - 1
    return k // ws.per_part, ws.chunks[k][0], ws.chunks[last][1]


def _gradients(ws, parts: int | None = None) -> None:
    """ws.gWx, ws.gWh, ws.gb once every chunk's products are done, in minilm.lstm's gate order: the sums of
    the first ``parts`` weight-gradient parts (all of them by default)."""
    T, B, _, Hd = ws.shape[:4]
    n = len(ws.dWh_parts) if parts is None else parts
    _plain_order((ws.ones[:n] @ ws.dWh_parts[:n].reshape(n, -1)).reshape(Hd, 4 * Hd), ws.gWh)  # (Hd, 4Hd): sum of parts
    _plain_order((ws.ones[:n] @ ws.dWx_parts[:n].reshape(n, -1)).reshape(-1, 4 * Hd), ws.gWx)  # (D, 4Hd)
    _plain_order(ws.ones @ ws.Z.reshape(T * B, 4 * Hd), ws.gb)  # (4Hd,): dA summed over rows


def _results(ws, input_grad: bool = True):
    """(dxt, dh0, dc0, dWx, dWh, db) of a finished backward: dxt in the Workspace (or None), the rest copies."""
    return (ws.dxt if input_grad else None, ws.dh.copy(), ws.dc.copy(), ws.gWx.copy(), ws.gWh.copy(), ws.gb.copy())


@on_one_thread
def lstm_backward_tm(dy, cache, dstate=None, input_grad: bool = True, inline: bool = False, left=None):
    """lstm_backward on time-major gradients: dy (T, B, Hd) -> dxt (T B, D), dh0, dc0, dWx, dWh, db.

    dxt lives in the forward's Workspace (the next call overwrites it); the rest are new arrays.
    ``input_grad=False`` leaves dx out (dxt is None): input_gradient_product gives a product with it,
    and ``left`` (V, T B) has the backward make left dA part by part behind the loop, for that product.
    """
    ws, xt, _, _ = cache
    np.copyto(ws.dY, dy)  # (T, B, Hd), time-major and contiguous
    if _alone(inline):  # one core: the whole loop, then each product over all T steps at once
        _prepare_backward(ws, dstate)  # a ``left`` product is made whole by input_gradient_product
        T = ws.shape[0]
        with one_thread():
            _backward_steps(ws, 0, T)
            _weight_products(ws, xt, 0, 0, T)  # part 0 is the whole sum
            if input_grad:
                _input_products(ws, ws.WxT, 0, T)
            _gradients(ws, parts=1)
        return _results(ws, input_grad)
    _prepare_backward(ws, dstate, None if input_grad else left)
    with one_thread(), Background(inline) as bg:
        for k in reversed(range(len(ws.chunks))):
            _backward_chunk(ws, k)
            t0, t1 = ws.chunks[k]
            part = _part_done(ws, k)
            if part:
                bg.submit(_weight_products, ws, xt, *part)  # behind the loop, on the worker
                if ws.left_of is not None:
                    bg.submit(_left_products, ws, ws.left_of, *part)
            if input_grad:
                bg.submit(_input_products, ws, ws.WxT, t0, t1)
    _gradients(ws)  # after the worker's last products (leaving Background waits for them)
    return _results(ws, input_grad)


@on_one_thread
def lstm_backward(dhs, cache, dstate=None):
    """minilm.lstm.lstm_backward: dhs (B, T, Hd) -> dx (B, T, D), dh0, dc0, dWx, dWh, db."""
    if isinstance(cache, _Split):
        return _split_backward(dhs, cache, dstate)
    T, B = cache[0].shape[:2]
    dxt, dh, dc, dWx, dWh, db = lstm_backward_tm(dhs.transpose(1, 0, 2), cache, dstate)
    dx = dxt.reshape(T, B, -1).transpose(1, 0, 2)  # (B, T, D) view
    return dx, dh, dc, dWx, dWh, db


# ---- one layer, the batch in two halves: two processes -------------------------------------------

SPLIT_ROWS = 16  # lstm_forward with a peer splits a batch of at least twice this many rows


class _Split:
    """The cache of a forward split over two processes: this half's Workspace and cache, the peer's
    Workspace (shared), the peer, and h, the rows here (0..h-1; the peer has h..B-1)."""

    def __init__(self, mine, theirs, cache, peer, h):
        self.mine, self.theirs, self.cache, self.peer, self.h = mine, theirs, cache, peer, h


def _split_forward(peer, x, h0, c0, Wx, Wh, b, ws):
    """lstm_forward with rows h.. of the batch in the peer's process: the rows of a batch are independent,
    so each process runs the whole layer on its half (its loops and its products, on one core each),
    and nothing passes between them until the end.  Two threads of one process could not do this:
    their loops would wait for each other at the interpreter lock (minilm.fast.procs)."""
    B, T, D = x.shape
    Hd, h = h0.shape[1], B // 2
    if not hasattr(ws, "halves"):
        ws.halves = (Workspace(), Workspace())
    mine, theirs = ws.halves
    theirs.ready(T, B - h, D, Hd, x.dtype, peer, with_input=True)
    np.copyto(theirs.X.reshape(T, B - h, D), x[h:].transpose(1, 0, 2))  # the peer's input, time-major
    for dst, src in ((theirs.Wx, Wx), (theirs.Wh, Wh), (theirs.b, b), (theirs.H[0], h0[h:]), (theirs.C[0], c0[h:])):
        np.copyto(dst, src)
    xt = x[:h].transpose(1, 0, 2).reshape(T * h, D)  # (T h, D) copy, time-major
    out = []
    peer.run("half_forward", [theirs.key], [], lambda front: out.append(
        lstm_forward_tm(xt, T, h0[:h], c0[:h], Wx, Wh, b, mine, inline=True)))
    H, cache = out[0]
    hs = np.empty((B, T, Hd), x.dtype)
    hs[:h], hs[h:] = H[1:].transpose(1, 0, 2), theirs.H[1:].transpose(1, 0, 2)
    final = (np.concatenate([H[T], theirs.H[T]]), np.concatenate([mine.C[T], theirs.C[T]]))
    return hs, final, _Split(mine, theirs, cache, peer, h)


def _split_backward(dhs, split, dstate):
    """lstm_backward of _split_forward: each process its half; the weights' gradients are the sum."""
    theirs, peer, h = split.theirs, split.peer, split.h
    if not peer.alive():
        raise RuntimeError("the LSTM's second process has restarted since this forward: run the forward again")
    B, T, Hd = dhs.shape
    np.copyto(theirs.dY, dhs[h:].transpose(1, 0, 2))
    if dstate is not None:
        np.copyto(theirs.dh, dstate[0][h:]), np.copyto(theirs.dc, dstate[1][h:])
    out = []
    peer.run("half_backward", [theirs.key], [], lambda front: out.append(lstm_backward_tm(
        dhs[:h].transpose(1, 0, 2), split.cache, None if dstate is None else (dstate[0][:h], dstate[1][:h]),
        inline=True)), dstate is not None)
    dxt, dh, dc, dWx, dWh, db = out[0]
    D = dxt.shape[1]
    dx = np.empty((B, T, D), dxt.dtype)
    dx[:h], dx[h:] = dxt.reshape(T, h, D).transpose(1, 0, 2), theirs.dxt.reshape(T, B - h, D).transpose(1, 0, 2)
    dWx += theirs.gWx
    dWh += theirs.gWh
    db += theirs.gb
    return dx, np.concatenate([dh, theirs.dh]), np.concatenate([dc, theirs.dc]), dWx, dWh, db


# ---- a stack of layers: the wavefront ---------------------------------------------------------


def forward_layers(ls, wss, inputs, front) -> None:
    """Layers ``ls`` of a stack's forward, each chunk after the layer below has marked it in ``front``
    (a minilm.fast.threads.Wavefront, or minilm.fast.procs' front between two processes).

    wss[l] is prepared (_prepare_forward, ws.Wx and ws.Wh hold the weights); inputs[l] (T B, D_l) is
    layer l's input: the stack's for layer 0, the layer below's H[1:] for the others.
    """
    for l in ls:
        ws = wss[l]
        for k, (t0, t1) in enumerate(ws.chunks):
            if l > 0:
                front.wait(l - 1, k)  # the layer below has finished steps t0..t1-1
            _inputs(ws, inputs[l], ws.Wxp, ws.bp, t0, t1)
            _steps_forward(ws.forward_views[t0:t1], ws.Whp_blocks, ws.tmp, ws.form)
            front.mark(l, k)
        _transposes(ws, ws.Wx, ws.Wh)


def backward_layers(ls, wss, inputs, front, input_grad: bool = True) -> None:
    """Layers ``ls`` (top first) of a stack's backward: layer l's upstream gradient is layer l + 1's dxt,
    chunk by chunk as ``front`` marks it; the top layer's is in its dY already.  The weight-gradient
    products go to ``front.defer`` (whichever thread has time); gradients() sums them.  So do layer 0's
    parts of left dA when stack_backward_tm was given a ``left`` (_prepare_backward)."""
    top = len(wss) - 1
    for l in ls:
        ws, xt = wss[l], inputs[l]
        B = ws.H.shape[1]
        for k in reversed(range(len(ws.chunks))):
            t0, t1 = ws.chunks[k]
            if l < top:
                front.wait(l + 1, k)  # the layer above has its dx for steps t0..t1-1
                np.copyto(ws.dY[t0:t1].reshape((t1 - t0) * B, -1), wss[l + 1].dxt[t0 * B : t1 * B])
            _backward_chunk(ws, k)
            if l > 0 or input_grad:
                _input_products(ws, ws.WxT, t0, t1)
            front.mark(l, k)
            part = _part_done(ws, k)
            if part:
                front.defer(_weight_products, ws, xt, *part)
                if l == 0 and ws.left_of is not None:
                    front.defer(_left_products, ws, ws.left_of, *part)


def _layer_inputs(xt, wss) -> list:
    """Each layer's input, time-major (T B, D_l): the stack's, then each layer's H[1:] as the next one's."""
    T, B, _, Hd = wss[0].shape[:4]
    return [xt] + [ws.H[1:].reshape(T * B, Hd) for ws in wss[:-1]]


@on_one_thread
def stack_forward_tm(xt, T, states, weights, wss, peer=None):
    """Layers 0..L-1 (minilm.lstm.lstm_stack_forward), time-major: xt (T B, D) -> [(H, cache)] per layer.

    states[l] = (h0, c0), weights[l] = (Wx, Wh, b), wss[l] the layer's Workspace.  Layer l + 1 reads
    layer l's H[1:] chunk by chunk, so the even layers run here and the odd ones on the other core, each
    CHUNK steps behind the layer below: the two recurrences, which cannot be split, run at the same time.
    The other core is ``peer``, a second process (minilm.fast.procs.peer(): threads of one process take
    turns at the interpreter lock for every NumPy call of their loops), or a thread without one
    (minilm.fast.threads.Wavefront).  A single layer is lstm_forward_tm.
    """
    if len(weights) == 1:
        return [lstm_forward_tm(xt, T, *states[0], *weights[0], wss[0])]
    B, Hd = states[0][0].shape
    peer = peer if n_threads() == 2 else None
    sizes = [xt.shape[1]] + [Hd] * (len(wss) - 1)
    for ws, D in zip(wss, sizes, strict=True):  # every Workspace ready before either side reads another's arrays
        ws.ready(T, B, D, Hd, xt.dtype, peer)
    inputs = _layer_inputs(xt, wss)
    for ws, (h0, c0), (Wx, Wh, b) in zip(wss, states, weights, strict=True):
        _prepare_forward(ws, h0, c0, Wx, Wh, b)
        np.copyto(ws.Wx, Wx), np.copyto(ws.Wh, Wh)
    layers = list(range(len(wss)))
    with one_thread():
        if peer is not None:
            peer.run("forward", [ws.key for ws in wss], layers[1::2], lambda front: forward_layers(
                layers[0::2], wss, inputs, front))
        else:
            Wavefront(len(wss), len(wss[0].chunks)).run(lambda ls, front: forward_layers(ls, wss, inputs, front),
                                                        layers)
    return [(ws.H, (ws, inputs[l], ws.Wx, ws.Wh)) for l, ws in enumerate(wss)]


@on_one_thread
def stack_backward_tm(dy, caches, input_grad: bool = True, left=None):
    """The backward of stack_forward_tm: dy (T, B, Hd) of the top layer -> [(dxt, dh0, dc0, dWx, dWh, db)] per layer.

    Layer l - 1's upstream gradient is layer l's dxt, so the layers run one chunk behind each other
    from the top down, on the two cores as in the forward.  ``input_grad=False``: no dx for layer 0 (its
    dxt is None; see input_gradient_product, whose left dA layer 0 then makes part by part with a ``left``).
    """
    if len(caches) == 1:
        return [lstm_backward_tm(dy, caches[0], input_grad=input_grad, left=left)]
    wss = [c[0] for c in caches]
    for l, ws in enumerate(wss):
        _prepare_backward(ws, None, left if l == 0 and not input_grad else None)
    np.copyto(wss[-1].dY, dy)
    inputs = [c[1] for c in caches]
    layers = list(range(len(wss) - 1, -1, -1))  # top first
    generation = wss[0].shape[5]
    with one_thread():
        if generation is not None:  # the forward ran with the second process
            peer = wss[0].peer
            if not peer.alive():
                raise RuntimeError("the LSTM's second process has restarted since this forward: run the forward again")
            odd, even = [l for l in layers if l % 2], [l for l in layers if not l % 2]  # layer 0's input is here
            peer.run("backward", [ws.key for ws in wss], odd, lambda front: (
                backward_layers(even, wss, inputs, front, input_grad), front.run_deferred(),
                [_gradients(wss[l]) for l in even]), input_grad)
        else:
            Wavefront(len(wss), len(wss[0].chunks)).run(
                lambda ls, front: backward_layers(ls, wss, inputs, front, input_grad), layers)
            run_halves(lambda lo, hi: [_gradients(ws) for ws in wss[lo:hi]], len(wss))  # half on each thread
    return [_results(ws, l > 0 or input_grad) for l, ws in enumerate(wss)]


def input_gradient_product(ws, left):
    """left dx for the input's gradient dx = dA W_x^T of the backward that ran in ``ws``, as (left dA) W_x^T:
    left (V, T B) -> (V, D), without making dx (T B, D).

    For the LSTM LM, left is the one-hot matrix of the input ids and the product is the embeddings'
    gradient: with a small vocabulary V it costs V (T B) 4Hd + V 4Hd D multiply-adds instead of dx's
    (T B) 4Hd D + V (T B) D (minilm.fast.lstm_lm.one_hot_first says when).  The columns of dA and the
    rows of W_x^T are both in the step's gate order, so the order cancels.  A backward given this ``left``
    has made left dA already, a part of the steps at a time (_left_products): they are summed here.
    """
    T, B = ws.shape[:2]
    if ws.left_of is left:  # parts (n, V, 4Hd), made behind the backward's loop
        n = len(ws.left_parts)
        left_dA = (ws.ones[:n] @ ws.left_parts.reshape(n, -1)).reshape(left.shape[0], -1)  # (V, 4Hd)
    else:
        left_dA = left @ ws.Z.reshape(T * B, -1)  # (V, T B) x (T B, 4Hd) -> (V, 4Hd)
    return left_dA @ ws.WxT  # (V, 4Hd) x (4Hd, D) -> (V, D)

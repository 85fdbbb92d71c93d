"""Gradient-check cases for the LSTM (§5.2): gates, step, sequence, stack, and the LSTM language model.

The LSTM functions return two outputs (the hidden states and the cell or final
state); ``check_pair`` wants one.  The ``flat_*`` wrappers concatenate them into
one (B, ...) array and split the upstream gradient back, so a single check
covers the gradients reaching h and c, and those of the initial state.
Inputs are chosen as explained in minilm/cases/ngram.py (resolvable entries).
"""

from __future__ import annotations

import numpy as np

from minilm import lstm, lstm_lm
from minilm.cases import case
from minilm.cases.ngram import first_resolvable
from minilm.gradcheck import check_model, check_pair

G = "lstm"


def flat_gates(a, c_prev):
    h, c, cache = lstm.lstm_gates_forward(a, c_prev)
    return np.concatenate([h, c], axis=1), cache  # (B, 2Hd)


def flat_gates_backward(dout, cache):
    Hd = dout.shape[1] // 2
    return lstm.lstm_gates_backward(dout[:, :Hd], dout[:, Hd:], cache)


def flat_step(x, h_prev, c_prev, Wx, Wh, b):
    h, c, cache = lstm.lstm_step_forward(x, h_prev, c_prev, Wx, Wh, b)
    return np.concatenate([h, c], axis=1), cache  # (B, 2Hd)


def flat_step_backward(dout, cache):
    Hd = dout.shape[1] // 2
    return lstm.lstm_step_backward(dout[:, :Hd], dout[:, Hd:], cache)


def flat_sequence(x, h0, c0, Wx, Wh, b):
    hs, (h, c), cache = lstm.lstm_forward(x, h0, c0, Wx, Wh, b)
    return np.concatenate([hs.reshape(x.shape[0], -1), h, c], axis=1), cache  # (B, T Hd + 2Hd)


def flat_sequence_backward(dout, cache, backward=None):
    B, T, Hd = cache[2].shape  # the cached hs
    dhs = dout[:, : T * Hd].reshape(B, T, Hd)  # (B, T, Hd)
    return (backward or lstm.lstm_backward)(dhs, cache, (dout[:, T * Hd : -Hd], dout[:, -Hd:]))


def flat_stack(x, *arrays):
    """arrays: h0, c0 of each layer, then Wx, Wh, b of each layer (L = len(arrays) // 5)."""
    L = len(arrays) // 5
    state = [arrays[2 * l : 2 * l + 2] for l in range(L)]
    layers = [arrays[2 * L + 3 * l : 2 * L + 3 * l + 3] for l in range(L)]
    hs, final, cache = lstm.lstm_stack_forward(x, state, layers)
    B = x.shape[0]
    return np.concatenate([hs.reshape(B, -1)] + [a for hc in final for a in hc], axis=1), cache


def flat_stack_backward(dout, cache):
    L = len(cache)
    B, T, Hd = cache[-1][2].shape  # the top layer's cached hs
    dhs = dout[:, : T * Hd].reshape(B, T, Hd)  # (B, T, Hd)
    rest = dout[:, T * Hd :].reshape(B, L, 2, Hd)  # (B, L, 2, Hd): dh_T, dc_T of each layer
    dx, dstate0, dlayers = lstm.lstm_stack_backward(dhs, cache, [(rest[:, l, 0], rest[:, l, 1]) for l in range(L)])
    return (dx, *[g for pair in dstate0 for g in pair], *[g for trio in dlayers for g in trio])


def pair_grads(forward, backward, inputs, seed: int = 0):
    """The analytic gradients check_pair compares (the same upstream gradient, drawn from ``seed``)."""
    out, cache = forward(*inputs)
    grads = backward(np.random.default_rng(seed).standard_normal(out.shape), cache)
    return list(grads) if isinstance(grads, tuple) else [grads]


def weights(r, D: int, Hd: int, scale: float = 0.7):
    """Random float64 Wx (D, 4Hd), Wh (Hd, 4Hd), b (4Hd,): every gate in its sensitive range."""
    return [scale * r.standard_normal((D, 4 * Hd)), scale * r.standard_normal((Hd, 4 * Hd)),
            scale * r.standard_normal(4 * Hd)]


def gates_inputs():
    def draw(r):
        return [2 * r.standard_normal((3, 16)), r.standard_normal((3, 4))]  # a (B, 4Hd), c_prev (B, Hd)

    return first_resolvable(draw, lambda x: pair_grads(flat_gates, flat_gates_backward, x))


def step_inputs(B=3, D=3, Hd=4):
    def draw(r):
        return [r.standard_normal((B, D)), r.standard_normal((B, Hd)), r.standard_normal((B, Hd))] + weights(r, D, Hd)

    return first_resolvable(draw, lambda x: pair_grads(flat_step, flat_step_backward, x))


def sequence_inputs(B=2, T=4, D=3, Hd=3):
    def draw(r):
        x, h0, c0 = r.standard_normal((B, T, D)), r.standard_normal((B, Hd)), r.standard_normal((B, Hd))
        return [x, h0, c0] + weights(r, D, Hd)

    return first_resolvable(draw, lambda x: pair_grads(flat_sequence, flat_sequence_backward, x))


def stack_inputs(B=2, T=3, D=3, Hd=2, L=2):
    def draw(r):
        states = [r.standard_normal((B, Hd)) for _ in range(2 * L)]
        layers = [w for l in range(L) for w in weights(r, D if l == 0 else Hd, Hd)]
        return [r.standard_normal((B, T, D))] + states + layers

    return first_resolvable(draw, lambda x: pair_grads(flat_stack, flat_stack_backward, x))


STEP_NAMES = ["x", "h_prev", "c_prev", "Wx", "Wh", "b"]
SEQUENCE_NAMES = ["x", "h0", "c0", "Wx", "Wh", "b"]


def stack_names(L=2):
    return ["x"] + [f"{n}[{l}]" for l in range(L) for n in ("h0", "c0")] + [
        f"{n}[{l}]" for l in range(L) for n in ("Wx", "Wh", "b")]


@case(G, "gates (i, f, g, o)")
def _gates():
    return check_pair(flat_gates, flat_gates_backward, gates_inputs(), ["a", "c_prev"])


@case(G, "step")
def _step():
    return check_pair(flat_step, flat_step_backward, step_inputs(), STEP_NAMES)


@case(G, "sequence (BPTT, h0, c0, c_T)")
def _sequence():
    return check_pair(flat_sequence, flat_sequence_backward, sequence_inputs(), SEQUENCE_NAMES, axes={"x": "B T D"})


@case(G, "2-layer stack")
def _stack():
    return check_pair(flat_stack, flat_stack_backward, stack_inputs(), stack_names())


LM = lstm_lm.LSTMConfig(vocab_size=4, n_embd=2, n_hidden=2, n_layer=2)


def lm_inputs(cfg: lstm_lm.LSTMConfig = LM, B: int = 2, T: int = 3):
    """Float64 parameters (random; a large output layer, so the gradients reaching the lower layer stay well
    above the check's roundoff), ids and targets (B, T), and a random carried-in state."""

    def draw(r):
        params = {k: (0.7 if k.startswith("lstm.") else 1.0) * r.standard_normal(s)
                  for k, s in lstm_lm.param_shapes(cfg).items()}  # (...) gates in their sensitive range
        params["W_out"] *= 5
        state = [(r.standard_normal((B, cfg.n_hidden)), r.standard_normal((B, cfg.n_hidden)))
                 for _ in range(cfg.n_layer)]
        return params, r.integers(0, cfg.vocab_size, (B, T)), r.integers(0, cfg.vocab_size, (B, T)), state

    def grads_of(drawn):
        params, idx, targets, state = drawn
        return list(lstm_lm.loss_and_grads(params, cfg, idx, targets, state=state)[1].values())

    return first_resolvable(draw, grads_of)


def check_lstm_lm(cfg: lstm_lm.LSTMConfig = LM, loss_and_grads=lstm_lm.loss_and_grads) -> dict[str, float]:
    """check_model of every entry of every parameter of the LSTM LM, starting from a carried-in state."""
    params, idx, targets, state = lm_inputs(cfg)

    def in_dtype_of(p):  # the carried-in state in the parameters' dtype (float32 for the dtype check)
        dtype = p["W_out"].dtype
        return [(h.astype(dtype), c.astype(dtype)) for h, c in state]

    return check_model(lambda p: loss_and_grads(p, cfg, idx, targets, state=in_dtype_of(p)), params)


@case("models", "LSTM LM (2 layers, carried state)")
def _lstm_lm():
    return check_lstm_lm()

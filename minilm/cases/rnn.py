"""Gradient-check cases for the vanilla tanh RNN (minilm.rnn): one step, and a sequence (BPTT, h0, h_T).

The sequence returns two outputs (every hidden state and the final state); ``flat_sequence``
concatenates them into one (B, T Hd + Hd) array so that one check covers the gradients reaching
every h_t, the final state and the initial state.  Inputs are chosen as explained in
minilm/cases/ngram.py (every analytic gradient entry resolvable).
"""

from __future__ import annotations

import numpy as np

from minilm import rnn
from minilm.cases import case
from minilm.cases.lstm import pair_grads
from minilm.cases.ngram import first_resolvable
from minilm.gradcheck import check_pair

G = "rnn"
STEP_NAMES = ["x", "h_prev", "Wx", "Wh", "b"]
SEQUENCE_NAMES = ["x", "h0", "Wx", "Wh", "b"]


def flat_sequence(x, h0, Wx, Wh, b):
    hs, h, cache = rnn.rnn_forward(x, h0, Wx, Wh, b)
    return np.concatenate([hs.reshape(x.shape[0], -1), h], axis=1), cache  # (B, T Hd + Hd)


def flat_sequence_backward(dout, cache, backward=None):
    B, Hd = dout.shape[0], cache[0][1][1].shape[0]  # the step's h_prev W_h cache holds W_h (Hd, Hd)
    T = len(cache)
    dhs = dout[:, : T * Hd].reshape(B, T, Hd)  # (B, T, Hd)
    return (backward or rnn.rnn_backward)(dhs, cache, dout[:, T * Hd :])


def weights(r, D: int, Hd: int, scale: float = 0.7):
    """Random float64 Wx (D, Hd), Wh (Hd, Hd), b (Hd,): pre-activations in tanh's sensitive range."""
    return [scale * r.standard_normal((D, Hd)), scale * r.standard_normal((Hd, Hd)), scale * r.standard_normal(Hd)]


def step_inputs(B=3, D=3, Hd=4):
    def draw(r):
        return [r.standard_normal((B, D)), r.standard_normal((B, Hd))] + weights(r, D, Hd)

    return first_resolvable(draw, lambda x: pair_grads(rnn.rnn_step_forward, rnn.rnn_step_backward, x))


def sequence_inputs(B=2, T=5, D=3, Hd=4):
    def draw(r):
        return [r.standard_normal((B, T, D)), r.standard_normal((B, Hd))] + weights(r, D, Hd)

    return first_resolvable(draw, lambda x: pair_grads(flat_sequence, flat_sequence_backward, x))


@case(G, "step (tanh)")
def _step():
    return check_pair(rnn.rnn_step_forward, rnn.rnn_step_backward, step_inputs(), STEP_NAMES)


@case(G, "sequence (BPTT, h0, h_T)")
def _sequence():
    return check_pair(flat_sequence, flat_sequence_backward, sequence_inputs(), SEQUENCE_NAMES)

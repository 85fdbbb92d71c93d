"""Gradient-check cases for the primitive ops."""

from __future__ import annotations

import numpy as np

from minilm.activations import (
    gelu_backward,
    gelu_forward,
    relu_backward,
    relu_forward,
    sigmoid_backward,
    sigmoid_forward,
    tanh_backward,
    tanh_forward,
)
from minilm.cases import case
from minilm.dropout import dropout_backward, dropout_forward
from minilm.embedding import embedding_backward, embedding_forward
from minilm.gradcheck import check_pair
from minilm.layernorm import layernorm_backward, layernorm_forward
from minilm.linear import linear_backward, linear_forward
from minilm.softmax import (
    cross_entropy_backward,
    cross_entropy_forward,
    log_softmax_backward,
    log_softmax_forward,
    softmax_backward,
    softmax_forward,
)

G = "ops"


def _rng():
    return np.random.default_rng(0)


def away_from_zero(x):
    """Move entries away from the kink of ReLU, so finite differences do not straddle it."""
    return np.where(np.abs(x) < 1e-2, 0.5, x)


@case(G, "linear")
def _linear():
    r = _rng()
    return check_pair(linear_forward, linear_backward,
                      [r.standard_normal((2, 3, 4)), r.standard_normal((4, 5)), r.standard_normal(5)], ["x", "W", "b"])


@case(G, "relu")
def _relu():
    return check_pair(relu_forward, relu_backward, [away_from_zero(_rng().standard_normal((3, 4, 5)))], ["x"])


@case(G, "gelu (tanh form)")
def _gelu():
    return check_pair(gelu_forward, gelu_backward, [3 * _rng().standard_normal((3, 4, 5))], ["x"])


@case(G, "tanh")
def _tanh():
    return check_pair(tanh_forward, tanh_backward, [_rng().standard_normal((3, 4, 5))], ["x"])


@case(G, "sigmoid")
def _sigmoid():
    return check_pair(sigmoid_forward, sigmoid_backward, [3 * _rng().standard_normal((3, 4, 5))], ["x"])


@case(G, "softmax")
def _softmax():
    return check_pair(softmax_forward, softmax_backward, [_rng().standard_normal((2, 3, 6))], ["x"])


@case(G, "log-softmax")
def _log_softmax():
    return check_pair(log_softmax_forward, log_softmax_backward, [_rng().standard_normal((2, 3, 6))], ["x"])


@case(G, "cross-entropy (ignore_index)")
def _cross_entropy():
    r = _rng()
    targets = r.integers(0, 7, size=(2, 5))
    targets[0, 1] = targets[1, 3] = -100
    return check_pair(cross_entropy_forward, cross_entropy_backward,
                      [r.standard_normal((2, 5, 7)), targets], ["logits", "targets"], {"ignore_index": -100})


@case(G, "embedding (repeated ids)")
def _embedding():
    r = _rng()
    ids = np.array([[1, 3, 1], [0, 1, 3]])
    return check_pair(embedding_forward, embedding_backward, [ids, r.standard_normal((5, 4))], ["ids", "W"])


@case(G, "layernorm")
def _layernorm():
    r = _rng()
    return check_pair(layernorm_forward, layernorm_backward,
                      [r.standard_normal((2, 3, 8)), 1 + r.standard_normal(8), r.standard_normal(8)],
                      ["x", "gamma", "beta"])


@case(G, "dropout (p=0.3)")
def _dropout():
    def forward(x):  # the same mask on every call: a fixed seed per call
        return dropout_forward(x, 0.3, np.random.default_rng(1))

    return check_pair(forward, dropout_backward, [_rng().standard_normal((3, 4, 5))], ["x"])

"""Elementwise nonlinearities, each a forward/backward pair.

    relu(x)    = max(0, x)                       relu'(x)    = 1[x > 0]
    tanh(x)                                      tanh'(x)    = 1 - tanh(x)^2
    sigmoid(x) = 1 / (1 + e^{-x})                sigmoid'(x) = s (1 - s)
    gelu(x)    = x/2 (1 + tanh(u)),  u = sqrt(2/pi) (x + 0.044715 x^3)

ReLU is the feed-forward nonlinearity of the text's Transformer block (§5.1);
tanh is Bengio's hidden layer (§4.2); sigmoid gates the LSTM (§5.2).  GELU is
the *tanh approximation* used by GPT-2 (torch's ``GELU(approximate="tanh")``);
it differs from the exact x Phi(x) by less than 1e-3 everywhere.
"""

from __future__ import annotations

import numpy as np

from minilm.validate import check_float


def relu_forward(x: np.ndarray):
    """y = max(0, x).  x, y: (...,)."""
    check_float(x, "x", min_ndim=0)
    y = np.maximum(x, 0)  # (...)
    return y, x


def relu_backward(dy: np.ndarray, cache):
    """dx = dy * 1[x > 0]  (the subgradient at 0 is taken as 0)."""
    x = cache
    ### BEGIN SOLUTION
    dx = dy * (x > 0)  # (...)
    ### END SOLUTION
    return dx


def tanh_forward(x: np.ndarray):
    """y = tanh(x).  x, y: (...,)."""
    check_float(x, "x", min_ndim=0)
    y = np.tanh(x)  # (...)
    return y, y


def tanh_backward(dy: np.ndarray, cache):
    """dx = dy * (1 - y^2), reusing the forward's output y."""
    y = cache
    ### BEGIN SOLUTION
    dx = dy * (1 - y * y)  # (...)
    ### END SOLUTION
    return dx


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Numerically stable 1 / (1 + e^{-x}): never exponentiates a positive number.

    For x >= 0 use 1 / (1 + e^{-x}); for x < 0 the equal form e^{x} / (1 + e^{x}).
    """
    z = np.exp(-np.abs(x))  # (...), in (0, 1]: cannot overflow
    return np.where(x >= 0, 1 / (1 + z), z / (1 + z))


def sigmoid_forward(x: np.ndarray):
    """y = sigmoid(x), stable for any |x|.  x, y: (...,)."""
    check_float(x, "x", min_ndim=0)
    y = sigmoid(x)  # (...)
    return y, y


def sigmoid_backward(dy: np.ndarray, cache):
    """dx = dy * y (1 - y)."""
    y = cache
    ### BEGIN SOLUTION
    dx = dy * y * (1 - y)  # (...)
    ### END SOLUTION
    return dx


GELU_C = np.sqrt(2 / np.pi)  # sqrt(2/pi), the constant of the tanh approximation


def gelu_forward(x: np.ndarray):
    """y = x/2 (1 + tanh(u)),  u = sqrt(2/pi) (x + 0.044715 x^3).  x, y: (...,).

    Computed as y = x s with s = (1 + tanh(u))/2 = sigmoid(2u), which is the
    same number without the cancellation of 1 + tanh(u) when tanh(u) ~ -1.
    """
    check_float(x, "x", min_ndim=0)
    c = x.dtype.type(2 * GELU_C)  # keep float32 inputs in float32
    s = 1 / (1 + np.exp(-c * np.maximum(x + 0.044715 * x**3, -40)))  # (...), sigmoid(2u); clamp: no overflow
    y = x * s  # (...)
    return y, (x, s)


def gelu_backward(dy: np.ndarray, cache):
    """dy/dx = s + x * 2 s (1 - s) du/dx,   du/dx = sqrt(2/pi) (1 + 3 * 0.044715 x^2),   s = sigmoid(2u)."""
    x, s = cache
    ### BEGIN SOLUTION
    c = x.dtype.type(2 * GELU_C)
    dx = dy * (s + x * s * (1 - s) * c * (1 + 3 * 0.044715 * x * x))  # (...)
    ### END SOLUTION
    return dx

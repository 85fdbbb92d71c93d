"""Layer normalisation over the last axis (nn.LayerNorm of the text's block, §5.1).

    mu = mean(x),  var = mean((x - mu)^2)       (biased, as torch.nn.LayerNorm)
    xhat = (x - mu) / sqrt(var + eps)
    y = gamma * xhat + beta                     x, y: (..., C)   gamma, beta: (C,)
"""

from __future__ import annotations

import numpy as np

from minilm.validate import check_float


def layernorm_forward(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float = 1e-5):
    """y = gamma * (x - mu) / sqrt(var + eps) + beta.  Returns y (..., C), cache."""
    check_float(gamma, "gamma")
    check_float(beta, "beta", last_dim=gamma.shape[-1])
    check_float(x, "x", last_dim=gamma.shape[-1])
    mu = x.mean(axis=-1, keepdims=True)  # (..., 1)
    xc = x - mu  # (..., C)
    var = (xc * xc).mean(axis=-1, keepdims=True)  # (..., 1)
    rstd = 1 / np.sqrt(var + x.dtype.type(eps))  # (..., 1)
    xhat = xc * rstd  # (..., C)
    y = gamma * xhat + beta  # (..., C)
    return y, (xhat, rstd, gamma)


def layernorm_backward(dy: np.ndarray, cache):
    """With g = dy * gamma:

        dx     = rstd * (g - mean(g) - xhat * mean(g * xhat))
        dgamma = sum over leading dims of dy * xhat
        dbeta  = sum over leading dims of dy
    """
    xhat, rstd, gamma = cache
    ### BEGIN SOLUTION
    C = xhat.shape[-1]
    dbeta = dy.reshape(-1, C).sum(axis=0)  # (C,)
    dgamma = (dy * xhat).reshape(-1, C).sum(axis=0)  # (C,)
    g = dy * gamma  # (..., C), gradient w.r.t. xhat
    dx = rstd * (g - g.mean(axis=-1, keepdims=True) - xhat * (g * xhat).mean(axis=-1, keepdims=True))  # (..., C)
    ### END SOLUTION
    return dx, dgamma, dbeta

"""Linear (affine) layer: the W of every formula in §4.1, §4.2 and §5.

    y = x W + b          x: (..., Din)   W: (Din, Dout)   b: (Dout,)

W is stored (Din, Dout) so the forward is a plain ``x @ W`` (torch's
nn.Linear stores the transpose, (Dout, Din)).
"""

from __future__ import annotations

import numpy as np

from minilm.validate import check_float


def linear_forward(x: np.ndarray, W: np.ndarray, b: np.ndarray | None = None):
    """y = x W + b over any leading dimensions.

    Inputs:  x (..., Din), W (Din, Dout), b (Dout,) or None.
    Returns: y (..., Dout), cache.
    """
    check_float(W, "W", min_ndim=2)
    check_float(x, "x", last_dim=W.shape[0])
    if b is not None:
        check_float(b, "b", last_dim=W.shape[1])
    y = x @ W  # (..., Din) x (Din, Dout) -> (..., Dout)
    if b is not None:
        y = y + b  # (..., Dout) + (Dout,)
    return y, (x, W, b is not None)


def linear_backward(dy: np.ndarray, cache):
    """dx = dy W^T,  dW = sum over leading dims of x^T dy,  db = sum of dy.

    Returns: dx (..., Din), dW (Din, Dout), db (Dout,) or None.
    """
    x, W, has_bias = cache
    ### BEGIN SOLUTION
    dx = dy @ W.T  # (..., Dout) x (Dout, Din) -> (..., Din)
    x2 = x.reshape(-1, x.shape[-1])  # (M, Din), M = product of leading dims
    dy2 = dy.reshape(-1, dy.shape[-1])  # (M, Dout)
    dW = x2.T @ dy2  # (Din, M) x (M, Dout) -> (Din, Dout)
    db = dy2.sum(axis=0) if has_bias else None  # (Dout,)
    ### END SOLUTION
    return dx, dW, db

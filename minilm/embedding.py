"""Embedding lookup: token id -> row of a table (the e_i of §4.2, nn.Embedding of §5).

    out[..., :] = W[ids[...], :]          ids: (...) ints in [0, V)   W: (V, C)

Backward: each row of W receives the sum of the upstream gradients of every
position that looked it up.  A plain ``dW[ids] += dout`` would keep only one
of the repeated ids; ``np.add.at`` accumulates them all.
"""

from __future__ import annotations

import numpy as np

from minilm.validate import check_float, check_ids


def embedding_forward(ids: np.ndarray, W: np.ndarray):
    """out = W[ids].  Inputs: ids (...) int, W (V, C).  Returns out (..., C), cache."""
    check_float(W, "W", min_ndim=2)
    ids = check_ids(ids, W.shape[0], "ids")
    out = W[ids]  # (..., C)
    return out, (ids, W.shape)


def embedding_backward(dout: np.ndarray, cache):
    """dW[v] = sum over positions p with ids[p] = v of dout[p].  Returns (None, dW): ids have no gradient."""
    ids, shape = cache
    ### BEGIN SOLUTION
    dW = np.zeros(shape, dtype=dout.dtype)  # (V, C)
    np.add.at(dW, ids.reshape(-1), dout.reshape(-1, shape[1]))  # repeated ids accumulate
    ### END SOLUTION
    return None, dW

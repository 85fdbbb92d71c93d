"""Positional encodings (§5.1): attention by itself ignores word order, so each
position adds a vector of its own to the token embedding.

Sinusoidal (the text's ``PositionalEncoding``), for position t and i = 0..C/2-1:

    PE[t, 2i]   = sin(t / 10000^(2i/C))
    PE[t, 2i+1] = cos(t / 10000^(2i/C))

The layout is *interleaved*, as in the text (pe[:, 0::2] = sin, pe[:, 1::2]
= cos).  Another common layout puts all the sines first and all the cosines
after (*concatenated*).  The two differ by a fixed permutation of the C
features, which the model cannot tell apart: the token embedding it is added
to and every weight matrix that reads the sum can be permuted to match, and
with i.i.d. random initialisation even the starting point has the same
distribution.  Each pair (sin, cos) at one frequency is what matters: moving
k positions rotates that pair by a fixed angle, a linear map attention can
learn.

The text's forward also multiplies the token embeddings by sqrt(C) before
adding PE: ``x = x * math.sqrt(self.d_model)`` (a line that needs ``import
math``, which the text's listing forgets).  The reason: in the original
Transformer the embedding table is shared with the output layer, and its
reference code initialises it with standard deviation 1/sqrt(C); times
sqrt(C) the entries are ~1, like those of PE, which lie in [-1, 1].  Without the scaling the
positions would drown the tokens; with a table initialised at ~1 (torch's
nn.Embedding draws N(0, 1)) the scaling does the opposite and the tokens
drown the positions.  Here it is the option ``scale_embed``, never implicit.

Learned positions (GPT style): a trainable table ``wpe`` of shape
(block_size, C) whose first T rows are added; it has a backward like any
embedding.
"""

from __future__ import annotations

import numpy as np

from minilm.embedding import embedding_backward, embedding_forward
from minilm.validate import check_float


def sinusoidal_table(T: int, C: int, dtype=np.float64, start: int = 0) -> np.ndarray:
    """PE (T, C), interleaved: column 2i is sin(t w_i), column 2i+1 is cos(t w_i), w_i = 10000^(-2i/C).

    Row r is position t = start + r (``start`` > 0: the positions of tokens fed after ``start`` others,
    as in KV-cache decoding); each row is the same number whatever ``start`` is.
    """
    if C % 2:
        raise ValueError(f"sinusoidal positions need an even width C (sin/cos pairs), got C = {C}")
    ### BEGIN SOLUTION
    t = np.arange(start, start + T)[:, None]  # (T, 1), positions start .. start + T - 1
    w = np.exp(np.arange(0, C, 2) * (-np.log(10000.0) / C))  # (C/2,), the frequencies w_i
    pe = np.zeros((T, C))  # (T, C)
    pe[:, 0::2] = np.sin(t * w)  # (T, C/2)
    pe[:, 1::2] = np.cos(t * w)  # (T, C/2)
    ### END SOLUTION
    return pe.astype(dtype)  # computed in float64, then cast once


def sinusoidal_forward(x: np.ndarray, *, scale_embed: bool, start: int = 0):
    """y = x * sqrt(C) + PE[start:start+T]  (scale_embed, as the text's §5.1)  or  y = x + PE[start:start+T].

    Inputs:  x (..., T, C) token embeddings at positions start .. start + T - 1 (start = 0 but in
             KV-cache decoding).  Returns: y (..., T, C), cache.
    """
    check_float(x, "x", min_ndim=2)
    T, C = x.shape[-2:]
    scale = x.dtype.type(np.sqrt(C)) if scale_embed else x.dtype.type(1)
    y = x * scale + sinusoidal_table(T, C, x.dtype, start)  # (..., T, C) + (T, C)
    return y, scale


def sinusoidal_backward(dy: np.ndarray, cache):
    """dx = dy * sqrt(C)  (or dy): PE is a constant."""
    scale = cache
    ### BEGIN SOLUTION
    dx = dy * scale  # (..., T, C)
    ### END SOLUTION
    return dx


def learned_position_forward(x: np.ndarray, wpe: np.ndarray, *, scale_embed: bool, start: int = 0):
    """y = x * sqrt(C) + wpe[start:start+T]  (scale_embed)  or  y = x + wpe[start:start+T].

    Inputs:  x (..., T, C) at positions start .. start + T - 1, wpe (block_size, C) with
             block_size >= start + T.
    Returns: y (..., T, C), cache.
    """
    check_float(wpe, "wpe", min_ndim=2)
    check_float(x, "x", min_ndim=2, last_dim=wpe.shape[1])
    T, C = x.shape[-2:]
    if start + T > wpe.shape[0]:
        raise ValueError(f"sequence length T = {T} exceeds the {wpe.shape[0]} learned positions (block_size)"
                         + (f" when it starts at position {start}" if start else ""))
    scale = x.dtype.type(np.sqrt(C)) if scale_embed else x.dtype.type(1)
    pos, c_emb = embedding_forward(np.arange(start, start + T), wpe)  # (T, C), rows start..start+T-1 of wpe
    y = x * scale + pos  # (..., T, C) + (T, C)
    return y, (scale, c_emb)


def learned_position_backward(dy: np.ndarray, cache):
    """dx = dy * sqrt(C) (or dy);  dwpe[t] = sum over leading dims of dy[..., t, :] for the T rows used, 0 elsewhere."""
    scale, c_emb = cache
    ### BEGIN SOLUTION
    dx = dy * scale  # (..., T, C)
    dpos = dy.reshape(-1, *dy.shape[-2:]).sum(axis=0)  # (T, C): every sequence used the same rows
    _, dwpe = embedding_backward(dpos, c_emb)  # (block_size, C)
    ### END SOLUTION
    return dx, dwpe

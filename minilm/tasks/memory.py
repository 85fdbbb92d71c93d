"""Remember the first token: a long-range dependency that a recurrent model must carry through L steps.

Each sequence is L tokens drawn uniformly from K symbols; the label is the *first* token, to be predicted
from the last hidden state h_L alone.  Every later token is drawn from the same K symbols, so the
input weights of those symbols get gradient from every step: the signal that comes back the whole
way from step L to step 1 must stand out against that of the nearby steps.  Chance accuracy is 1/K.

The model: a vanilla RNN (minilm.rnn) or an LSTM (minilm.lstm) over one-hot inputs (B, L, K),
then a linear read-out of h_L, softmax cross-entropy; trained with Adam and gradient clipping.
"""

from __future__ import annotations

import numpy as np

from minilm import lstm, rnn
from minilm.linear import linear_backward, linear_forward
from minilm.optim import adam_step, clip_grad_norm, init_state
from minilm.softmax import cross_entropy_backward, cross_entropy_forward


def batch(rng: np.random.Generator, B: int, L: int, K: int = 4, dtype=np.float32):
    """x (B, L, K) one-hot tokens, y (B,) the first token of each sequence."""
    tokens = rng.integers(0, K, (B, L))  # (B, L)
    return np.eye(K, dtype=dtype)[tokens], tokens[:, 0]


def init_params(kind: str, rng: np.random.Generator, K: int, Hd: int, forget_bias: float = 1.0,
                dtype=np.float32) -> dict[str, np.ndarray]:
    """torch's initial weights for the recurrent layer ("rnn" or "lstm"), U(-1/sqrt(Hd), 1/sqrt(Hd)) read-out."""
    if kind == "rnn":
        Wx, Wh, b = rnn.rnn_init(rng, K, Hd, dtype)
    elif kind == "lstm":
        Wx, Wh, b = lstm.lstm_init(rng, K, Hd, dtype, forget_bias=forget_bias)
    else:
        raise ValueError(f"kind must be 'rnn' or 'lstm', got {kind!r}")
    k = 1 / np.sqrt(Hd)
    return {"Wx": Wx, "Wh": Wh, "b": b, "W_out": rng.uniform(-k, k, (Hd, K)).astype(dtype),
            "b_out": np.zeros(K, dtype)}


def loss_and_grads(kind: str, params: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray):
    """Cross-entropy of the read-out of h_L; returns (loss, grads keyed like params, accuracy)."""
    B, Hd = x.shape[0], params["Wh"].shape[0]
    h0 = np.zeros((B, Hd), dtype=x.dtype)  # (B, Hd)
    if kind == "rnn":
        hs, h_L, cache = rnn.rnn_forward(x, h0, params["Wx"], params["Wh"], params["b"])  # (B, L, Hd), (B, Hd)
    else:
        hs, (h_L, _), cache = lstm.lstm_forward(x, h0, h0, params["Wx"], params["Wh"], params["b"])
    z, cache_out = linear_forward(h_L, params["W_out"], params["b_out"])  # (B, Hd) x (Hd, K) -> (B, K)
    loss, cache_ce = cross_entropy_forward(z, y)
    dh_L, dW_out, db_out = linear_backward(cross_entropy_backward(1.0, cache_ce), cache_out)  # (B, Hd), ...
    dhs = np.zeros_like(hs)  # (B, L, Hd): only the last state is read
    dhs[:, -1] = dh_L
    if kind == "rnn":
        _, _, dWx, dWh, db = rnn.rnn_backward(dhs, cache)
    else:
        _, _, _, dWx, dWh, db = lstm.lstm_backward(dhs, cache)
    grads = {"Wx": dWx, "Wh": dWh, "b": db, "W_out": dW_out, "b_out": db_out}
    return loss, grads, float(np.mean(z.argmax(axis=1) == y))


def train(kind: str, L: int, steps: int = 500, K: int = 4, Hd: int = 32, B: int = 32, lr: float = 1e-2,
          clip: float = 1.0, forget_bias: float = 1.0, seed: int = 0, test_size: int = 1000) -> dict:
    """Train on fresh batches for ``steps`` steps; returns the loss curve and the accuracy on ``test_size``
    held-out sequences (drawn from a different seed)."""
    rng = np.random.default_rng(seed)
    params = init_params(kind, rng, K, Hd, forget_bias)
    state, losses = init_state(params), []
    for _ in range(steps):
        x, y = batch(rng, B, L, K)
        loss, grads, _ = loss_and_grads(kind, params, x, y)
        if clip > 0:
            clip_grad_norm(grads, clip)
        adam_step(params, grads, state, lr)
        losses.append(loss)
    x, y = batch(np.random.default_rng(10_000 + seed), test_size, L, K)
    loss, _, accuracy = loss_and_grads(kind, params, x, y)
    return {"losses": np.array(losses), "test_loss": loss, "test_accuracy": accuracy, "params": params}

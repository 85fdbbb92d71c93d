"""The LSTM language model of §5.2: embedding -> n-layer LSTM -> linear -> cross-entropy.

    e = embed[idx]                         (B, T, E)
    hs, state' = LSTM_n(e, state)          (B, T, Hd)   n stacked layers (minilm.lstm)
    logits = hs W_out + b_out              (B, T, V)    logits[:, t] predicts idx[:, t+1]

Unlike the Transformer, the LSTM has a state.  ``forward`` takes the initial
state (``state=None`` means zeros) and leaves the final one in its cache:
``final_state(cache)`` returns it as a list of (h, c) per layer, each (B, Hd).

Carrying state across contiguous batches (truncated BPTT).  When batch k+1
continues the text of batch k row by row, pass batch k's final state as batch
k+1's ``state``::

    state = None
    for idx, targets in contiguous_batches:
        loss, grads, state = loss_grads_and_state(params, cfg, idx, targets, state=state)
        ...  # optimiser step

The model then reads an unbounded past while gradients flow back only T steps:
the carried state is a plain array, ``backward`` never sends gradient into it
(the gradient with respect to the initial state is computed and dropped), so
no gradient crosses a batch boundary -- torch's ``state.detach()``.  Call with
``state=None`` where the text restarts.

Parameters: embed (V, E); lstm.{l}.Wx (E or Hd, 4Hd), lstm.{l}.Wh (Hd, 4Hd), lstm.{l}.b (4Hd,) for each
layer l; W_out (Hd, V), b_out (V,).  The text's code uses one width d_model for E and Hd; here they may differ.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from minilm.embedding import embedding_backward, embedding_forward
from minilm.linear import linear_backward, linear_forward
from minilm.lstm import lstm_init, lstm_stack_backward, lstm_stack_forward
from minilm.softmax import cross_entropy_backward, cross_entropy_forward
from minilm.validate import check_ids, check_param_dict


@dataclass
class LSTMConfig:
    vocab_size: int  # V
    n_embd: int = 32  # E, size of one word vector
    n_hidden: int = 64  # Hd, hidden and cell size of every layer
    n_layer: int = 1  # stacked LSTM layers
    forget_bias: float = 1.0  # initial forget-gate bias: starts the gate open (see lstm_init)

    def __post_init__(self):
        for name in ("vocab_size", "n_embd", "n_hidden", "n_layer"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}")


def param_shapes(cfg: LSTMConfig) -> dict[str, tuple[int, ...]]:
    """The shape of every parameter, by name."""
    V, E, Hd = cfg.vocab_size, cfg.n_embd, cfg.n_hidden
    shapes = {"embed": (V, E)}
    for l in range(cfg.n_layer):
        D = E if l == 0 else Hd  # layer 0 reads the embeddings, the others the layer below
        shapes |= {f"lstm.{l}.Wx": (D, 4 * Hd), f"lstm.{l}.Wh": (Hd, 4 * Hd), f"lstm.{l}.b": (4 * Hd,)}
    return shapes | {"W_out": (Hd, V), "b_out": (V,)}


def init_params(cfg: LSTMConfig, rng: np.random.Generator, dtype=np.float32) -> dict[str, np.ndarray]:
    """Word vectors ~ N(0, 1); each layer from lstm_init (with cfg.forget_bias); W_out ~ N(0, 1/Hd), b_out 0."""
    p = {"embed": rng.standard_normal((cfg.vocab_size, cfg.n_embd)).astype(dtype)}
    for l in range(cfg.n_layer):
        D = cfg.n_embd if l == 0 else cfg.n_hidden
        Wx, Wh, b = lstm_init(rng, D, cfg.n_hidden, dtype, cfg.forget_bias)
        p |= {f"lstm.{l}.Wx": Wx, f"lstm.{l}.Wh": Wh, f"lstm.{l}.b": b}
    p["W_out"] = (rng.standard_normal((cfg.n_hidden, cfg.vocab_size)) / np.sqrt(cfg.n_hidden)).astype(dtype)
    p["b_out"] = np.zeros(cfg.vocab_size, dtype=dtype)
    return p


def check_params(params: dict[str, np.ndarray], cfg: LSTMConfig) -> np.dtype:
    """Every parameter present with its shape, all float32 or all float64; returns that dtype."""
    return check_param_dict(params, param_shapes(cfg))


def zero_state(cfg: LSTMConfig, batch_size: int, dtype=np.float32) -> list[tuple[np.ndarray, np.ndarray]]:
    """The state at the start of a text: h = c = 0 in every layer, a list of (h, c), each (B, Hd)."""
    return [(np.zeros((batch_size, cfg.n_hidden), dtype), np.zeros((batch_size, cfg.n_hidden), dtype))
            for _ in range(cfg.n_layer)]


def check_state(state, cfg: LSTMConfig, batch_size: int, dtype) -> list[tuple[np.ndarray, np.ndarray]]:
    """state must be a list of n_layer pairs (h, c), each a (B, Hd) array of the parameters' dtype."""
    if not isinstance(state, list | tuple) or len(state) != cfg.n_layer:
        got = f"{type(state).__name__}" + (f" of length {len(state)}" if isinstance(state, list | tuple) else "")
        raise ValueError(f"state must be a list of {cfg.n_layer} (h, c) pairs, one per layer, got {got}")
    want = (batch_size, cfg.n_hidden)
    for l, pair in enumerate(state):
        if not isinstance(pair, list | tuple) or len(pair) != 2:
            raise ValueError(f"state[{l}] must be a pair (h, c)")
        for name, a in zip("hc", pair, strict=True):
            if not isinstance(a, np.ndarray) or a.shape != want or a.dtype != dtype:
                got = f"{a.shape} {a.dtype}" if isinstance(a, np.ndarray) else type(a).__name__
                raise ValueError(f"state[{l}] {name} must be a {want} array of {np.dtype(dtype)} "
                                 f"(B = {batch_size}, Hd = {cfg.n_hidden}, the parameters' dtype), got {got}")
    return [tuple(pair) for pair in state]


def forward(params: dict[str, np.ndarray], cfg: LSTMConfig, idx: np.ndarray, *, state=None):
    """logits = LSTM_n(embed[idx], state) W_out + b_out  (§5.2).

    Inputs: idx (B, T) token ids; state: list of (h, c) per layer, each (B, Hd), or None for zeros.
    Returns: logits (B, T, V); cache, from which final_state(cache) gives the state after the last step.
    """
    dtype = check_params(params, cfg)
    idx = np.asarray(idx)
    if idx.ndim != 2 or idx.shape[1] == 0:
        raise ValueError(f"idx must have shape (B, T) with T >= 1, got shape {idx.shape}")
    idx = check_ids(idx, cfg.vocab_size, "idx")
    B = idx.shape[0]
    state = zero_state(cfg, B, dtype) if state is None else check_state(state, cfg, B, dtype)
    layers = [(params[f"lstm.{l}.Wx"], params[f"lstm.{l}.Wh"], params[f"lstm.{l}.b"]) for l in range(cfg.n_layer)]
    e, cache_e = embedding_forward(idx, params["embed"])  # (B, T) -> (B, T, E)
    hs, final, cache_lstm = lstm_stack_forward(e, state, layers)  # (B, T, Hd)
    logits, cache_out = linear_forward(hs, params["W_out"], params["b_out"])  # (B, T, Hd) x (Hd, V) -> (B, T, V)
    return logits, {"embed": cache_e, "lstm": cache_lstm, "out": cache_out, "final_state": final}


def final_state(cache) -> list[tuple[np.ndarray, np.ndarray]]:
    """The state after the last time step of a forward: a list of (h, c) per layer, each (B, Hd).
    Pass it as ``state=`` of the next contiguous batch (it carries no gradient)."""
    return cache["final_state"]


def backward(dlogits: np.ndarray, cache) -> dict[str, np.ndarray]:
    """The forward in reverse: dW_out, db_out, dhs = dlogits W_out^T; BPTT through the layers with no
    gradient into the final state (detached); dembed[v] = sum of de at the positions whose id is v."""
    grads = {}
    ### BEGIN SOLUTION
    dhs, grads["W_out"], grads["b_out"] = linear_backward(dlogits, cache["out"])  # (B, T, Hd)
    de, _, dlayers = lstm_stack_backward(dhs, cache["lstm"], dstate=None)  # (B, T, E); dh0, dc0 dropped
    for l, (dWx, dWh, db) in enumerate(dlayers):
        grads |= {f"lstm.{l}.Wx": dWx, f"lstm.{l}.Wh": dWh, f"lstm.{l}.b": db}
    _, grads["embed"] = embedding_backward(de, cache["embed"])  # (V, E)
    ### END SOLUTION
    return grads


def loss_grads_and_state(params, cfg: LSTMConfig, idx, targets, *, state=None):
    """Mean cross-entropy of targets (B, T) given idx (B, T), its gradient for every parameter, and the final
    state to carry into the next contiguous batch.  Returns (loss, grads, final_state)."""
    logits, cache = forward(params, cfg, idx, state=state)
    loss, ce_cache = cross_entropy_forward(logits, targets)
    return loss, backward(cross_entropy_backward(1.0, ce_cache), cache), final_state(cache)


def loss_and_grads(params, cfg: LSTMConfig, idx, targets, *, state=None):
    """(loss, grads) as every model provides; use loss_grads_and_state to also get the final state."""
    loss, grads, _ = loss_grads_and_state(params, cfg, idx, targets, state=state)
    return loss, grads

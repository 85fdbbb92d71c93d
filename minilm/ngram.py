"""The MLP n-gram language model (§4.2, after Bengio et al. 2003).

The next word is predicted from the n words before it only:

    P(w_i | w_{i-n}, ..., w_{i-1}) = softmax(MLP(x_i))
    x_i    = Concat(e_{i-n}, ..., e_{i-1})                       (N E,)  the n embeddings side by side
    MLP(x) = act(x W_hidden + b_hidden) W_out + b_out  [+ x W_direct]   (V,)

act is tanh (Bengio's choice) or ReLU.  ``direct=True`` adds the paper's
optional direct input-to-output connections x W_direct, a linear model of the
concatenated embeddings next to the hidden layer.  In the paper's letters:
C = embed, H = W_hidden, d = b_hidden, U = W_out, b = b_out, W = W_direct.

Parameters (a plain dict; N = cfg.context, E = cfg.n_embd, Hd = cfg.n_hidden):

    embed     (V, E)       the word vectors e
    W_hidden  (N E, Hd)    b_hidden (Hd,)
    W_out     (Hd, V)      b_out    (V,)
    W_direct  (N E, V)     only when cfg.direct

Every context in a batch is handled at once by the primitives (embedding,
linear, tanh/ReLU, cross-entropy); there is no loop over the batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from minilm.activations import relu_backward, relu_forward, tanh_backward, tanh_forward
from minilm.embedding import embedding_backward, embedding_forward
from minilm.linear import linear_backward, linear_forward
from minilm.softmax import cross_entropy_backward, cross_entropy_forward
from minilm.validate import check_ids, check_param_dict

ACTIVATIONS = {"tanh": (tanh_forward, tanh_backward), "relu": (relu_forward, relu_backward)}


@dataclass
class NgramConfig:
    vocab_size: int  # V
    context: int = 3  # N, the n previous tokens the model sees
    n_embd: int = 16  # E, size of one word vector
    n_hidden: int = 64  # Hd, hidden units
    activation: str = "tanh"  # "tanh" (Bengio's) or "relu"
    direct: bool = False  # add Bengio's direct connections x W_direct to the logits

    def __post_init__(self):
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {self.activation!r}")
        for name in ("vocab_size", "context", "n_embd", "n_hidden"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}")


def param_shapes(cfg: NgramConfig) -> dict[str, tuple[int, ...]]:
    """The shape of every parameter, by name."""
    V, NE, Hd = cfg.vocab_size, cfg.context * cfg.n_embd, cfg.n_hidden
    shapes = {"embed": (V, cfg.n_embd), "W_hidden": (NE, Hd), "b_hidden": (Hd,), "W_out": (Hd, V), "b_out": (V,)}
    if cfg.direct:
        shapes["W_direct"] = (NE, V)
    return shapes


def init_params(cfg: NgramConfig, rng: np.random.Generator, dtype=np.float32) -> dict[str, np.ndarray]:
    """Word vectors ~ N(0, 1); each weight matrix ~ N(0, 1/fan_in), so pre-activations start at unit scale;
    biases 0; W_direct 0 (the model starts as the plain MLP)."""
    s = param_shapes(cfg)
    p = {
        "embed": rng.standard_normal(s["embed"]),
        "W_hidden": rng.standard_normal(s["W_hidden"]) / np.sqrt(s["W_hidden"][0]),
        "b_hidden": np.zeros(s["b_hidden"]),
        "W_out": rng.standard_normal(s["W_out"]) / np.sqrt(cfg.n_hidden),
        "b_out": np.zeros(s["b_out"]),
    }
    if cfg.direct:
        p["W_direct"] = np.zeros(s["W_direct"])
    return {k: v.astype(dtype) for k, v in p.items()}


def check_params(params: dict[str, np.ndarray], cfg: NgramConfig) -> np.dtype:
    """Every parameter present with its shape, all float32 or all float64; returns that dtype."""
    return check_param_dict(params, param_shapes(cfg))


def check_context(ctx, cfg: NgramConfig) -> np.ndarray:
    """ctx must be a (B, N) integer array of ids in [0, V)."""
    ctx = np.asarray(ctx)
    if ctx.ndim != 2 or ctx.shape[1] != cfg.context:
        raise ValueError(f"ctx must have shape (B, {cfg.context}): B contexts of n = {cfg.context} previous tokens, "
                         f"got shape {ctx.shape}")
    return check_ids(ctx, cfg.vocab_size, "ctx")


def forward(params: dict[str, np.ndarray], cfg: NgramConfig, ctx: np.ndarray):
    """logits = act(x W_hidden + b_hidden) W_out + b_out [+ x W_direct],  x = Concat(e_{i-n}, ..., e_{i-1})  (§4.2).

    Inputs:  ctx (B, N) ids, oldest first: ctx[b] = (w_{i-n}, ..., w_{i-1}).
    Returns: logits (B, V), the unnormalised log-probabilities of w_i; cache.
    """
    check_params(params, cfg)
    ctx = check_context(ctx, cfg)
    B, N, E = ctx.shape[0], cfg.context, cfg.n_embd
    act_forward, _ = ACTIVATIONS[cfg.activation]
    cache = {"activation": cfg.activation, "shape": (B, N, E)}
    ### BEGIN SOLUTION
    e, cache["embed"] = embedding_forward(ctx, params["embed"])  # (B, N) -> (B, N, E)
    x = e.reshape(B, N * E)  # (B, N E): Concat(e_{i-n}, ..., e_{i-1})
    z, cache["hidden"] = linear_forward(x, params["W_hidden"], params["b_hidden"])  # (B, NE) x (NE, Hd) -> (B, Hd)
    a, cache["act"] = act_forward(z)  # (B, Hd)
    logits, cache["out"] = linear_forward(a, params["W_out"], params["b_out"])  # (B, Hd) x (Hd, V) -> (B, V)
    if cfg.direct:
        d, cache["direct"] = linear_forward(x, params["W_direct"])  # (B, NE) x (NE, V) -> (B, V)
        logits = logits + d  # (B, V)
    ### END SOLUTION
    return logits, cache


def backward(dlogits: np.ndarray, cache) -> dict[str, np.ndarray]:
    """The forward in reverse:

        dW_out = a^T dlogits,   db_out = sum_b dlogits,   da = dlogits W_out^T
        dz = da * act'(z),      dW_hidden = x^T dz,      db_hidden = sum_b dz
        dx = dz W_hidden^T  [+ dlogits W_direct^T],      dW_direct = x^T dlogits
        dembed[v] = sum of the E-wide blocks of dx at every (b, position) whose id is v
    """
    B, N, E = cache["shape"]
    _, act_backward = ACTIVATIONS[cache["activation"]]
    grads = {}
    ### BEGIN SOLUTION
    da, grads["W_out"], grads["b_out"] = linear_backward(dlogits, cache["out"])  # (B, Hd)
    dz = act_backward(da, cache["act"])  # (B, Hd)
    dx, grads["W_hidden"], grads["b_hidden"] = linear_backward(dz, cache["hidden"])  # (B, N E)
    if "direct" in cache:
        dx_direct, grads["W_direct"], _ = linear_backward(dlogits, cache["direct"])  # (B, N E)
        dx = dx + dx_direct  # x feeds both the hidden layer and the direct connections
    _, grads["embed"] = embedding_backward(dx.reshape(B, N, E), cache["embed"])  # (V, E)
    ### END SOLUTION
    return grads


def loss_and_grads(params: dict[str, np.ndarray], cfg: NgramConfig, ctx: np.ndarray, targets: np.ndarray):
    """Mean cross-entropy of the next tokens targets (B,) given ctx (B, N), and its gradient for every parameter."""
    logits, cache = forward(params, cfg, ctx)
    loss, ce_cache = cross_entropy_forward(logits, targets)
    return loss, backward(cross_entropy_backward(1.0, ce_cache), cache)

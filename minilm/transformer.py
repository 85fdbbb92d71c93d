"""The Transformer language model of §5.1 (its block is in minilm.block).

    x_0    = E[idx] (* sqrt(C)) + P                  token embeddings and positions (minilm.positional)
    x_l    = block_l(x_{l-1}),  l = 1..n_layer        (minilm.block)
    logits = LN_f(x_L) W_head + b_head               LN_f with pre-LN only

Two objectives of §3.2 share this one model:

* predict the next word (``causal=True``): position t attends to 0..t and
  its target is token t+1;
* the masked language model (``causal=False``, ``mask_token`` set): every
  position sees the whole sentence, some tokens are replaced by [MASK], and
  only those are predicted (``minilm.mlm`` draws the masks).

``causal=False`` with next-word targets is the text's bug: its
``Transformer`` has no mask, so position t sees token t+1, the very word it
must predict.  Training loss falls to near zero by copying, and generation,
where the next word is not there to copy, is useless.

Parameters live in one dict, keys: ``wte`` (V, C); ``wpe`` (block_size, C)
with learned positions; for each layer l, ``h{l}.attn.W_q`` ... ``h{l}.attn.b_o``,
``h{l}.ln1.gamma/beta``, ``h{l}.ffn.W1/b1/W2/b2``, ``h{l}.ln2.gamma/beta`` (no ffn, ln2 with ``ffn="none"``);
``ln_f.gamma/beta`` (pre-LN with ``final_norm``); ``lm_head.W`` (C, V) unless
the weights are tied (then W_head = wte^T); ``lm_head.b`` (V,) unless ``head_bias`` is off.

Generation can keep each layer's keys and values (``forward_cached``, the
KV cache): the logits are those of ``forward`` on the whole sequence, and a
new token costs one position's work instead of t.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from minilm.attention import causal_mask, key_padding_mask
from minilm.block import (
    ACTIVATIONS,
    block_attention_weights,
    block_backward,
    block_cached_forward,
    block_forward,
    block_shapes,
    init_block,
)
from minilm.dropout import dropout_backward, dropout_forward
from minilm.embedding import embedding_backward, embedding_forward
from minilm.layernorm import layernorm_backward, layernorm_forward
from minilm.linear import linear_backward, linear_forward
from minilm.positional import (
    learned_position_backward,
    learned_position_forward,
    sinusoidal_backward,
    sinusoidal_forward,
)
from minilm.softmax import cross_entropy_backward, cross_entropy_forward
from minilm.validate import check_ids

IGNORE_INDEX = -100  # a target equal to this does not count in the loss (unmasked or padded positions)

# ---- the model ----


@dataclass
class TransformerConfig:
    """A Transformer LM.  The switches default to the text's choices (§5.1: post-LN, ReLU,
    sinusoidal positions, sqrt(C) scaling, untied output layer), except ``causal``."""

    vocab_size: int  # V, including [MASK] for a masked LM (see minilm.mlm.mlm_config)
    block_size: int = 64  # longest sequence T the model accepts (rows of the learned position table)
    n_layer: int = 2
    n_head: int = 4  # H; must divide n_embd
    n_embd: int = 64  # C, the model width d_model
    ffn: str = "relu"  # 'relu' (the text), 'gelu', or 'none': attention-only blocks (no feed-forward, no LN2)
    norm: str = "post"  # 'post' (the text: LayerNorm after each residual sum) or 'pre' (before each sublayer)
    pos: str = "sinusoidal"  # 'sinusoidal' (the text) or 'learned'
    scale_embed: bool = True  # token embeddings * sqrt(C) before the positions are added (the text)
    tie_weights: bool = False  # output layer W_head = wte^T (one table for reading and writing tokens)
    causal: bool = True  # False: every position sees every other (the masked LM; or the text's bug for an LM)
    dropout: float = 0.0  # after the embeddings and on each sublayer's output (not on attention weights)
    final_norm: bool = True  # pre-LN only: a LayerNorm after the last block (post-LN already ends in one)
    mask_token: int | None = None  # the id of [MASK] (masked LM only)
    head_bias: bool = True  # False: the output layer has no bias b_head (GPT-2's has none)

    def __post_init__(self):
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        for name, allowed in (("ffn", (*ACTIVATIONS, "none")), ("norm", ("post", "pre")),
                              ("pos", ("sinusoidal", "learned"))):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {sorted(allowed)}, got {getattr(self, name)!r}")
        if self.n_embd % self.n_head:
            raise ValueError(f"n_head = {self.n_head} must divide n_embd = {self.n_embd}")
        if self.pos == "sinusoidal" and self.n_embd % 2:
            raise ValueError(f"sinusoidal positions need an even n_embd (sin/cos pairs), got {self.n_embd}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.mask_token is not None and not 0 <= self.mask_token < self.vocab_size:
            raise ValueError(f"mask_token {self.mask_token} is outside [0, {self.vocab_size}) (vocab_size)")


def param_shapes(cfg: TransformerConfig) -> dict[str, tuple[int, ...]]:
    """The name and shape of every parameter, in a fixed order."""
    C, V = cfg.n_embd, cfg.vocab_size
    shapes = {"wte": (V, C)}
    if cfg.pos == "learned":
        shapes["wpe"] = (cfg.block_size, C)
    for l in range(cfg.n_layer):
        shapes |= block_shapes(C, prefix=f"h{l}.", ffn=cfg.ffn != "none")
    if cfg.norm == "pre" and cfg.final_norm:
        shapes |= {"ln_f.gamma": (C,), "ln_f.beta": (C,)}
    if not cfg.tie_weights:
        shapes["lm_head.W"] = (C, V)
    if cfg.head_bias:
        shapes["lm_head.b"] = (V,)
    return shapes


def init_params(cfg: TransformerConfig, rng: np.random.Generator, dtype=np.float32) -> dict[str, np.ndarray]:
    """Every weight N(0, 1/fan_in), biases 0, LayerNorm gamma 1, beta 0.

    The token table is N(0, 1/C) too: with ``scale_embed`` its rows then
    reach the size of the sinusoidal positions (entries ~1), and tied to the
    output layer it is the fan-in initialisation of W_head.
    """
    C, V = cfg.n_embd, cfg.vocab_size
    p = {"wte": (rng.standard_normal((V, C)) / np.sqrt(C)).astype(dtype)}  # (V, C)
    if cfg.pos == "learned":
        p["wpe"] = (rng.standard_normal((cfg.block_size, C)) / np.sqrt(C)).astype(dtype)  # (block_size, C)
    for l in range(cfg.n_layer):
        p |= init_block(C, rng, dtype, prefix=f"h{l}.", ffn=cfg.ffn != "none")
    if cfg.norm == "pre" and cfg.final_norm:
        p["ln_f.gamma"], p["ln_f.beta"] = np.ones(C, dtype), np.zeros(C, dtype)
    if not cfg.tie_weights:
        p["lm_head.W"] = (rng.standard_normal((C, V)) / np.sqrt(C)).astype(dtype)  # (C, V)
    if cfg.head_bias:
        p["lm_head.b"] = np.zeros(V, dtype)  # (V,)
    return p


def _check(params, cfg, idx, pad_mask):
    shapes = param_shapes(cfg)
    missing = [k for k in shapes if k not in params]
    if missing:
        raise ValueError(f"params lack {missing} (a config of {len(shapes)} parameters)")
    for k, shape in shapes.items():
        if np.shape(params[k]) != shape:
            raise ValueError(f"params[{k!r}] must have shape {shape}, got {np.shape(params[k])}")
    dtypes = {params[k].dtype for k in shapes}
    if len(dtypes) != 1:
        raise ValueError(f"every parameter must have one dtype (no silent upcast), got {sorted(map(str, dtypes))}")
    idx = check_ids(idx, cfg.vocab_size, "idx")
    if idx.ndim != 2 or idx.shape[1] < 1:
        raise ValueError(f"idx must be a (B, T) array of token ids with T >= 1, got shape {idx.shape}")
    if idx.shape[1] > cfg.block_size:
        raise ValueError(f"sequence length T = {idx.shape[1]} exceeds block_size = {cfg.block_size}")
    if pad_mask is not None and np.shape(pad_mask) != idx.shape:
        raise ValueError(f"pad_mask must have the shape of idx {idx.shape}, got {np.shape(pad_mask)}")
    return idx


def attention_mask(cfg: TransformerConfig, T: int, pad_mask=None) -> np.ndarray | None:
    """The boolean mask every block uses: causal (T, T) and/or key padding (B, 1, 1, T), combined with &."""
    mask = causal_mask(T) if cfg.causal else None  # (T, T)
    if pad_mask is not None:
        kp = key_padding_mask(pad_mask)  # (B, 1, 1, T)
        mask = kp if mask is None else mask & kp  # (B, 1, T, T)
    return mask


def forward(params, cfg: TransformerConfig, idx, *, pad_mask=None, train: bool = False, rng=None):
    """logits = W_head^T blocks(E[idx] (* sqrt(C)) + P) + b_head  (§5.1).

    Inputs:  idx (B, T) token ids, T <= block_size; pad_mask (B, T) boolean,
             True = real token (padded keys are never attended to); train and
             rng for dropout.
    Returns: logits (B, T, V), cache (``attention_maps(cache)`` reads the weights).
    """
    idx = _check(params, cfg, idx, pad_mask)
    x, c_tok = embedding_forward(idx, params["wte"])  # (B, T, C)
    if cfg.pos == "sinusoidal":
        x, c_pos = sinusoidal_forward(x, scale_embed=cfg.scale_embed)  # (B, T, C)
    else:
        x, c_pos = learned_position_forward(x, params["wpe"], scale_embed=cfg.scale_embed)  # (B, T, C)
    x, c_drop = dropout_forward(x, cfg.dropout, rng, train)
    mask = attention_mask(cfg, idx.shape[1], pad_mask)
    c_blocks = []
    for l in range(cfg.n_layer):
        x, c = block_forward(x, params, f"h{l}.", cfg, mask, train=train, rng=rng)  # (B, T, C)
        c_blocks.append(c)
    c_lnf = None
    if cfg.norm == "pre" and cfg.final_norm:
        x, c_lnf = layernorm_forward(x, params["ln_f.gamma"], params["ln_f.beta"])  # (B, T, C)
    W_head = params["wte"].T if cfg.tie_weights else params["lm_head.W"]  # (C, V)
    logits, c_head = linear_forward(x, W_head, params.get("lm_head.b"))  # (B, T, C) x (C, V) -> (B, T, V)
    cache = {"cfg": cfg, "tok": c_tok, "pos": c_pos, "drop": c_drop, "blocks": c_blocks, "ln_f": c_lnf,
             "head": c_head}
    return logits, cache


def backward(dlogits, cache) -> dict[str, np.ndarray]:
    """The forward in reverse.  With tied weights wte gets two gradients that add:
    dE from the lookup and dW_head^T from the output layer."""
    cfg = cache["cfg"]
    ### BEGIN SOLUTION
    grads = {}
    dx, dW_head, grads["lm_head.b"] = linear_backward(dlogits, cache["head"])  # (B, T, C); db is None without a bias
    if cache["ln_f"] is not None:
        dx, grads["ln_f.gamma"], grads["ln_f.beta"] = layernorm_backward(dx, cache["ln_f"])
    for c in reversed(cache["blocks"]):
        dx, g = block_backward(dx, c)  # (B, T, C)
        grads |= g
    dx = dropout_backward(dx, cache["drop"])
    if cfg.pos == "sinusoidal":
        dx = sinusoidal_backward(dx, cache["pos"])
    else:
        dx, grads["wpe"] = learned_position_backward(dx, cache["pos"])
    _, grads["wte"] = embedding_backward(dx, cache["tok"])  # (V, C)
    if cfg.tie_weights:
        grads["wte"] = grads["wte"] + dW_head.T  # (V, C)
    else:
        grads["lm_head.W"] = dW_head  # (C, V)
    ### END SOLUTION
    return {k: grads[k] for k in param_shapes(cfg)}


def loss_and_grads(params, cfg: TransformerConfig, idx, targets, *, pad_mask=None, ignore_index: int = IGNORE_INDEX,
                   train: bool = False, rng=None):
    """Mean cross-entropy of the targets and its gradient for every parameter.

    targets (B, T): the next tokens (causal LM) or the masked tokens with
    ``ignore_index`` everywhere else (masked LM, ``minilm.mlm.mask_tokens``).
    Padded positions (pad_mask False) never count.  Returns (loss, grads).
    """
    value, c_ce, cache = _loss(params, cfg, idx, targets, pad_mask, ignore_index, train, rng)
    return value, backward(cross_entropy_backward(1.0, c_ce), cache)


def loss(params, cfg: TransformerConfig, idx, targets, *, pad_mask=None, ignore_index: int = IGNORE_INDEX,
         train: bool = False, rng=None) -> float:
    """The loss of ``loss_and_grads`` without the backward pass (evaluation, finite differences)."""
    return _loss(params, cfg, idx, targets, pad_mask, ignore_index, train, rng)[0]


def _loss(params, cfg, idx, targets, pad_mask, ignore_index, train, rng):
    logits, cache = forward(params, cfg, idx, pad_mask=pad_mask, train=train, rng=rng)  # (B, T, V)
    if pad_mask is not None:
        targets = np.where(pad_mask, targets, ignore_index)  # (B, T)
    value, c_ce = cross_entropy_forward(logits, targets, ignore_index)
    return value, c_ce, cache


def attention_maps(cache) -> np.ndarray:
    """Every attention weight of a forward pass: (n_layer, B, H, T, T), for plotting."""
    return np.stack([block_attention_weights(c) for c in cache["blocks"]])


# ---- generation with a KV cache (§6.3) ----


def forward_cached(params, cfg: TransformerConfig, idx, past=None):
    """The logits of ``forward`` for T new tokens that follow the t tokens whose keys and values
    each layer keeps in ``past`` (the KV cache):

        x_t    = E[w_t] (* sqrt(C)) + P[t]                     position t = len(past) + i, not i
        K^l, V^l = [K^l_past; K^l_new], [V^l_past; V^l_new]     each layer's new rows appended
        logits = forward(w_0 .. w_{t+T-1})[:, t:]               exactly, up to rounding

    A causal model's position s never reads a later one, so the keys and
    values of positions < t are the same whatever follows them; only the T
    new rows are computed.  ``past`` None reads a whole prompt (t = 0) and
    returns its cache; then one token at a time costs O(t C) in attention and
    O(C^2) elsewhere, against O(t C^2) for recomputing the window.

    Inputs:  idx (B, T) new token ids; past a list of n_layer pairs (K, V),
             each (B, H, t, hs), or None; t + T <= block_size.
    Returns: logits (B, T, V), present (the list of pairs, each (B, H, t + T, hs)).
    """
    if not cfg.causal:
        raise ValueError("a KV cache needs a causal model: without the mask an old position reads the new ones")
    t = 0 if past is None else past[0][0].shape[-2]  # tokens already in the cache
    idx = _check(params, cfg, idx, None) if t == 0 else check_ids(idx, cfg.vocab_size, "idx")
    if idx.ndim != 2 or t + idx.shape[1] > cfg.block_size:
        raise ValueError(f"{t} cached + {idx.shape[-1]} new tokens exceed block_size = {cfg.block_size} "
                         f"(crop the window and start a new cache)")
    x, _ = embedding_forward(idx, params["wte"])  # (B, T, C)
    if cfg.pos == "sinusoidal":
        x, _ = sinusoidal_forward(x, scale_embed=cfg.scale_embed, start=t)  # (B, T, C), positions t .. t+T-1
    else:
        x, _ = learned_position_forward(x, params["wpe"], scale_embed=cfg.scale_embed, start=t)  # (B, T, C)
    present = []
    for l in range(cfg.n_layer):
        x, kv = block_cached_forward(x, None if past is None else past[l], params, f"h{l}.", cfg)  # (B, T, C)
        present.append(kv)  # (K, V), each (B, H, t + T, hs)
    if cfg.norm == "pre" and cfg.final_norm:
        x, _ = layernorm_forward(x, params["ln_f.gamma"], params["ln_f.beta"])  # (B, T, C)
    W_head = params["wte"].T if cfg.tie_weights else params["lm_head.W"]  # (C, V)
    logits, _ = linear_forward(x, W_head, params.get("lm_head.b"))  # (B, T, C) x (C, V) -> (B, T, V)
    return logits, present

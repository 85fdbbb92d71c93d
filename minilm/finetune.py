"""Fine-tuning the masked-LM encoder for sentence classification (§7 GLUE; the recipe of BERT, Devlin et al. 2018).

Pre-training (预训练) teaches the bidirectional encoder of minilm.mlm to fill in
hidden words (§3.2).  Fine-tuning (微调) keeps that encoder, drops its output
layer, and adds a small classifier head that reads one position:

    h      = Enc(x)                        (B, T, C)   the masked LM's encoder, every block, no LM head
    pooled = tanh(h[:, 0] W_pool + b_pool) (B, C)      h at [CLS], the first token (BERT's pooler)
    logits = pooled W_cls + b_cls          (B, K)      K classes;  loss = cross-entropy of the labels

[CLS] attends to every real token in every block, so h[:, 0] can summarise
the sentence; the head is trained from scratch, the encoder from its
pre-trained weights, and the backward runs through both:

    dpooled = dlogits W_cls^T,  dz = dpooled (1 - pooled^2),  dh[:, 0] = dz W_pool^T,  dh[:, t>0] = 0,
    then the encoder's blocks in reverse (minilm.block.block_backward).

The encoder's parameters carry the masked LM's names (``wte``, ``h0.attn.W_q``,
..., ``ln_f.*``), so ``from_pretrained`` copies them as they are; the head
adds ``pool.W`` (C, C), ``pool.b`` (C,), ``cls.W`` (C, K), ``cls.b`` (K,).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from minilm import transformer as TR
from minilm.activations import tanh_backward, tanh_forward
from minilm.block import block_backward, block_forward
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

HEAD = ("pool.W", "pool.b", "cls.W", "cls.b")


@dataclass
class ClassifierConfig:
    """The encoder's settings (those of minilm.transformer.TransformerConfig) and the number of classes."""

    vocab_size: int  # V, the masked LM's vocabulary ([MASK] included)
    n_classes: int = 2  # K
    block_size: int = 64
    n_layer: int = 2
    n_head: int = 4
    n_embd: int = 64
    ffn: str = "relu"
    norm: str = "post"
    pos: str = "sinusoidal"
    scale_embed: bool = True
    dropout: float = 0.0
    final_norm: bool = True
    mask_token: int | None = None

    def __post_init__(self):
        if not isinstance(self.n_classes, int) or self.n_classes < 2:
            raise ValueError(f"n_classes must be an integer >= 2, got {self.n_classes!r}")
        self.encoder()  # checks every other field

    def encoder(self) -> TR.TransformerConfig:
        """The bidirectional TransformerConfig of the encoder (causal=False)."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "n_classes"}
        return TR.TransformerConfig(causal=False, **fields)


def param_shapes(cfg: ClassifierConfig) -> dict[str, tuple[int, ...]]:
    """The masked LM's parameters without its output layer, then the head's."""
    shapes = {k: s for k, s in TR.param_shapes(cfg.encoder()).items() if not k.startswith("lm_head.")}
    C, K = cfg.n_embd, cfg.n_classes
    return shapes | {"pool.W": (C, C), "pool.b": (C,), "cls.W": (C, K), "cls.b": (K,)}


def init_head(cfg: ClassifierConfig, rng: np.random.Generator, dtype=np.float32) -> dict[str, np.ndarray]:
    """W_pool ~ N(0, 1/C), W_cls ~ N(0, 1/C), biases 0."""
    C, K = cfg.n_embd, cfg.n_classes
    return {"pool.W": (rng.standard_normal((C, C)) / np.sqrt(C)).astype(dtype),  # (C, C)
            "pool.b": np.zeros(C, dtype),  # (C,)
            "cls.W": (rng.standard_normal((C, K)) / np.sqrt(C)).astype(dtype),  # (C, K)
            "cls.b": np.zeros(K, dtype)}  # (K,)


def init_params(cfg: ClassifierConfig, rng: np.random.Generator, dtype=np.float32) -> dict[str, np.ndarray]:
    """From scratch: the encoder as minilm.transformer.init_params, then the head."""
    enc = TR.init_params(cfg.encoder(), rng, dtype)
    return {k: v for k, v in enc.items() if not k.startswith("lm_head.")} | init_head(cfg, rng, dtype)


def from_pretrained(mlm_params: dict, mlm_cfg: TR.TransformerConfig, rng: np.random.Generator, n_classes: int = 2):
    """A classifier whose encoder is a copy of a trained masked LM's (its LM head dropped) and whose
    head is new.  Returns (params, cfg)."""
    if mlm_cfg.causal:
        raise ValueError("fine-tuning starts from a bidirectional encoder (a masked LM, causal=False)")
    fields = {f.name for f in dataclasses.fields(ClassifierConfig)} - {"n_classes"}
    cfg = ClassifierConfig(n_classes=n_classes, **{k: getattr(mlm_cfg, k) for k in fields})
    dtype = mlm_params["wte"].dtype
    enc = {k: v.copy() for k, v in mlm_params.items() if not k.startswith("lm_head.")}
    return enc | init_head(cfg, rng, dtype), cfg


# ---- the encoder: minilm.transformer's forward up to (not including) the LM head ----

def encoder_forward(params, cfg: TR.TransformerConfig, idx, *, pad_mask=None, train=False, rng=None):
    """h = blocks(E[idx] (* sqrt(C)) + P), then LN_f with pre-LN.  idx (B, T) -> h (B, T, C), cache."""
    x, c_tok = embedding_forward(idx, params["wte"])  # (B, T, C)
    if cfg.pos == "sinusoidal":
        x, c_pos = sinusoidal_forward(x, scale_embed=cfg.scale_embed)  # (B, T, C)
    else:
        x, c_pos = learned_position_forward(x, params["wpe"], scale_embed=cfg.scale_embed)  # (B, T, C)
    x, c_drop = dropout_forward(x, cfg.dropout, rng, train)
    mask = TR.attention_mask(cfg, idx.shape[1], pad_mask)  # (B, 1, 1, T) or None
    c_blocks = []
    for l in range(cfg.n_layer):
        x, c = block_forward(x, params, f"h{l}.", cfg, mask, train=train, rng=rng)  # (B, T, C)
        c_blocks.append(c)
    c_lnf = None
    if cfg.norm == "pre" and cfg.final_norm:
        x, c_lnf = layernorm_forward(x, params["ln_f.gamma"], params["ln_f.beta"])  # (B, T, C)
    return x, (cfg, c_tok, c_pos, c_drop, c_blocks, c_lnf)


def encoder_backward(dh, cache) -> dict[str, np.ndarray]:
    """The encoder in reverse: LN_f, blocks from last to first, dropout, positions, the lookup."""
    cfg, c_tok, c_pos, c_drop, c_blocks, c_lnf = cache
    grads = {}
    ### BEGIN SOLUTION
    dx = dh  # (B, T, C)
    if c_lnf is not None:
        dx, grads["ln_f.gamma"], grads["ln_f.beta"] = layernorm_backward(dx, c_lnf)
    for c in reversed(c_blocks):
        dx, g = block_backward(dx, c)  # (B, T, C)
        grads |= g
    dx = dropout_backward(dx, c_drop)
    if cfg.pos == "sinusoidal":
        dx = sinusoidal_backward(dx, c_pos)
    else:
        dx, grads["wpe"] = learned_position_backward(dx, c_pos)
    _, grads["wte"] = embedding_backward(dx, c_tok)  # (V, C)
    ### END SOLUTION
    return grads


# ---- the classifier ----

def forward(params, cfg: ClassifierConfig, idx, *, pad_mask=None, train: bool = False, rng=None):
    """logits = tanh(Enc(idx)[:, 0] W_pool + b_pool) W_cls + b_cls.

    Inputs:  idx (B, T) token ids, [CLS] first; pad_mask (B, T) boolean, True = real token.
    Returns: logits (B, K), cache.
    """
    shapes = param_shapes(cfg)
    for k, s in shapes.items():
        if k not in params or np.shape(params[k]) != s:
            raise ValueError(f"params[{k!r}] must exist with shape {s}, got "
                             f"{np.shape(params[k]) if k in params else 'nothing'}")
    idx = check_ids(idx, cfg.vocab_size, "idx")
    if idx.ndim != 2 or not 1 <= idx.shape[1] <= cfg.block_size:
        raise ValueError(f"idx must have shape (B, T) with 1 <= T <= block_size = {cfg.block_size}, got {idx.shape}")
    if pad_mask is not None and np.shape(pad_mask) != idx.shape:
        raise ValueError(f"pad_mask must have the shape of idx {idx.shape}, got {np.shape(pad_mask)}")
    enc_cfg = cfg.encoder()
    h, c_enc = encoder_forward(params, enc_cfg, idx, pad_mask=pad_mask, train=train, rng=rng)  # (B, T, C)
    z, c_pool = linear_forward(h[:, 0], params["pool.W"], params["pool.b"])  # (B, C) x (C, C) -> (B, C)
    pooled, c_tanh = tanh_forward(z)  # (B, C)
    pooled, c_drop = dropout_forward(pooled, cfg.dropout, rng, train)  # (B, C)
    logits, c_cls = linear_forward(pooled, params["cls.W"], params["cls.b"])  # (B, C) x (C, K) -> (B, K)
    return logits, {"enc": c_enc, "shape": h.shape, "pool": c_pool, "tanh": c_tanh, "drop": c_drop, "cls": c_cls}


def backward(dlogits, cache) -> dict[str, np.ndarray]:
    """The head in reverse, the gradient placed at the [CLS] position only, then the encoder."""
    grads = {}
    ### BEGIN SOLUTION
    dpooled, grads["cls.W"], grads["cls.b"] = linear_backward(dlogits, cache["cls"])  # (B, C)
    dpooled = dropout_backward(dpooled, cache["drop"])
    dz = tanh_backward(dpooled, cache["tanh"])  # (B, C)
    dh0, grads["pool.W"], grads["pool.b"] = linear_backward(dz, cache["pool"])  # (B, C)
    dh = np.zeros(cache["shape"], dtype=dh0.dtype)  # (B, T, C): only h[:, 0] was read
    dh[:, 0] = dh0
    grads |= encoder_backward(dh, cache["enc"])
    ### END SOLUTION
    return grads


def loss_and_grads(params, cfg: ClassifierConfig, idx, labels, *, pad_mask=None, train: bool = False, rng=None):
    """Mean cross-entropy of the labels (B,) in [0, K) and its gradient.  Returns (loss, grads)."""
    logits, cache = forward(params, cfg, idx, pad_mask=pad_mask, train=train, rng=rng)  # (B, K)
    value, c_ce = cross_entropy_forward(logits, np.asarray(labels))
    return value, backward(cross_entropy_backward(1.0, c_ce), cache)


def loss(params, cfg: ClassifierConfig, idx, labels, *, pad_mask=None, train: bool = False, rng=None) -> float:
    """The loss of ``loss_and_grads`` without the backward pass."""
    logits, _ = forward(params, cfg, idx, pad_mask=pad_mask, train=train, rng=rng)
    return cross_entropy_forward(logits, np.asarray(labels))[0]


def accuracy(params, cfg: ClassifierConfig, idx, labels, *, pad_mask=None, batch_size: int = 1024) -> float:
    """Share of the labels the argmax class gets right, in batches."""
    right = 0
    for i in range(0, len(labels), batch_size):
        pm = None if pad_mask is None else pad_mask[i : i + batch_size]
        logits, _ = forward(params, cfg, idx[i : i + batch_size], pad_mask=pm)  # (b, K)
        right += int((logits.argmax(-1) == np.asarray(labels[i : i + batch_size])).sum())
    return right / len(labels)

"""The encoder-decoder Transformer (Vaswani et al. 2017), the model of §6.1 机器翻译 (machine translation).

    encoder (编码器)   m   = Enc(E_src[x] (* sqrt(C)) + P)        blocks of minilm.block, source padding masked
    decoder (解码器)   h   = Dec(E_tgt[y_<t] (* sqrt(C)) + P, m)   causal self-attention, then cross-attention to m
    output             logits = LN_f(h) W_head + b_head           p(y_t | y_<t, x) = softmax(logits_t)

A decoder block has three sublayers where the encoder's has two; the middle
one is cross-attention (交叉注意力): queries from the decoder, keys and values
from the encoder output m, so each target position reads the whole source.

    post-LN:  h1 = LN1(y + SelfAttn(y, causal)),  h2 = LN2(h1 + CrossAttn(h1, m)),  out = LN3(h2 + FFN(h2))
    pre-LN:   h1 = y + SelfAttn(LN1(y)),          h2 = h1 + CrossAttn(LN2(h1), m),  out = h2 + FFN(LN3(h2))

Masks (True = may attend): encoder self-attention and cross-attention skip
padded source positions (key padding); decoder self-attention is causal, which
also keeps every real target position away from the padding after it.

Training uses teacher forcing (教师强制): the decoder reads the true target
shifted right, <bos> y_1 .. y_{T-1}, and predicts y_1 .. y_T <eos> at every
position at once; ``loss_and_grads`` takes tgt = <bos> y <eos> (padded) and
splits it.  Translating, it reads its own output instead (minilm.translate).

Backward: the encoder output m feeds the cross-attention of every decoder
block, so its gradient is the sum of their key/value gradients.

Vocabularies: separate tables ``src.wte`` (V_src, C) and ``tgt.wte`` (V, C),
or, with ``share_embeddings``, one table ``wte`` for a joint vocabulary that
both sides read (V_src = V); its gradient sums the two lookups.

Parameters: the embedding table(s); ``enc{l}.`` + a block's keys
(minilm.block); ``dec{l}.self.*``, ``dec{l}.cross.*`` (minilm.attention's
W_q .. b_o), ``dec{l}.ln1/ln2/ln3.gamma/beta``, ``dec{l}.ffn.W1/b1/W2/b2``;
``enc.ln_f.*`` and ``dec.ln_f.*`` with pre-LN; ``head.W`` (C, V), ``head.b`` (V,).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from minilm.attention import (
    MHA_KEYS,
    causal_mask,
    init_mha,
    key_padding_mask,
    mha_backward,
    mha_cached_forward,
    mha_forward,
    mha_params,
    mha_weights,
)
from minilm.block import ACTIVATIONS, block_backward, block_forward, block_shapes, ffn_backward, ffn_forward, init_block
from minilm.dropout import dropout_backward, dropout_forward
from minilm.embedding import embedding_backward, embedding_forward
from minilm.layernorm import layernorm_backward, layernorm_forward
from minilm.linear import linear_backward, linear_forward
from minilm.positional import sinusoidal_backward, sinusoidal_forward
from minilm.softmax import cross_entropy_backward, cross_entropy_forward
from minilm.validate import check_ids, check_param_shapes

IGNORE_INDEX = -100  # a target equal to this (padding) does not count in the loss


@dataclass
class Seq2SeqConfig:
    """An encoder-decoder Transformer; widths, norm and activation as the text's block (§5.1)."""

    vocab_size: int  # V, the target vocabulary (the logits)
    src_vocab_size: int  # V_src, the source vocabulary (= V with share_embeddings)
    block_size: int = 32  # longest source or target sequence
    n_layer: int = 2  # encoder blocks
    n_dec_layer: int = 2  # decoder blocks
    n_head: int = 4  # H; must divide n_embd
    n_embd: int = 64  # C
    ffn: str = "relu"  # 'relu' (the text) or 'gelu'
    norm: str = "post"  # 'post' (the text, and Vaswani et al.) or 'pre'
    scale_embed: bool = True  # embeddings * sqrt(C) before the sinusoidal positions (the text)
    share_embeddings: bool = False  # one table for a joint source/target vocabulary
    dropout: float = 0.0  # after the embeddings and on each sublayer's output
    pad_id: int = 0  # source id that marks padding (masked in attention)

    def __post_init__(self):
        for name in ("vocab_size", "src_vocab_size", "block_size", "n_layer", "n_dec_layer", "n_head", "n_embd"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if self.ffn not in ACTIVATIONS or self.norm not in ("post", "pre"):
            raise ValueError(f"ffn must be one of {sorted(ACTIVATIONS)} and norm 'post' or 'pre', "
                             f"got {self.ffn!r} and {self.norm!r}")
        if self.n_embd % self.n_head or self.n_embd % 2:
            raise ValueError(f"n_embd = {self.n_embd} must be even (sin/cos pairs) and divisible by "
                             f"n_head = {self.n_head}")
        if self.share_embeddings and self.src_vocab_size != self.vocab_size:
            raise ValueError(f"share_embeddings needs one vocabulary: src_vocab_size = {self.src_vocab_size}, "
                             f"vocab_size = {self.vocab_size}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


# ---- the decoder block ----

DEC_LN = ("ln1", "ln2", "ln3")


def _ln(params, name):
    return params[name + ".gamma"], params[name + ".beta"]


def decoder_block_forward(y, mem, params, prefix: str, cfg, self_mask, cross_mask, *, train=False, rng=None):
    """One decoder block: causal self-attention, cross-attention to the encoder output, feed-forward.

        post:  h1 = LN1(y + SA(y)),   h2 = LN2(h1 + CA(h1, m)),   out = LN3(h2 + FFN(h2))
        pre:   h1 = y + SA(LN1(y)),   h2 = h1 + CA(LN2(h1), m),   out = h2 + FFN(LN3(h2))

    Inputs:  y (B, T, C); mem (B, S, C); self_mask broadcastable to (B, H, T, T);
             cross_mask broadcastable to (B, H, T, S).  Returns out (B, T, C), cache.
    """
    sa, ca = mha_params(params, prefix + "self."), mha_params(params, prefix + "cross.")
    ffn_w = [params[prefix + "ffn." + k] for k in ("W1", "b1", "W2", "b2")]
    ln1, ln2, ln3 = (_ln(params, prefix + n) for n in DEC_LN)
    c = {"prefix": prefix, "norm": cfg.norm}
    if cfg.norm == "post":
        a, c["self"] = mha_forward(y, y, *sa, cfg.n_head, self_mask)  # (B, T, C)
        a, c["d1"] = dropout_forward(a, cfg.dropout, rng, train)
        h1, c["ln1"] = layernorm_forward(y + a, *ln1)  # (B, T, C)
        b, c["cross"] = mha_forward(h1, mem, *ca, cfg.n_head, cross_mask)  # (B, T, C), keys and values from mem
        b, c["d2"] = dropout_forward(b, cfg.dropout, rng, train)
        h2, c["ln2"] = layernorm_forward(h1 + b, *ln2)  # (B, T, C)
        f, c["ffn"] = ffn_forward(h2, *ffn_w, cfg.ffn)  # (B, T, C)
        f, c["d3"] = dropout_forward(f, cfg.dropout, rng, train)
        out, c["ln3"] = layernorm_forward(h2 + f, *ln3)  # (B, T, C)
    else:
        n1, c["ln1"] = layernorm_forward(y, *ln1)  # (B, T, C)
        a, c["self"] = mha_forward(n1, n1, *sa, cfg.n_head, self_mask)  # (B, T, C)
        a, c["d1"] = dropout_forward(a, cfg.dropout, rng, train)
        h1 = y + a  # (B, T, C)
        n2, c["ln2"] = layernorm_forward(h1, *ln2)  # (B, T, C)
        b, c["cross"] = mha_forward(n2, mem, *ca, cfg.n_head, cross_mask)  # (B, T, C)
        b, c["d2"] = dropout_forward(b, cfg.dropout, rng, train)
        h2 = h1 + b  # (B, T, C)
        n3, c["ln3"] = layernorm_forward(h2, *ln3)  # (B, T, C)
        f, c["ffn"] = ffn_forward(n3, *ffn_w, cfg.ffn)  # (B, T, C)
        f, c["d3"] = dropout_forward(f, cfg.dropout, rng, train)
        out = h2 + f  # (B, T, C)
    return out, c


def decoder_block_backward(dout, cache):
    """The block in reverse.  Each residual sum sends its gradient down both paths; the
    self-attention's query and key/value gradients add (one input), the cross-attention's
    query gradient goes to h1 and its key/value gradient to the encoder output:

        post:  ds3 = LN3'(dout);  dh2 = ds3 + FFN'(ds3);  ds2 = LN2'(dh2);  dh1 = ds2 + CA_q'(ds2);
               dmem = CA_kv'(ds2);  ds1 = LN1'(dh1);  dy = ds1 + SA_q'(ds1) + SA_kv'(ds1)
        pre:   dh2 = dout + LN3'(FFN'(dout));  dh1 = dh2 + LN2'(CA_q'(dh2));  dmem = CA_kv'(dh2);
               dy = dh1 + LN1'(SA_q'(dh1) + SA_kv'(dh1))

    Returns dy (B, T, C), dmem (B, S, C), grads (keyed like the block's parameters).
    """
    c, g = cache, {}
    ### BEGIN SOLUTION
    if c["norm"] == "post":
        ds3, g["ln3.gamma"], g["ln3.beta"] = layernorm_backward(dout, c["ln3"])  # gradient of h2 + f
        dh2, *dffn = ffn_backward(dropout_backward(ds3, c["d3"]), c["ffn"])
        dh2 = dh2 + ds3  # the residual path h2 -> h2 + f
        ds2, g["ln2.gamma"], g["ln2.beta"] = layernorm_backward(dh2, c["ln2"])  # gradient of h1 + b
        dh1, dmem, *dcross = mha_backward(dropout_backward(ds2, c["d2"]), c["cross"])
        dh1 = dh1 + ds2  # the residual path h1 -> h1 + b
        ds1, g["ln1.gamma"], g["ln1.beta"] = layernorm_backward(dh1, c["ln1"])  # gradient of y + a
        dq, dkv, *dself = mha_backward(dropout_backward(ds1, c["d1"]), c["self"])
        dy = ds1 + dq + dkv  # residual path + the queries' and keys/values' paths
    else:
        dn3, *dffn = ffn_backward(dropout_backward(dout, c["d3"]), c["ffn"])
        dh2, g["ln3.gamma"], g["ln3.beta"] = layernorm_backward(dn3, c["ln3"])
        dh2 = dh2 + dout  # the residual path h2 -> out
        dn2, dmem, *dcross = mha_backward(dropout_backward(dh2, c["d2"]), c["cross"])
        dh1, g["ln2.gamma"], g["ln2.beta"] = layernorm_backward(dn2, c["ln2"])
        dh1 = dh1 + dh2  # the residual path h1 -> h2
        dq, dkv, *dself = mha_backward(dropout_backward(dh1, c["d1"]), c["self"])
        dy, g["ln1.gamma"], g["ln1.beta"] = layernorm_backward(dq + dkv, c["ln1"])
        dy = dy + dh1  # the residual path y -> h1
    ### END SOLUTION
    g |= {"self." + k: d for k, d in zip(MHA_KEYS, dself, strict=True)}
    g |= {"cross." + k: d for k, d in zip(MHA_KEYS, dcross, strict=True)}
    g |= {"ffn." + k: d for k, d in zip(("W1", "b1", "W2", "b2"), dffn, strict=True)}
    return dy, dmem, {c["prefix"] + k: v for k, v in g.items()}


def decoder_block_cached_forward(y, past, mem, params, prefix: str, cfg, cross_mask):
    """The decoder block (no dropout) on T new target positions whose causal self-attention also
    reads the keys and values ``past`` of the t positions before them (minilm.attention.mha_cached_forward):

        post:  h1 = LN1(y + SA(y | past)),   h2 = LN2(h1 + CA(h1, m)),   out = LN3(h2 + FFN(h2))
        pre:   h1 = y + SA(LN1(y) | past),   h2 = h1 + CA(LN2(h1), m),   out = h2 + FFN(LN3(h2))

    Cross-attention reads the encoder output m afresh (S source positions, a
    dozen tokens here): only the self-attention's keys and values grow with
    the output.  Inputs: y (B, T, C); past (K, V), each (B, H, t, hs), or None;
    mem (B, S, C); cross_mask broadcastable to (B, H, T, S).
    Returns: out (B, T, C), present (K, V), each (B, H, t + T, hs).
    """
    sa, ca = mha_params(params, prefix + "self."), mha_params(params, prefix + "cross.")
    ffn_w = [params[prefix + "ffn." + k] for k in ("W1", "b1", "W2", "b2")]
    ln1, ln2, ln3 = (_ln(params, prefix + n) for n in DEC_LN)
    if cfg.norm == "post":
        a, present = mha_cached_forward(y, past, *sa, cfg.n_head)  # (B, T, C)
        h1, _ = layernorm_forward(y + a, *ln1)  # (B, T, C)
        b, _ = mha_forward(h1, mem, *ca, cfg.n_head, cross_mask)  # (B, T, C)
        h2, _ = layernorm_forward(h1 + b, *ln2)  # (B, T, C)
        f, _ = ffn_forward(h2, *ffn_w, cfg.ffn)  # (B, T, C)
        out, _ = layernorm_forward(h2 + f, *ln3)  # (B, T, C)
    else:
        n1, _ = layernorm_forward(y, *ln1)  # (B, T, C)
        a, present = mha_cached_forward(n1, past, *sa, cfg.n_head)  # (B, T, C)
        h1 = y + a  # (B, T, C)
        n2, _ = layernorm_forward(h1, *ln2)  # (B, T, C)
        b, _ = mha_forward(n2, mem, *ca, cfg.n_head, cross_mask)  # (B, T, C)
        h2 = h1 + b  # (B, T, C)
        n3, _ = layernorm_forward(h2, *ln3)  # (B, T, C)
        f, _ = ffn_forward(n3, *ffn_w, cfg.ffn)  # (B, T, C)
        out = h2 + f  # (B, T, C)
    return out, present


def decoder_block_shapes(C: int, prefix: str = "") -> dict[str, tuple[int, ...]]:
    """Name and shape of each decoder-block parameter, F = 4C."""
    enc = block_shapes(C)  # attn.*, ln1.*, ffn.*, ln2.*
    shapes = {prefix + "self." + k[5:]: s for k, s in enc.items() if k.startswith("attn.")}
    shapes |= {prefix + "cross." + k[5:]: s for k, s in enc.items() if k.startswith("attn.")}
    shapes |= {prefix + n + "." + k: (C,) for n in DEC_LN for k in ("gamma", "beta")}
    return shapes | {prefix + k: s for k, s in enc.items() if k.startswith("ffn.")}


def init_decoder_block(C: int, rng: np.random.Generator, dtype=np.float32, prefix: str = "") -> dict:
    """Weights N(0, 1/fan_in), biases 0, LayerNorm gamma 1 and beta 0 (as minilm.block.init_block)."""
    p = init_mha(C, rng, dtype, prefix + "self.") | init_mha(C, rng, dtype, prefix + "cross.")
    for n in DEC_LN:
        p[prefix + n + ".gamma"], p[prefix + n + ".beta"] = np.ones(C, dtype), np.zeros(C, dtype)
    ffn = init_block(C, rng, dtype)  # the same FFN initialisation as an encoder block
    return p | {prefix + k: v for k, v in ffn.items() if k.startswith("ffn.")}


# ---- the model ----

def param_shapes(cfg: Seq2SeqConfig) -> dict[str, tuple[int, ...]]:
    """The name and shape of every parameter, in a fixed order."""
    C = cfg.n_embd
    shapes = {"wte": (cfg.vocab_size, C)} if cfg.share_embeddings else \
        {"src.wte": (cfg.src_vocab_size, C), "tgt.wte": (cfg.vocab_size, C)}
    for l in range(cfg.n_layer):
        shapes |= block_shapes(C, prefix=f"enc{l}.")
    for l in range(cfg.n_dec_layer):
        shapes |= decoder_block_shapes(C, prefix=f"dec{l}.")
    if cfg.norm == "pre":
        shapes |= {f"{s}.ln_f.{k}": (C,) for s in ("enc", "dec") for k in ("gamma", "beta")}
    return shapes | {"head.W": (C, cfg.vocab_size), "head.b": (cfg.vocab_size,)}


def init_params(cfg: Seq2SeqConfig, rng: np.random.Generator, dtype=np.float32) -> dict[str, np.ndarray]:
    """Embeddings N(0, 1/C) (times sqrt(C) they match the positions, see minilm.positional), weights
    N(0, 1/fan_in), biases 0, LayerNorm gamma 1, beta 0."""
    C = cfg.n_embd
    p = {k: (rng.standard_normal(s) / np.sqrt(C)).astype(dtype)  # (V, C)
         for k, s in param_shapes(cfg).items() if k.endswith("wte")}
    for l in range(cfg.n_layer):
        p |= init_block(C, rng, dtype, prefix=f"enc{l}.")
    for l in range(cfg.n_dec_layer):
        p |= init_decoder_block(C, rng, dtype, prefix=f"dec{l}.")
    if cfg.norm == "pre":
        for s in ("enc", "dec"):
            p[f"{s}.ln_f.gamma"], p[f"{s}.ln_f.beta"] = np.ones(C, dtype), np.zeros(C, dtype)
    p["head.W"] = (rng.standard_normal((C, cfg.vocab_size)) / np.sqrt(C)).astype(dtype)  # (C, V)
    p["head.b"] = np.zeros(cfg.vocab_size, dtype)  # (V,)
    return p


def _check_params(params, cfg):
    shapes = param_shapes(cfg)
    check_param_shapes(params, shapes)
    if len({params[k].dtype for k in shapes}) != 1:
        raise ValueError("every parameter must have one dtype (no silent upcast)")


def _check_seq(ids, V, name, cfg):
    ids = check_ids(ids, V, name)
    if ids.ndim != 2 or ids.shape[1] < 1:
        raise ValueError(f"{name} must be a (B, T) array of token ids with T >= 1, got shape {ids.shape}")
    if ids.shape[1] > cfg.block_size:
        raise ValueError(f"{name} has length {ids.shape[1]}, more than block_size = {cfg.block_size}")
    return ids


def _embed(ids, table, cfg, train, rng):
    x, c_tok = embedding_forward(ids, table)  # (B, T, C)
    x, c_pos = sinusoidal_forward(x, scale_embed=cfg.scale_embed)  # (B, T, C)
    x, c_drop = dropout_forward(x, cfg.dropout, rng, train)
    return x, (c_tok, c_pos, c_drop)


def _embed_backward(dx, cache):
    c_tok, c_pos, c_drop = cache
    dx = sinusoidal_backward(dropout_backward(dx, c_drop), c_pos)  # (B, T, C)
    return embedding_backward(dx, c_tok)[1]  # (V, C)


def _table(params, cfg, side):
    return params["wte"] if cfg.share_embeddings else params[side + ".wte"]


def encode(params, cfg: Seq2SeqConfig, src, *, train: bool = False, rng=None):
    """m = Enc(E_src[src] (* sqrt(C)) + P): src (B, S) ids -> m (B, S, C), cache.

    Padded source positions (id cfg.pad_id) are never attended to.
    """
    _check_params(params, cfg)
    src = _check_seq(src, cfg.src_vocab_size, "src", cfg)
    keep = src != cfg.pad_id  # (B, S)
    x, c_emb = _embed(src, _table(params, cfg, "src"), cfg, train, rng)  # (B, S, C)
    mask = key_padding_mask(keep)  # (B, 1, 1, S)
    c_blocks = []
    for l in range(cfg.n_layer):
        x, c = block_forward(x, params, f"enc{l}.", cfg, mask, train=train, rng=rng)  # (B, S, C)
        c_blocks.append(c)
    c_lnf = None
    if cfg.norm == "pre":
        x, c_lnf = layernorm_forward(x, *_ln(params, "enc.ln_f"))  # (B, S, C)
    return x, {"emb": c_emb, "blocks": c_blocks, "ln_f": c_lnf, "keep": keep}


def decode(params, cfg: Seq2SeqConfig, mem, keep, tgt_in, *, train: bool = False, rng=None):
    """logits = Dec(E_tgt[tgt_in] (* sqrt(C)) + P, m) W_head + b_head.

    Inputs:  mem (B, S, C) the encoder output; keep (B, S) boolean, True = real
             source token; tgt_in (B, T) ids (<bos> and the target so far).
    Returns: logits (B, T, V), cache.
    """
    tgt_in = _check_seq(tgt_in, cfg.vocab_size, "tgt_in", cfg)
    y, c_emb = _embed(tgt_in, _table(params, cfg, "tgt"), cfg, train, rng)  # (B, T, C)
    self_mask = causal_mask(tgt_in.shape[1])  # (T, T)
    cross_mask = key_padding_mask(keep)  # (B, 1, 1, S)
    c_blocks = []
    for l in range(cfg.n_dec_layer):
        y, c = decoder_block_forward(y, mem, params, f"dec{l}.", cfg, self_mask, cross_mask, train=train, rng=rng)
        c_blocks.append(c)
    c_lnf = None
    if cfg.norm == "pre":
        y, c_lnf = layernorm_forward(y, *_ln(params, "dec.ln_f"))  # (B, T, C)
    logits, c_head = linear_forward(y, params["head.W"], params["head.b"])  # (B, T, C) x (C, V) -> (B, T, V)
    return logits, {"emb": c_emb, "blocks": c_blocks, "ln_f": c_lnf, "head": c_head}


def decode_cached(params, cfg: Seq2SeqConfig, mem, keep, tgt_new, past=None):
    """The logits of ``decode`` for T new target tokens after the t whose self-attention keys and
    values each decoder block keeps in ``past`` (the KV cache; minilm.transformer.forward_cached
    for the same idea in the LM).  Positions are t .. t + T - 1.

    Inputs:  mem (B, S, C), keep (B, S) as decode; tgt_new (B, T) ids; past a list of
             n_dec_layer pairs (K, V), each (B, H, t, hs), or None.
    Returns: logits (B, T, V), present (the pairs, each (B, H, t + T, hs)).
    """
    t = 0 if past is None else past[0][0].shape[-2]
    tgt_new = check_ids(tgt_new, cfg.vocab_size, "tgt_new")
    if tgt_new.ndim != 2 or t + tgt_new.shape[1] > cfg.block_size:
        raise ValueError(f"{t} cached + {tgt_new.shape[-1]} new target tokens exceed block_size = {cfg.block_size}")
    y, _ = embedding_forward(tgt_new, _table(params, cfg, "tgt"))  # (B, T, C)
    y, _ = sinusoidal_forward(y, scale_embed=cfg.scale_embed, start=t)  # (B, T, C), positions t .. t+T-1
    cross_mask = key_padding_mask(keep)  # (B, 1, 1, S)
    present = []
    for l in range(cfg.n_dec_layer):
        y, kv = decoder_block_cached_forward(y, None if past is None else past[l], mem, params, f"dec{l}.", cfg,
                                             cross_mask)  # (B, T, C)
        present.append(kv)
    if cfg.norm == "pre":
        y, _ = layernorm_forward(y, *_ln(params, "dec.ln_f"))  # (B, T, C)
    logits, _ = linear_forward(y, params["head.W"], params["head.b"])  # (B, T, C) x (C, V) -> (B, T, V)
    return logits, present


def forward(params, cfg: Seq2SeqConfig, src, tgt_in, *, train: bool = False, rng=None):
    """logits (B, T, V) of p(y_t | y_<t, x) for every target position at once (teacher forcing).

    Inputs:  src (B, S) source ids, padded with cfg.pad_id; tgt_in (B, T) the
             decoder's input, <bos> y_1 .. y_{T-1}.  Returns logits, cache.
    """
    mem, c_enc = encode(params, cfg, src, train=train, rng=rng)  # (B, S, C)
    logits, c_dec = decode(params, cfg, mem, c_enc["keep"], tgt_in, train=train, rng=rng)  # (B, T, V)
    return logits, {"cfg": cfg, "enc": c_enc, "dec": c_dec}


def backward(dlogits, cache) -> dict[str, np.ndarray]:
    """The forward in reverse: head, decoder blocks (collecting dm from each cross-attention),
    target embedding, then the encoder from dm, then the source embedding.  With shared
    embeddings the one table's gradient is the sum of the two lookups'."""
    cfg, c_enc, c_dec = cache["cfg"], cache["enc"], cache["dec"]
    grads = {}
    ### BEGIN SOLUTION
    dy, grads["head.W"], grads["head.b"] = linear_backward(dlogits, c_dec["head"])  # (B, T, C)
    if c_dec["ln_f"] is not None:
        dy, grads["dec.ln_f.gamma"], grads["dec.ln_f.beta"] = layernorm_backward(dy, c_dec["ln_f"])
    dmem = 0  # sum over decoder blocks of the cross-attention's key/value gradient
    for c in reversed(c_dec["blocks"]):
        dy, dm, g = decoder_block_backward(dy, c)  # (B, T, C), (B, S, C)
        dmem, grads = dmem + dm, grads | g
    d_tgt = _embed_backward(dy, c_dec["emb"])  # (V, C)
    dx = dmem  # (B, S, C)
    if c_enc["ln_f"] is not None:
        dx, grads["enc.ln_f.gamma"], grads["enc.ln_f.beta"] = layernorm_backward(dx, c_enc["ln_f"])
    for c in reversed(c_enc["blocks"]):
        dx, g = block_backward(dx, c)  # (B, S, C)
        grads |= g
    d_src = _embed_backward(dx, c_enc["emb"])  # (V_src, C)
    ### END SOLUTION
    if cfg.share_embeddings:
        grads["wte"] = d_src + d_tgt  # (V, C), one table read twice
    else:
        grads["src.wte"], grads["tgt.wte"] = d_src, d_tgt
    return {k: grads[k] for k in param_shapes(cfg)}


def _split_target(tgt, cfg):
    tgt = np.asarray(tgt)
    if tgt.ndim != 2 or tgt.shape[1] < 2:
        raise ValueError(f"tgt must be a (B, T + 1) array <bos> y <eos> with T >= 1, got shape {tgt.shape}")
    targets = np.where(tgt[:, 1:] == cfg.pad_id, IGNORE_INDEX, tgt[:, 1:])  # (B, T), padding does not count
    return tgt[:, :-1], targets


def _loss(params, cfg, src, tgt, train, rng):
    tgt_in, targets = _split_target(tgt, cfg)
    logits, cache = forward(params, cfg, src, tgt_in, train=train, rng=rng)  # (B, T, V)
    value, c_ce = cross_entropy_forward(logits, targets, IGNORE_INDEX)
    return value, c_ce, cache


def loss_and_grads(params, cfg: Seq2SeqConfig, src, tgt, *, train: bool = False, rng=None):
    """Mean cross-entropy of the target tokens under teacher forcing, and its gradient.

    src (B, S) source ids; tgt (B, T + 1) = <bos> y_1 .. y_n <eos>, padded with
    cfg.pad_id.  The decoder reads tgt[:, :-1] and predicts tgt[:, 1:];
    padded targets do not count.  Returns (loss, grads).
    """
    value, c_ce, cache = _loss(params, cfg, src, tgt, train, rng)
    return value, backward(cross_entropy_backward(1.0, c_ce), cache)


def loss(params, cfg: Seq2SeqConfig, src, tgt, *, train: bool = False, rng=None) -> float:
    """The loss of ``loss_and_grads`` without the backward pass."""
    return _loss(params, cfg, src, tgt, train, rng)[0]


def next_logits_fn(params, cfg: Seq2SeqConfig, src, *, cache: bool = True):
    """For minilm.translate: encode src (n, S) once, then map (prefix (N, t), rows (N,)) to the
    next-token logits (N, V) of each prefix, prefix i translating source row rows[i].

    With ``cache`` the decoder keeps each prefix's self-attention keys and
    values from the previous call and reads only its newest token.  A prefix
    is recognised by its source row and tokens: prefix i extends the previous
    call's prefix of the same row equal to prefix[i, :-1] (the keys and values
    depend on the source through cross-attention), so greedy decoding (rows kept) and beam search
    (rows reordered and repeated by their parent beams) both find their
    cache rows without telling.  A prefix with no parent there is decoded
    whole.  ``cache=False`` reruns the decoder over every prefix each step,
    the reference the cached logits equal.
    """
    mem, c_enc = encode(params, cfg, src)  # (n, S, C)
    keep = c_enc["keep"]  # (n, S)
    state = {"rows": {}, "past": None}  # the previous call's prefixes (tuple -> row) and their cache

    def full(prefix, rows):
        logits, _ = decode(params, cfg, mem[rows], keep[rows], prefix)  # (N, t, V)
        return logits[:, -1]  # (N, V)

    def cached(prefix, rows):
        rows = np.asarray(rows)  # (N,)
        parent = [state["rows"].get((r, tuple(p[:-1]))) for r, p in zip(rows.tolist(), prefix.tolist(), strict=True)]
        if state["past"] is not None and None not in parent:
            past = [(K[parent], V[parent]) for K, V in state["past"]]  # (N, H, t - 1, hs) each
            logits, present = decode_cached(params, cfg, mem[rows], keep[rows], prefix[:, -1:], past)  # (N, 1, V)
        else:
            logits, present = decode_cached(params, cfg, mem[rows], keep[rows], prefix)  # (N, t, V)
        state["rows"] = {(r, tuple(p)): i for i, (r, p) in enumerate(zip(rows.tolist(), prefix.tolist(), strict=True))}
        state["past"] = present
        return logits[:, -1]  # (N, V)

    return cached if cache else full


def cross_attention_maps(cache) -> np.ndarray:
    """Cross-attention weights of a forward pass: (n_dec_layer, B, H, T, S) -- which source
    position each target position reads."""
    return np.stack([mha_weights(c["cross"]) for c in cache["dec"]["blocks"]])

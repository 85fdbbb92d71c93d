"""Listen, Attend and Spell (Chan et al. 2015/2016), the speech recogniser of §6.2 语音识别.

The text calls LAS Transformer-based; it is not.  LAS is an encoder-decoder
(编码器/解码器) of LSTMs with attention, published (arXiv 1508.01211, August
2015; ICASSP 2016) before Transformers were used for speech (Speech-Transformer,
Dong et al., 2018).

    Listener (编码器)  h = pBLSTM(... pBLSTM(BLSTM(x)))                  x (B, T, M) log-mel frames
        BLSTM        [LSTM_fwd(x)_t ; LSTM_bwd(reverse(x))_{reverse(t)}]   (B, T, 2Hd)
        pBLSTM       the same on [h_{2u} ; h_{2u+1}], adjacent frames joined:
                     (B, T, 2Hd) -> (B, T/2, 4Hd) -> (B, T/2, 2Hd)
                     n_pyramid of them shorten T by 2^n_pyramid: U = T / 2^n_pyramid listener states
    Attend         e_{i,u} = (s_i W_q) . (h_u W_k) / sqrt(A),  alpha_i = softmax_u(e_i),  c_i = sum_u alpha_{i,u} h_u
    Speller (解码器)  s_i = LSTM([E y_{i-1} ; c_{i-1}], s_{i-1})
                     p(y_i | x, y_<i) = softmax([s_i ; c_i] W_out + b_out)

The attention is the paper's content-based attention with linear phi and psi
(projected dot-product): the keys h W_k are computed once per utterance, so
a decoding step costs one (B, A) x (B, U, A) product, and it reuses
minilm.attention's scaled dot-product with its padding mask.  The paper's
MLP phi, psi add a ReLU layer to each side and change nothing else.

Padding: utterances of unequal length share a batch.  Each row's backward
direction reverses only its first T_b frames (``reverse_time``); outputs past
a row's end are set to 0 (so a joined pair at an odd end is [h_last ; 0]),
and the attention never looks past a row's U_b = ceil(T_b / 2^n) states.  A
row's result does not depend on what else is in the batch.

Training uses teacher forcing (教师强制): the speller reads the true previous
characters.  The backward runs through every step in reverse: the gradient of
c_i arrives from the output layer at step i and, because c_i is fed into step
i+1, from that step's input as well; h_u collects gradient from every step's
attention, as a value and through its key.

Shapes: B batch, T frames, M mel bands, U listener states, S transcript
length, Hd listener LSTM units per direction, Hs speller units, E character
embedding, A attention width, V characters.

Parameters: ``listen{l}.fwd.Wx/Wh/b`` and ``listen{l}.bwd.*`` for l = 0 ..
n_pyramid (layer 0 the BLSTM, the others pyramidal); ``embed`` (V, E);
``spell.Wx`` (E + 2Hd, 4Hs), ``spell.Wh``, ``spell.b``; ``att.W_q`` (Hs, A),
``att.W_k`` (2Hd, A); ``out.W`` (Hs + 2Hd, V), ``out.b`` (V,).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from minilm.attention import attention_backward, attention_forward, attention_weights
from minilm.embedding import embedding_backward, embedding_forward
from minilm.linear import linear_backward, linear_forward
from minilm.lstm import lstm_backward, lstm_forward, lstm_gates_backward, lstm_gates_forward, lstm_init
from minilm.softmax import cross_entropy_backward, cross_entropy_forward
from minilm.validate import check_ids, check_param_shapes

IGNORE_INDEX = -100  # a target equal to this (padding) does not count in the loss


@dataclass
class LASConfig:
    """A small LAS for spoken digits; the paper's is 256 units per direction, 3 pyramid layers, 2 speller layers."""

    vocab_size: int = 28  # V: <eos> and the 27 characters a-z and space
    n_mels: int = 40  # M, features per frame
    listener_hidden: int = 64  # Hd per direction
    n_pyramid: int = 2  # pyramidal layers: time reduced 2^n_pyramid times
    speller_hidden: int = 128  # Hs
    n_embd: int = 16  # E
    attention: int = 64  # A

    def __post_init__(self):
        for name in ("vocab_size", "n_mels", "listener_hidden", "speller_hidden", "n_embd", "attention"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if not isinstance(self.n_pyramid, int) or self.n_pyramid < 0:
            raise ValueError(f"n_pyramid must be an integer >= 0, got {self.n_pyramid!r}")

    @property
    def reduction(self) -> int:
        return 2**self.n_pyramid


# ---- the listener: bidirectional LSTM over padded rows, and the pyramid ----

def reverse_time(x: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """out[b, t] = x[b, T_b - 1 - t] for t < T_b, x[b, t] after the row's end:  (B, T, ...) -> (B, T, ...).

    A permutation that is its own inverse, so its backward is itself: dx = reverse_time(dout, lengths).
    """
    B, T = x.shape[:2]
    t = np.arange(T)[None, :]  # (1, T)
    L = np.asarray(lengths)[:, None]  # (B, 1)
    idx = np.where(t < L, L - 1 - t, t)  # (B, T)
    return x[np.arange(B)[:, None], idx]  # (B, T, ...)


def time_mask(lengths: np.ndarray, T: int) -> np.ndarray:
    """(B, T) boolean, True at t < T_b."""
    return np.arange(T)[None, :] < np.asarray(lengths)[:, None]  # (B, T)


def blstm_forward(x, lengths, fwd, bwd):
    """h_t = [LSTM_fwd(x)_t ; reverse(LSTM_bwd(reverse(x)))_t] for t < T_b, 0 after (§6.2, the listener).

    Inputs: x (B, T, D); lengths (B,) with 1 <= T_b <= T; fwd, bwd each (Wx (D, 4Hd), Wh (Hd, 4Hd), b (4Hd,)).
    Both directions start from a zero state.  Returns out (B, T, 2Hd), cache.
    """
    B, T, _ = x.shape
    Hd = fwd[1].shape[0]
    zero = np.zeros((B, Hd), dtype=x.dtype)  # (B, Hd)
    hf, _, c_f = lstm_forward(x, zero, zero, *fwd)  # (B, T, Hd), left to right
    hr, _, c_b = lstm_forward(reverse_time(x, lengths), zero, zero, *bwd)  # (B, T, Hd), right to left
    keep = time_mask(lengths, T)[:, :, None].astype(x.dtype)  # (B, T, 1)
    out = np.concatenate([hf, reverse_time(hr, lengths)], axis=-1) * keep  # (B, T, 2Hd)
    return out, (c_f, c_b, lengths, keep, Hd)


def blstm_backward(dout, cache):
    """Reverse of blstm_forward: mask, split, un-reverse the backward direction, BPTT through both:

        dh_f, dh_b = split(dout * keep);   dx = LSTM_fwd'(dh_f) + reverse(LSTM_bwd'(reverse(dh_b)))

    Returns dx (B, T, D), dfwd = (dWx, dWh, db), dbwd = (dWx, dWh, db).
    """
    c_f, c_b, lengths, keep, Hd = cache
    dout = dout * keep  # (B, T, 2Hd): outputs past a row's end were set to 0
    dx_f, _, _, *dfwd = lstm_backward(dout[..., :Hd], c_f)  # (B, T, D)
    dx_r, _, _, *dbwd = lstm_backward(reverse_time(dout[..., Hd:], lengths), c_b)  # (B, T, D) in reversed time
    return dx_f + reverse_time(dx_r, lengths), tuple(dfwd), tuple(dbwd)


def pyramid_forward(h, lengths):
    """Join adjacent frames, [h_{2u} ; h_{2u+1}] (Chan et al., eq. 5), a zero frame added to an odd T:

        (B, T, C) -> (B, ceil(T/2), 2C);  lengths T_b -> ceil(T_b / 2).
    """
    B, T, C = h.shape
    if T % 2:
        h = np.concatenate([h, np.zeros((B, 1, C), h.dtype)], axis=1)  # (B, T + 1, C)
    return h.reshape(B, -1, 2 * C), (np.asarray(lengths) + 1) // 2, (T, C)  # (B, T/2, 2C)


def pyramid_backward(dout, cache):
    """The reshape undone, and the added zero frame dropped: (B, U, 2C) -> dh (B, T, C)."""
    T, C = cache
    B = dout.shape[0]
    return dout.reshape(B, -1, C)[:, :T]  # (B, 2U, C) -> (B, T, C)


def _layer(params, l):
    return tuple(tuple(params[f"listen{l}.{d}.{k}"] for k in ("Wx", "Wh", "b")) for d in ("fwd", "bwd"))


def listener_forward(params, cfg: LASConfig, x, lengths):
    """h = pBLSTM^n(BLSTM(x)):  x (B, T, M), lengths (B,) -> h (B, U, 2Hd), U lengths (B,), cache.

    U = ceil(T / 2^n) (one halving per pyramidal layer)."""
    caches = []
    for l in range(cfg.n_pyramid + 1):
        c_p = None
        if l > 0:
            x, lengths, c_p = pyramid_forward(x, lengths)  # (B, T/2, 4Hd)
        x, c_b = blstm_forward(x, lengths, *_layer(params, l))  # (B, T', 2Hd)
        caches.append((c_p, c_b))
    return x, lengths, caches


def listener_backward(dh, caches):
    """Layers in reverse: BLSTM backward, then the pyramid's reshape undone.  Returns dx (B, T, M), grads."""
    grads = {}
    for l in reversed(range(len(caches))):
        c_p, c_b = caches[l]
        dh, dfwd, dbwd = blstm_backward(dh, c_b)
        for d, g in (("fwd", dfwd), ("bwd", dbwd)):
            grads |= {f"listen{l}.{d}.{k}": v for k, v in zip(("Wx", "Wh", "b"), g, strict=True)}
        if c_p is not None:
            dh = pyramid_backward(dh, c_p)
    return dh, grads


# ---- attend and spell: one step of the speller ----

def speller_step_forward(ax, ctx_prev, h_prev, c_prev, Wx_c, Wh, W_q, K, H, mask):
    """One speller step (the previous character's term ax = E y_{i-1} Wx_e + b computed for all steps at once):

        a   = ax + c_{i-1} Wx_c + s_{i-1} W_h;   s_i, cell_i = LSTM gates(a, cell_{i-1})   (minilm.lstm)
        c_i = Attention(s_i W_q, K, H) = softmax((s_i W_q) K^T / sqrt(A)) H      (minilm.attention)

    Inputs: ax (B, 4Hs); ctx_prev (B, 2Hd); h_prev, c_prev (B, Hs); Wx_c (2Hd, 4Hs); Wh (Hs, 4Hs);
            W_q (Hs, A); K = h W_k (B, U, A); H = h (B, U, 2Hd); mask (B, 1, U).
    Returns s (B, Hs), cell (B, Hs), ctx (B, 2Hd), cache.
    """
    a = ax + ctx_prev @ Wx_c + h_prev @ Wh  # (B, 4Hs): (B, 2Hd) x (2Hd, 4Hs) + (B, Hs) x (Hs, 4Hs)
    s, cell, c_gates = lstm_gates_forward(a, c_prev)  # (B, Hs) each
    q = s @ W_q  # (B, Hs) x (Hs, A) -> (B, A)
    ctx, c_att = attention_forward(q[:, None], K, H, mask)  # (B, 1, A), (B, U, A), (B, U, 2Hd) -> (B, 1, 2Hd)
    return s, cell, ctx[:, 0], (ctx_prev, h_prev, Wx_c, Wh, W_q, s, c_gates, c_att)


def speller_step_backward(ds, dcell, dctx, cache):
    """The step in reverse, with dctx the gradient of c_i (from the output layer and from step i+1):

        dq, dK, dH = Attention'(dctx);   ds += dq W_q^T,  dW_q = s^T dq
        da, dcell_{i-1} = LSTM gates'(ds, dcell)
        dax = da;  dc_{i-1} = da Wx_c^T (the fed-back context);  ds_{i-1} = da W_h^T;
        dWx_c = c_{i-1}^T da;  dW_h = s_{i-1}^T da

    Returns dax, dctx_prev, dh_prev, dc_prev, dWx_c, dWh, dW_q, dK, dH.
    """
    ctx_prev, h_prev, Wx_c, Wh, W_q, s, c_gates, c_att = cache
    dq, dK, dH = attention_backward(dctx[:, None], c_att)  # (B, 1, A), (B, U, A), (B, U, 2Hd)
    dq = dq[:, 0]  # (B, A)
    ds = ds + dq @ W_q.T  # (B, A) x (A, Hs) -> (B, Hs): s_i is the query
    dW_q = s.T @ dq  # (Hs, B) x (B, A) -> (Hs, A)
    da, dc_prev = lstm_gates_backward(ds, dcell, c_gates)  # (B, 4Hs), (B, Hs)
    dctx_prev = da @ Wx_c.T  # (B, 4Hs) x (4Hs, 2Hd) -> (B, 2Hd): c_{i-1} was part of the step's input
    dh_prev = da @ Wh.T  # (B, 4Hs) x (4Hs, Hs) -> (B, Hs)
    dWx_c = ctx_prev.T @ da  # (2Hd, B) x (B, 4Hs) -> (2Hd, 4Hs)
    dWh = h_prev.T @ da  # (Hs, B) x (B, 4Hs) -> (Hs, 4Hs)
    return da, dctx_prev, dh_prev, dc_prev, dWx_c, dWh, dW_q, dK, dH


def speller_forward(params, cfg: LASConfig, H, U_lengths, y_in):
    """Teacher-forced speller over the whole transcript (§6.2):

        s_i = LSTM([E y_{i-1} ; c_{i-1}], s_{i-1}),  c_i = Attend(s_i, h),  logits_i = [s_i ; c_i] W_out + b_out
        with s_0 = cell_0 = 0 and c_0 = 0.

    Inputs: H (B, U, 2Hd) listener states; U_lengths (B,); y_in (B, S) ids (<eos> first, as start symbol).
    Returns logits (B, S, V), cache.  ``alignments(cache)`` gives the attention weights (B, S, U).
    """
    B, S = y_in.shape
    U, C2 = H.shape[1:]
    E, Hs = cfg.n_embd, cfg.speller_hidden
    Wx = params["spell.Wx"]
    mask = time_mask(U_lengths, U)[:, None, :]  # (B, 1, U)
    K, c_k = linear_forward(H, params["att.W_k"])  # (B, U, 2Hd) x (2Hd, A) -> (B, U, A), once per utterance
    emb, c_emb = embedding_forward(y_in, params["embed"])  # (B, S, E)
    ax, c_ax = linear_forward(emb, Wx[:E], params["spell.b"])  # (B, S, E) x (E, 4Hs) -> (B, S, 4Hs), every step
    s = np.zeros((B, Hs), H.dtype)  # (B, Hs)
    cell = np.zeros((B, Hs), H.dtype)  # (B, Hs)
    ctx = np.zeros((B, C2), H.dtype)  # (B, 2Hd)
    states = np.empty((B, S, Hs + C2), H.dtype)  # (B, S, Hs + 2Hd): [s_i ; c_i] of every step
    steps = []
    for i in range(S):
        s, cell, ctx, c_step = speller_step_forward(ax[:, i], ctx, s, cell, Wx[E:], params["spell.Wh"],
                                                    params["att.W_q"], K, H, mask)
        states[:, i, :Hs], states[:, i, Hs:] = s, ctx
        steps.append(c_step)
    logits, c_out = linear_forward(states, params["out.W"], params["out.b"])  # (B, S, Hs+2Hd) x (Hs+2Hd, V)
    return logits, (c_k, c_emb, c_ax, steps, c_out, Hs, E)


def speller_backward(dlogits, cache):
    """BPTT through the speller, i = S-1 down to 0, carrying ds, dcell and the fed-back dc:

        d[s_i ; c_i] = dlogits_i W_out^T;   dc_i = that + dc_i from step i+1's input;   ds_i = that + ds from i+1
        then step backward (speller_step_backward); dK and dH summed over steps;  dH += dK W_k^T

    Returns dH (B, U, 2Hd) and the speller's grads.
    """
    c_k, c_emb, c_ax, steps, c_out, Hs, E = cache
    dstates, dW_out, db_out = linear_backward(dlogits, c_out)  # (B, S, Hs + 2Hd)
    B, S = dstates.shape[:2]
    dax = np.empty((B, S, steps[0][3].shape[1]), dstates.dtype)  # (B, S, 4Hs)
    ds = np.zeros((B, Hs), dstates.dtype)  # (B, Hs), reaching s_i from step i+1
    dcell = np.zeros_like(ds)  # (B, Hs)
    dctx_next = np.zeros((B, dstates.shape[2] - Hs), dstates.dtype)  # (B, 2Hd), reaching c_i from step i+1
    g = {k: 0.0 for k in ("Wx_c", "Wh", "W_q", "K", "H")}
    for i in reversed(range(S)):
        dax[:, i], dctx_next, ds, dcell, *dstep = speller_step_backward(
            dstates[:, i, :Hs] + ds, dcell, dstates[:, i, Hs:] + dctx_next, steps[i])
        for k, d in zip(("Wx_c", "Wh", "W_q", "K", "H"), dstep, strict=True):
            g[k] = g[k] + d
    demb, dWx_e, db = linear_backward(dax, c_ax)  # (B, S, E), (E, 4Hs), (4Hs,)
    _, dembed = embedding_backward(demb, c_emb)  # (V, E)
    dH_k, dW_k, _ = linear_backward(g["K"], c_k)  # (B, U, 2Hd): h_u as a key
    grads = {"embed": dembed, "spell.Wx": np.concatenate([dWx_e, g["Wx_c"]], axis=0), "spell.Wh": g["Wh"],
             "spell.b": db, "att.W_q": g["W_q"], "att.W_k": dW_k, "out.W": dW_out, "out.b": db_out}
    return g["H"] + dH_k, grads


def alignments(cache) -> np.ndarray:
    """The attention weights (B, S, U) of a speller_forward: which listener state each character read."""
    return np.concatenate([attention_weights(step[7]) for step in cache[3]], axis=1)  # S x (B, 1, U)


# ---- the model ----

def param_shapes(cfg: LASConfig) -> dict[str, tuple[int, ...]]:
    Hd, Hs, A, E, V = cfg.listener_hidden, cfg.speller_hidden, cfg.attention, cfg.n_embd, cfg.vocab_size
    shapes = {}
    for l in range(cfg.n_pyramid + 1):
        D = cfg.n_mels if l == 0 else 4 * Hd  # the pyramid joins two 2Hd frames
        for d in ("fwd", "bwd"):
            shapes |= {f"listen{l}.{d}.Wx": (D, 4 * Hd), f"listen{l}.{d}.Wh": (Hd, 4 * Hd),
                       f"listen{l}.{d}.b": (4 * Hd,)}
    return shapes | {"embed": (V, E), "spell.Wx": (E + 2 * Hd, 4 * Hs), "spell.Wh": (Hs, 4 * Hs),
                     "spell.b": (4 * Hs,), "att.W_q": (Hs, A), "att.W_k": (2 * Hd, A),
                     "out.W": (Hs + 2 * Hd, V), "out.b": (V,)}


def init_params(cfg: LASConfig, rng: np.random.Generator, dtype=np.float32) -> dict[str, np.ndarray]:
    """LSTMs as minilm.lstm.lstm_init (forget-gate bias 1); embedding N(0, 1); projections N(0, 1/fan_in)."""
    p = {}
    for k, s in param_shapes(cfg).items():
        if k.endswith(".Wx") and k.replace(".Wx", ".Wh") in param_shapes(cfg):
            Wx, Wh, b = lstm_init(rng, s[0], s[1] // 4, dtype)
            base = k[: -len("Wx")]
            p[base + "Wx"], p[base + "Wh"], p[base + "b"] = Wx, Wh, b
        elif k == "embed":
            p[k] = rng.standard_normal(s).astype(dtype)  # (V, E)
        elif k in ("att.W_q", "att.W_k", "out.W"):
            p[k] = (rng.standard_normal(s) / np.sqrt(s[0])).astype(dtype)  # (fan_in, fan_out)
        elif k == "out.b":
            p[k] = np.zeros(s, dtype)
    return {k: p[k] for k in param_shapes(cfg)}


def _check(params, cfg, x, lengths):
    check_param_shapes(params, param_shapes(cfg))
    x = np.asarray(x)
    if x.ndim != 3 or x.shape[2] != cfg.n_mels or x.shape[1] < 1:
        raise ValueError(f"features must have shape (B, T, {cfg.n_mels}) with T >= 1, got {x.shape}")
    if x.dtype != params["out.W"].dtype:
        raise ValueError(f"features are {x.dtype}, parameters {params['out.W'].dtype} (no silent upcast)")
    lengths = np.asarray(lengths)
    if lengths.shape != (x.shape[0],) or not np.issubdtype(lengths.dtype, np.integer) or \
            lengths.min() < 1 or lengths.max() > x.shape[1]:
        raise ValueError(f"lengths must be {x.shape[0]} integers in [1, T = {x.shape[1]}], got {lengths}")
    return lengths


def forward(params, cfg: LASConfig, x, lengths, y_in):
    """Listen, then attend and spell with teacher forcing:  x (B, T, M), lengths (B,), y_in (B, S) ->
    logits (B, S, V), cache."""
    lengths = _check(params, cfg, x, lengths)
    y_in = check_ids(y_in, cfg.vocab_size, "y_in")
    H, U_lengths, c_listen = listener_forward(params, cfg, x, lengths)  # (B, U, 2Hd)
    logits, c_spell = speller_forward(params, cfg, H, U_lengths, y_in)  # (B, S, V)
    return logits, {"listen": c_listen, "spell": c_spell}


def loss_and_grads(params, cfg: LASConfig, x, lengths, y_in, y_out):
    """Mean cross-entropy over the characters of y_out (IGNORE_INDEX = padding), and every parameter's gradient."""
    logits, cache = forward(params, cfg, x, lengths, y_in)
    loss, c_ce = cross_entropy_forward(logits, y_out, IGNORE_INDEX)
    dlogits = cross_entropy_backward(1.0, c_ce)  # (B, S, V)
    dH, grads = speller_backward(dlogits, cache["spell"])  # (B, U, 2Hd)
    _, g_listen = listener_backward(dH, cache["listen"])
    grads |= g_listen
    return loss, {k: grads[k] for k in params}


def loss(params, cfg: LASConfig, x, lengths, y_in, y_out) -> float:
    logits, _ = forward(params, cfg, x, lengths, y_in)
    return cross_entropy_forward(logits, y_out, IGNORE_INDEX)[0]


def next_logits_fn(params, cfg: LASConfig, x, lengths):
    """minilm.translate's ``next_logits(prefix (N, t), rows (N,)) -> (N, V)`` for utterances x (B, T, M):
    listens once, then spells each prefix (which starts with the start symbol) of utterance rows[i]."""
    lengths = _check(params, cfg, x, lengths)
    H, U_lengths, _ = listener_forward(params, cfg, x, lengths)  # (B, U, 2Hd)

    def next_logits(prefix, rows):
        logits, _ = speller_forward(params, cfg, H[rows], U_lengths[rows], prefix)  # (N, t, V)
        return logits[:, -1]  # (N, V)

    return next_logits

"""The Transformer LM of minilm.transformer (pre- or post-LN, causal or masked, with dropout), trained fast.

Same model, same parameter names, same numbers (tests/test_fast.py checks the
loss, every gradient and a whole AdamW step against minilm.transformer); what
differs is how the work is laid out:

* parameters, gradients and AdamW moments are one flat buffer each
  (minilm.fast.flat); ``params`` and ``grads`` are dicts of views into them,
  under the plain model's names;
* W_q, W_k, W_v are the column blocks of one stored (C, 3C) matrix, so one
  matmul gives q, k and v, and the heads are strided views of its result;
* every activation the backward needs lives in a buffer allocated once for a
  batch shape and reused by every step;
* LayerNorm's and softmax's row sums are matrix-vector products, GELU and
  AdamW run in cache-sized blocks on two threads, attention runs each half of
  the batch on its own thread (its matmuls are too small for BLAS threads);
* in the backward, the weight gradients' products dW = X^T dY (a third of the
  step's arithmetic, read by nothing but AdamW) run on the worker thread
  behind the chain (minilm.fast.threads.Background), each layer's dY in a
  buffer of its own;
* without dropout, on two cores, the step runs as two processes instead, each the
  whole forward and backward on half of the batch (_split_forward_backward,
  minilm.fast.procs): two threads of one process gain little on the
  elementwise passes, two processes do not share an interpreter lock; the
  parameters, gradients and AdamW moments are in memory both map, and half
  of the gradient norm and of AdamW runs in each (minilm.fast.flat.FlatParams.share);
* the causal mask is added to the scores (0 or -inf) instead of np.where;
* dropout masks are drawn from the caller's generator in the plain model's
  order (embeddings, then each block's attention and feed-forward outputs),
  so a step with dropout matches the plain step draw for draw.

The step, for M = B T positions (the plain code's names in brackets; Drop is dropout):

    x = Drop(wte[idx] (* sqrt(C)) + pos)              (M, C)  [embedding_forward, positional]
    pre-LN, per layer (block_forward, norm="pre"):
        n1 = LN1(x);  qkv = n1 W_qkv + b_qkv           (M, 3C) [layernorm_forward, mha_forward]
        x += Drop(softmax(q k^T / sqrt(hs) + M) v W_o + b_o)   [attention_forward]
        n2 = LN2(x);  x += Drop(act(n2 W1 + b1) W2 + b2)       [ffn_forward]
    post-LN, per layer (block_forward, norm="post", the text's):
        n1 = x;  n2 = LN1(n1 + Drop(MHA(n1)));  x = LN2(n2 + Drop(FFN(n2)))
    logits = LN_f(x) W_head + b_head  (pre-LN; post-LN has no LN_f)   (M, V)
    loss = cross-entropy (the masked LM counts only its chosen positions);
    the backward walks the same lines in reverse.
"""

from __future__ import annotations

import math
import weakref

import numpy as np

from minilm.fast import kernels as K
from minilm.fast.blas import on_one_thread, one_thread
from minilm.fast.flat import FlatModel, FlatParams, combine_halves
from minilm.fast.threads import Background, alone, n_threads, run_rows
from minilm.positional import sinusoidal_table
from minilm.transformer import IGNORE_INDEX
from minilm.validate import check_ids


def supports(cfg) -> bool:
    """The fast path covers every Transformer ``minilm train`` offers: pre- or post-LN, causal or not
    (the masked LM), ReLU or GELU, either positions, dropout, embedding scale and weight tying, with or
    without an output bias (GPT-2's head has none: ``train --init-from``).  Attention-only blocks
    (ffn="none") and pre-LN without the final LayerNorm, which ``train`` does not offer, use
    minilm.transformer."""
    return (_activation(cfg) in ("gelu", "relu") and getattr(cfg, "norm", "pre") in ("pre", "post")
            and (getattr(cfg, "norm", "pre") == "post" or getattr(cfg, "final_norm", True)))


def why_not(cfg) -> str | None:
    """What supports(cfg) lacks, in words, or None."""
    if _activation(cfg) not in ("gelu", "relu"):
        return f"feed-forward {_activation(cfg)!r} (the fast path has relu and gelu)"
    if getattr(cfg, "norm", "pre") not in ("pre", "post"):
        return f"norm {cfg.norm!r}"
    if not supports(cfg):
        return "pre-LN without the final LayerNorm"
    return None


def _activation(cfg) -> str:
    return getattr(cfg, "ffn", None) or getattr(cfg, "activation", "relu")


def _positions(cfg) -> str:
    return getattr(cfg, "pos", None) or getattr(cfg, "positions", "sinusoidal")


def layout(cfg):
    """(entries, aliases) for FlatParams: what is stored, and the plain names that are views of it."""
    V, C, L = cfg.vocab_size, cfg.n_embd, cfg.n_layer
    F = 4 * C
    entries = [("wte", (V, C), True)]
    if _positions(cfg) == "learned":
        entries.append(("wpe", (cfg.block_size, C), True))
    aliases = {}
    for l in range(L):
        h = f"h{l}."
        entries += [(h + "attn.W_qkv", (C, 3 * C), True), (h + "attn.W_o", (C, C), True),
                    (h + "ffn.W1", (C, F), True), (h + "ffn.W2", (F, C), True),
                    (h + "ln1.gamma", (C,), False), (h + "ln1.beta", (C,), False),
                    (h + "attn.b_qkv", (3 * C,), False), (h + "attn.b_o", (C,), False),
                    (h + "ln2.gamma", (C,), False), (h + "ln2.beta", (C,), False),
                    (h + "ffn.b1", (F,), False), (h + "ffn.b2", (C,), False)]
        for i, name in enumerate("qkv"):
            cols = slice(i * C, (i + 1) * C)
            aliases[h + f"attn.W_{name}"] = (h + "attn.W_qkv", (slice(None), cols))  # (C, C) column block
            aliases[h + f"attn.b_{name}"] = (h + "attn.b_qkv", cols)  # (C,)
    if cfg.norm == "pre":
        entries += [("ln_f.gamma", (C,), False), ("ln_f.beta", (C,), False)]
    if not cfg.tie_weights:
        entries.append(("lm_head.W", (C, V), True))
    if getattr(cfg, "head_bias", True):
        entries.append(("lm_head.b", (V,), False))
    return entries, aliases


class FastTransformer(FlatModel):
    """Flat buffers and reusable activations for one config; ``step`` trains, ``loss_and_grads`` checks.

    ``params`` and ``grads`` are dicts of views (the plain model's keys); write into
    ``params[k][...]`` or call ``load`` to set them.  ``opt_state()`` / ``load_opt_state``
    convert AdamW's moments to and from minilm.optim's state dict.
    """

    def __init__(self, cfg, params: dict | None = None, dtype=np.float32, buffers=None):
        if not supports(cfg):
            raise ValueError(f"FastTransformer has no fast path for {why_not(cfg)}; use minilm.transformer")
        self.cfg = cfg
        self._ws_shape, self._ws = None, None
        self._init_flat(FlatParams(*layout(cfg), dtype=dtype, buffers=buffers), params)
        self._split = None  # the second process's replica (_split_forward_backward), made on first use
        self._sumsq = None  # sum(g^2) of the last split step's gradient

    # ---- buffers ----

    def _workspace(self, B: int, T: int):
        if self._ws_shape == (B, T):
            return self._ws
        cfg, dt = self.cfg, self.dtype
        C, H, V = cfg.n_embd, cfg.n_head, cfg.vocab_size
        M, F = B * T, 4 * C
        e = lambda *shape: np.empty(shape, dt)  # noqa: E731
        drop = bool(cfg.dropout)
        layers = [dict(xhat1=e(M, C), rstd1=e(M), n1=e(M, C), qkv=e(M, 3 * C), P=e(B, H, T, T), att=e(M, C),
                       xhat2=e(M, C), rstd2=e(M), n2=e(M, C), f=e(M, F), s=e(M, F), a=e(M, F),
                       m1=e(M, C) if drop else None, m2=e(M, C) if drop else None,  # dropout masks
                       vT=e(B, H, C // H, T),  # v^T of the heads, contiguous, for the backward's dout v^T
                       gdf=e(M, C), gda=e(M, C), gdF=e(M, F), gdqkv=e(M, 3 * C))  # the backward's, per layer
                  for _ in range(cfg.n_layer)]
        ws = dict(layers=layers, x=e(M, C), tmp=e(M, C), xhat_f=e(M, C), rstd_f=e(M), n_f=e(M, C),
                  logits=e(M, V), dx=e(M, C), dn=e(M, C), dd=e(M, C), dF=e(M, F), dqkv=e(M, 3 * C),
                  dP=e(B, H, T, T), tT=e(B, H, C // H, T),  # tT: k^T (forward), contiguous
                  ones_m=np.ones(M, dt), ones_v=np.ones(V, dt), m0=e(M, C) if drop else None,
                  mask=K.causal_additive_mask(T, dt) if cfg.causal else None,
                  onehot=e(V, M) if V <= K.ONEHOT_MAX_V else None)  # (V, M) scratch of the embedding gradient
        if _positions(cfg) == "sinusoidal":
            ws["pe"] = sinusoidal_table(T, C, dt)  # (T, C), a constant
        self._ws_shape, self._ws = (B, T), ws
        return ws

    def _heads(self, a, B, T):
        """(M, C) -> (B, H, T, hs) strided view (the plain split_heads, without a copy)."""
        H = self.cfg.n_head
        return a.reshape(B, T, H, -1).transpose(0, 2, 1, 3)

    # ---- forward and backward ----

    @on_one_thread
    def forward_backward(self, idx: np.ndarray, targets: np.ndarray, rng=None) -> float:
        """Mean cross-entropy of ``targets`` given ``idx`` (both (B, T) ids); fills ``grads``.

        Targets equal to minilm.transformer.IGNORE_INDEX do not count (the masked LM).  With dropout,
        ``rng`` (an np.random.Generator) draws the masks, as ``minilm.transformer.loss_and_grads(...,
        train=True, rng=rng)`` does.
        """
        if self.cfg.dropout and rng is None:
            raise ValueError("dropout in training mode needs an explicit np.random.Generator (rng=...)")
        peer = self._peer(idx, targets)
        if peer is not None:
            return self._split_forward_backward(peer, idx, targets)
        if n_threads() == 1:
            return self._forward_backward(idx, targets, rng, K.matmul)
        with one_thread() as split:
            return self._forward_backward(idx, targets, rng, K.matmul_split if split else K.matmul)

    def _peer(self, idx, targets):
        """The second process (minilm.fast.procs) when the step can be split over two processes: two cores,
        no dropout (its masks are drawn for the whole batch), two rows or more, each half with a target."""
        if self.cfg.dropout or n_threads() == 1 or np.ndim(idx) != 2 or len(idx) < 2:
            return None
        h = len(idx) // 2
        counted = np.asarray(targets) != IGNORE_INDEX
        if not counted[:h].any() or not counted[h:].any():
            return None
        from minilm.fast import procs

        return procs.peer()

    def _split_forward_backward(self, peer, idx, targets) -> float:
        """forward_backward with rows h.. of the batch in the second process, rows ..h here, each on one core
        with a replica of the model over the same parameters (moved into shared memory on the first call):
        loss = (n1 loss1 + n2 loss2) / (n1 + n2) and likewise the gradients, n1, n2 the halves' counted
        targets (the loss is a mean over them).  Once both halves are done, each process sums the gradients
        over its half of the entries (flat.combine_halves), which gives the norm's sum of squares as well
        (``_sumsq``, read by step).  Two threads of one process gain far less: every NumPy call of the
        elementwise passes waits at the interpreter lock (minilm.fast.threads)."""
        idx, targets = self._check(idx, targets)
        B, T = idx.shape
        h = B // 2
        split = self._split
        if split is None or not split["peer"].alive() or split["shape"] != (B - h, T):
            if split is not None and split["peer"] is peer:
                peer.forget(split["key"])  # the replica of another batch shape
            split = self._split = self._make_split(peer, B - h, T)
        split["ids"][0], split["ids"][1] = idx[h:], targets[h:]
        n1, n2 = int((targets[:h] != IGNORE_INDEX).sum()), int((targets[h:] != IGNORE_INDEX).sum())
        w1, w2 = n1 / (n1 + n2), n2 / (n1 + n2)
        g, g2, rows = self.flat.g, split["g"], self.flat.half()
        out = []

        def here(front):  # this half, then rows ..rows of g = w1 g + w2 g2 once the peer has its half's g2
            out.append(self._forward_backward(idx[:h], targets[:h], None, K.matmul))
            front.signal()
            front.wait(0, 0)
            out.append(combine_halves(g[:rows], g2[:rows], w1, w2))

        with alone(), one_thread():  # one core here, one there
            theirs = peer.run("tf_half", [split["key"], B - h, T, rows, self.flat.size, w1, w2], [], here)
        self._sumsq = out[1] + theirs  # sum(g^2) of the whole batch's gradient, for step's norm
        return float(w1 * out[0] + w2 * split["loss"][0])

    def _make_split(self, peer, Bh: int, T: int) -> dict:
        """Shared parameter, gradient and id buffers and the peer's FastTransformer over them."""
        size, dt = self.flat.size, self.dtype
        if self.flat._shared() is not peer:
            self.flat.share(peer)  # p, g, m, v: the replica reads the parameters AdamW writes; half the step there
        (g_key, g_buf), (io_key, io) = peer.share(size * dt.itemsize), peer.share(2 * Bh * T * 8 + 8)
        key = g_key
        peer.call("tf_model", key, self.cfg, dt.str, self.flat.key, g_key, io_key)
        weakref.finalize(self, peer.release, key)  # the replica goes with this model
        ids = np.ndarray((2, Bh, T), np.int64, buffer=io)
        return dict(peer=peer, shape=(Bh, T), key=key, g=np.ndarray(size, dt, buffer=g_buf), ids=ids,
                    loss=np.ndarray((1,), np.float64, buffer=io, offset=ids.nbytes), buffers=(g_buf, io))

    @on_one_thread
    def logits(self, idx: np.ndarray) -> np.ndarray:
        """minilm.transformer.forward(params, cfg, idx)[0] (evaluation: no dropout): (B, T) ids -> (B, T, V)."""
        if n_threads() == 1:
            return self._forward_backward(idx, None, None, K.matmul)
        with one_thread() as split:
            return self._forward_backward(idx, None, None, K.matmul_split if split else K.matmul)

    def _check(self, idx, targets):
        cfg = self.cfg
        idx = check_ids(idx, cfg.vocab_size, "idx")
        targets = np.zeros(idx.shape, np.int64) if targets is None else np.asarray(targets)
        if idx.ndim != 2 or targets.shape != idx.shape:
            raise ValueError(f"idx and targets must both have shape (B, T), got {idx.shape} and {targets.shape}")
        check_ids(targets[targets != IGNORE_INDEX], cfg.vocab_size, "targets")
        if idx.shape[1] > cfg.block_size:
            raise ValueError(f"sequence length T = {idx.shape[1]} exceeds block_size {cfg.block_size}")
        return idx, targets

    def _dropout(self, x, m, rng) -> None:
        """x *= m, m = (u >= p) / (1 - p), u uniform: minilm.dropout.dropout_forward's mask, drawn alike."""
        p = self.cfg.dropout
        m[...] = rng.random(m.shape) >= p  # (M, C), 0 or 1
        m /= m.dtype.type(1 - p)
        x *= m

    def _forward_backward(self, idx, targets, rng, mm):
        """The step; with ``targets`` None, the forward alone without dropout, returning a copy of the logits."""
        cfg, P = self.cfg, self.flat.raw
        train = targets is not None
        idx, targets = self._check(idx, targets)
        B, T = idx.shape
        ws = self._workspace(B, T)
        dt, C = self.dtype.type, cfg.n_embd
        hs = C // cfg.n_head
        scale = dt(1 / math.sqrt(hs))
        emb_scale = dt(math.sqrt(C)) if getattr(cfg, "scale_embed", False) else None
        post, drop = cfg.norm == "post", bool(cfg.dropout) and train
        x, tmp = ws["x"], ws["tmp"]
        ids = idx.reshape(-1)

        # x = Drop(wte[idx] (* sqrt(C)) + positions)                            (M, C)
        np.take(P["wte"], ids, axis=0, out=x)
        if emb_scale is not None:
            x *= emb_scale
        x3 = x.reshape(B, T, C)
        x3 += P["wpe"][:T] if "wpe" in P else ws["pe"]
        if drop:
            self._dropout(x, ws["m0"], rng)
        for l, c in enumerate(ws["layers"]):
            h = f"h{l}."
            if post:  # the sublayers read the stream itself
                np.copyto(c["n1"], x)
            else:  # n1 = LN1(x)
                K.layernorm_forward(x, P[h + "ln1.gamma"], P[h + "ln1.beta"], c["n1"], c["xhat1"], c["rstd1"])
            mm(c["n1"], P[h + "attn.W_qkv"], c["qkv"])  # (M, C) x (C, 3C) -> (M, 3C)
            K.add_bias(c["qkv"], P[h + "attn.b_qkv"])
            q, k, v = (self._heads(c["qkv"][:, i * C:(i + 1) * C], B, T) for i in range(3))  # (B, H, T, hs)
            K.attention_forward(q, k, v, c["P"], self._heads(c["att"], B, T), ws["mask"], scale, ws["tT"], c["vT"])
            mm(c["att"], P[h + "attn.W_o"], tmp)  # (M, C) x (C, C) -> (M, C)
            K.add_bias(tmp, P[h + "attn.b_o"])  # the attention sublayer's output
            if drop:
                self._dropout(tmp, c["m1"], rng)
            if post:  # n2 = LN1(x + a)
                tmp += x
                K.layernorm_forward(tmp, P[h + "ln1.gamma"], P[h + "ln1.beta"], c["n2"], c["xhat1"], c["rstd1"])
            else:  # x += a;  n2 = LN2(x)
                x += tmp
                K.layernorm_forward(x, P[h + "ln2.gamma"], P[h + "ln2.beta"], c["n2"], c["xhat2"], c["rstd2"])
            mm(c["n2"], P[h + "ffn.W1"], c["f"])  # (M, C) x (C, F) -> (M, F)
            self._act_forward(c, P[h + "ffn.b1"])  # a = act(f + b1)
            mm(c["a"], P[h + "ffn.W2"], tmp)  # (M, F) x (F, C) -> (M, C)
            K.add_bias(tmp, P[h + "ffn.b2"])  # the feed-forward sublayer's output
            if drop:
                self._dropout(tmp, c["m2"], rng)
            if post:  # x = LN2(n2 + f)
                tmp += c["n2"]
                K.layernorm_forward(tmp, P[h + "ln2.gamma"], P[h + "ln2.beta"], x, c["xhat2"], c["rstd2"])
            else:  # x += f
                x += tmp
        if post:
            final = x  # (M, C): the last block ends in its LayerNorm
        else:
            final = ws["n_f"]
            K.layernorm_forward(x, P["ln_f.gamma"], P["ln_f.beta"], final, ws["xhat_f"], ws["rstd_f"])
        W_head = P["wte"].T if cfg.tie_weights else P["lm_head.W"]  # (C, V)
        logits = ws["logits"]
        mm(final, W_head, logits)  # (M, C) x (C, V) -> (M, V)
        if "lm_head.b" in P:
            K.add_bias(logits, P["lm_head.b"])  # (V,)
        if not train:
            return logits.reshape(B, T, -1).copy()  # (B, T, V)
        loss = K.cross_entropy_inplace(logits, targets.reshape(-1), ws["ones_v"], IGNORE_INDEX)  # -> dlogits

        if mm is K.matmul_split:  # two threads: the weight gradients go to the worker, behind the chain
            with Background() as bg:
                self._backward(idx, final, drop, mm, bg.submit, bg.wait, behind=True)
        else:
            self._backward(idx, final, drop, mm, lambda fn, *a: fn(*a), lambda job: None)
        return loss

    def _backward(self, idx, final, drop: bool, mm, later, wait, behind: bool = False) -> None:
        """The backward of _forward_backward, from dlogits (in ws["logits"]) to every gradient; ``final``
        (M, C) is the output layer's input, ``drop`` whether this step drew dropout masks.

        ``later(fn, *args)`` runs a weight gradient's product, which nothing else in the step reads
        (dW = X^T dY), on the worker while this thread goes on down the chain (minilm.fast.threads.
        Background); the dY it reads is a buffer of its own (gdf, gda, gdF, gdqkv) that the chain does not
        overwrite (``behind``; with one thread, later runs it at once, and it reads the chain's own df, da).
        ``wait(job)`` waits for one.
        """
        cfg, P, G, ws = self.cfg, self.flat.raw, self.flat.graw, self._ws
        B, T = idx.shape
        dt, C = self.dtype.type, cfg.n_embd
        scale = dt(1 / math.sqrt(C // cfg.n_head))
        emb_scale = dt(math.sqrt(C)) if getattr(cfg, "scale_embed", False) else None
        post, tmp, ids = cfg.norm == "post", ws["tmp"], idx.reshape(-1)
        W_head = P["wte"].T if cfg.tie_weights else P["lm_head.W"]  # (C, V)
        dlogits, dx, dn, dd, ones_m = ws["logits"], ws["dx"], ws["dn"], ws["dd"], ws["ones_m"]
        if "lm_head.b" in G:
            np.matmul(ones_m, dlogits, out=G["lm_head.b"])  # (V,) = sum over rows of dlogits
        if cfg.tie_weights:
            head = later(K.matmul, dlogits.T, final, G["wte"])  # (V, M) x (M, C) -> (V, C), the head's share
        else:
            later(K.matmul, final.T, dlogits, G["lm_head.W"])  # (C, M) x (M, V) -> (C, V)
        if post:
            mm(dlogits, W_head.T, dx)  # (M, V) x (V, C) -> (M, C)
        else:
            mm(dlogits, W_head.T, dn)  # (M, V) x (V, C) -> (M, C)
            dx.fill(0)
            K.layernorm_backward(dn, ws["xhat_f"], ws["rstd_f"], P["ln_f.gamma"], dx, G["ln_f.gamma"],
                                 G["ln_f.beta"], tmp, ones_m)
        for l in reversed(range(cfg.n_layer)):
            c, h = ws["layers"][l], f"h{l}."
            # behind: this layer's own dF and dqkv, which the worker reads after the chain moves on; inline, one
            # pair shared by every layer, which stays in the cache (each layer's own would touch 1.4 MB more at B 6)
            dF, dqkv = (c["gdF"], c["gdqkv"]) if behind else (ws["dF"], ws["dqkv"])
            if post:  # x = LN2(n2 + f): dx <- d(n2 + f)
                K.layernorm_backward(dx, c["xhat2"], c["rstd2"], P[h + "ln2.gamma"], None, G[h + "ln2.gamma"],
                                     G[h + "ln2.beta"], tmp, ones_m)
            # f = Drop(a W2 + b2):  dW2 = a^T df,  db2 = sum df,  da = df W2^T
            df = np.multiply(dx, c["m2"], out=dd) if drop else dx
            np.matmul(ones_m, df, out=G[h + "ffn.b2"])  # (C,)
            gdf = c["gdf"] if behind else df  # behind: the worker's copy, as the chain changes dx below
            if behind:
                np.copyto(gdf, df)
            later(K.matmul, c["a"].T, gdf, G[h + "ffn.W2"])  # (F, M) x (M, C) -> (F, C)
            mm(df, P[h + "ffn.W2"].T, dF)  # (M, C) x (C, F) -> (M, F)
            self._act_backward(c, dF, P[h + "ffn.b1"], G[h + "ffn.b1"], ones_m)  # df = act'(f) da; db1 = sum df
            later(K.matmul, c["n2"].T, dF, G[h + "ffn.W1"])  # (C, M) x (M, F) -> (C, F)
            mm(dF, P[h + "ffn.W1"].T, dn)  # (M, F) x (F, C) -> (M, C): d(n2) from the feed-forward
            if post:  # n2 = LN1(x + a): dn <- d(x + a) = LN1'(d(n2) + dx)
                dn += dx  # the residual path n2 -> n2 + f
                K.layernorm_backward(dn, c["xhat1"], c["rstd1"], P[h + "ln1.gamma"], None, G[h + "ln1.gamma"],
                                     G[h + "ln1.beta"], tmp, ones_m)
                dres = dn  # the gradient of the stream x + a
            else:  # n2 = LN2(x): dx += LN2'(d(n2))
                K.layernorm_backward(dn, c["xhat2"], c["rstd2"], P[h + "ln2.gamma"], dx, G[h + "ln2.gamma"],
                                     G[h + "ln2.beta"], tmp, ones_m)
                dres = dx
            # a = Drop(att W_o + b_o)
            da = np.multiply(dres, c["m1"], out=dd) if drop else dres
            np.matmul(ones_m, da, out=G[h + "attn.b_o"])  # (C,)
            gda = c["gda"] if behind else da  # behind: the worker's copy
            if behind:
                np.copyto(gda, da)
            later(K.matmul, c["att"].T, gda, G[h + "attn.W_o"])  # (C, M) x (M, C) -> (C, C)
            datt = tmp if post else dn  # post: dn holds the stream's gradient, still needed below
            mm(da, P[h + "attn.W_o"].T, datt)  # (M, C) x (C, C) -> (M, C), d(att)
            q, k, v = (self._heads(c["qkv"][:, i * C:(i + 1) * C], B, T) for i in range(3))
            dq, dk, dv = (self._heads(dqkv[:, i * C:(i + 1) * C], B, T) for i in range(3))
            K.attention_backward(self._heads(datt, B, T), q, k, v, c["P"], ws["dP"], dq, dk, dv, scale, c["vT"])
            # qkv = n1 W_qkv + b_qkv
            np.matmul(ones_m, dqkv, out=G[h + "attn.b_qkv"])  # (3C,)
            later(K.matmul, c["n1"].T, dqkv, G[h + "attn.W_qkv"])  # (C, M) x (M, 3C) -> (C, 3C)
            if post:  # n1 = x: dx = d(x + a) + dqkv W_qkv^T
                mm(dqkv, P[h + "attn.W_qkv"].T, dx)  # (M, 3C) x (3C, C) -> (M, C)
                dx += dn
            else:  # n1 = LN1(x): dx += LN1'(dqkv W_qkv^T)
                mm(dqkv, P[h + "attn.W_qkv"].T, dn)  # (M, 3C) x (3C, C) -> (M, C)
                K.layernorm_backward(dn, c["xhat1"], c["rstd1"], P[h + "ln1.gamma"], dx, G[h + "ln1.gamma"],
                                     G[h + "ln1.beta"], tmp, ones_m)
        # x = Drop(wte[idx] (* sqrt(C)) + positions)
        if drop:
            dx *= ws["m0"]
        dx3 = dx.reshape(B, T, C)
        if "wpe" in G:
            G["wpe"][T:] = 0
            dx3.sum(axis=0, out=G["wpe"][:T])  # (T, C)
        if emb_scale is not None:
            dx *= emb_scale
        if cfg.tie_weights:
            wait(head)  # the head's share of dwte first
        else:
            G["wte"].fill(0)
        K.embedding_backward_add(G["wte"], ids, dx, ws["onehot"])  # (V, C), repeated ids accumulate

    def _act_forward(self, c, b1) -> None:
        if _activation(self.cfg) == "gelu":
            K.gelu_bias_forward(c["f"], b1, c["s"], c["a"])
        else:
            f, a = c["f"], c["a"]
            f += b1
            np.maximum(f, 0, out=a)

    def _act_backward(self, c, dF, b1, db1, ones_m) -> None:
        if _activation(self.cfg) == "gelu":
            K.gelu_backward_inplace(dF, c["f"], c["s"], b1, db1, ones_m)  # f is the product, without b1
        else:
            f = c["f"]

            def chain(lo, hi, _):
                np.multiply(dF[lo:hi], f[lo:hi] > 0, out=dF[lo:hi])

            run_rows(chain, f.shape[0], f.shape[1])
            np.matmul(ones_m, dF, out=db1)  # (F,)

    # ---- what training and the tests call ----

    def loss_and_grads(self, idx, targets, rng=None) -> tuple[float, dict[str, np.ndarray]]:
        """(loss, grads) like minilm.transformer.loss_and_grads(..., train=True, rng=rng); the grads are copies."""
        loss = self.forward_backward(idx, targets, rng)
        return loss, {k: g.copy() for k, g in self.grads.items()}

    @on_one_thread
    def step(self, idx, targets, lr, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01,
             max_norm=0.0, rng=None) -> tuple[float, float]:
        """One training step: loss and gradients, clipping, AdamW.  Returns (loss, gradient norm).

        A non-finite loss or gradient norm leaves the parameters untouched (the caller decides what to do).
        """
        self._share_optimizer()
        self._sumsq = None
        loss = self.forward_backward(idx, targets, rng)
        # split over two processes, the halves' sum gave sum(g^2) as well; else the norm is a pass of its own
        norm = math.sqrt(self._sumsq) if self._sumsq is not None else self.flat.grad_norm()
        if not (math.isfinite(loss) and math.isfinite(norm)):
            return loss, norm
        self.flat.adamw_step(lr, beta1, beta2, eps, weight_decay, max_norm, norm)
        return loss, norm

"""Parameters, gradients and AdamW moments in one flat buffer each, updated in place.

A model of many small arrays pays for each one in every optimiser step: a
handful of NumPy calls per array per step, and no chance to block the work.
Here every parameter is a view into one contiguous buffer, and so is its
gradient and its two AdamW moments, all with the same offsets:

    params["h.0.W_q"]  is  flat.p[offset : offset + size].reshape(shape)   (a view, no copy)
    grads["h.0.W_q"]   is  flat.g[...same slice...]

The parameters that weight decay applies to (matrices, ``minilm.optim.decays``)
come first, so decoupled decay is one multiply over ``p[:n_decay]``.  The
AdamW step is minilm.optim.adam_step's formulas over the whole buffer, in
cache-sized blocks (adamw_rows): on two cores half of the rows in the second
process (``share``), else on two threads, with gradient clipping folded in (the
clipped gradient is ``scale * g``, so ``m`` and ``v`` take ``scale`` and
``scale**2``, and the gradient buffer itself is not rewritten).

A name may also be declared as a view of another entry (``alias``): the
Transformer keeps W_q, W_k, W_v as the three column blocks of one (C, 3C)
matrix, so that one matmul computes q, k and v.
"""

from __future__ import annotations

import math
import weakref

import numpy as np

from minilm.fast import fused, threads
from minilm.fast.blas import axpby
from minilm.fast.threads import n_threads, run_rows, scratch

ALIGN = 16  # every array starts on a 64-byte boundary (16 float32)
SHARE_MIN = 1 << 18  # entries from which an AdamW step split over two processes gains more than it waits


class FlatParams:
    """Flat parameter, gradient and AdamW moment buffers with named views into them.

    ``entries``: (name, shape, decay) in storage order; ``aliases``: name -> (entry name, index
    expression) exposing a view of an entry under the plain model's name (e.g. a column block).
    ``params``/``grads``/``m``/``v`` are the dicts of views the rest of the package reads.
    ``buffers``: (parameters, gradients) in given memory (the replica in minilm.fast.peer).
    """

    def __init__(self, entries, aliases=None, dtype=np.float32, buffers=None):
        self.dtype = np.dtype(dtype)
        ordered = [e for e in entries if e[2]] + [e for e in entries if not e[2]]  # decayed first
        self.offsets, off = {}, 0
        for name, shape, decay in ordered:
            size = math.prod(shape)
            self.offsets[name] = (off, tuple(shape))
            off += -(-size // ALIGN) * ALIGN
            if decay:
                self.n_decay = off
        self.n_decay = getattr(self, "n_decay", 0)
        self.size = off
        self.p, self.g, self.m, self.v = (np.zeros(off, self.dtype) for _ in range(4))
        if buffers is not None:  # parameters and gradients in given memory (minilm.fast.peer: shared)
            self.p, self.g = (np.ndarray(off, self.dtype, buffer=b) for b in buffers)
        self.t = 0
        self.aliases = dict(aliases or {})
        self.raw = {k: self.view(self.p, k) for k in self.offsets}  # the stored arrays, by storage name
        self.graw = {k: self.view(self.g, k) for k in self.offsets}
        self.params, self.grads = self.named(self.p), self.named(self.g)
        self.moments = self.named(self.m), self.named(self.v)  # kept, like params: a caller may hold them

    def view(self, buf: np.ndarray, name: str) -> np.ndarray:
        off, shape = self.offsets[name]
        return buf[off : off + math.prod(shape)].reshape(shape)

    def named(self, buf: np.ndarray) -> dict[str, np.ndarray]:
        """Views of ``buf`` under the plain model's names (stored entries not aliased keep their own name)."""
        out = {}
        hidden = {src for src, _ in self.aliases.values()}
        for name in self.offsets:
            if name not in hidden:
                out[name] = self.view(buf, name)
        for name, (src, index) in self.aliases.items():
            out[name] = self.view(buf, src)[index]
        return out

    def load(self, params: dict[str, np.ndarray]) -> None:
        """Copy a plain parameter dict into the buffer (every name must be there with its shape)."""
        mine = self.params
        if set(params) != set(mine):
            raise ValueError(f"params must have keys {sorted(mine)}, got {sorted(params)}")
        for k, a in params.items():
            if np.shape(a) != mine[k].shape:
                raise ValueError(f"params[{k!r}] must have shape {mine[k].shape}, got {np.shape(a)}")
            mine[k][...] = a

    # ---- the optimiser step, here or half of it in the second process ----

    def share(self, peer) -> None:
        """Move p, g, m and v into one buffer shared with ``peer`` (minilm.fast.procs), which keeps views of
        the same memory: from then on grad_norm and adamw_step run half of the rows there, at the same time
        (each process one core; threads of one process would wait at the interpreter lock, see
        minilm.fast.procs).  The dicts of views keep their identity; their entries now view the new memory."""
        n, item = self.size, self.dtype.itemsize
        key, buffer = peer.share(4 * n * item)
        new = [np.ndarray(n, self.dtype, buffer=buffer, offset=i * n * item) for i in range(4)]
        for dst, src in zip(new, (self.p, self.g, self.m, self.v), strict=True):
            dst[...] = src
        self.p, self.g, self.m, self.v = new
        self.raw.update({k: self.view(self.p, k) for k in self.offsets})
        self.graw.update({k: self.view(self.g, k) for k in self.offsets})
        self.params.update(self.named(self.p)), self.grads.update(self.named(self.g))
        self.moments[0].update(self.named(self.m)), self.moments[1].update(self.named(self.v))
        peer.call("flat", key, n, self.n_decay, self.dtype.str)
        self.peer, self.key, self._buffer = peer, key, buffer
        weakref.finalize(self, peer.release, key)  # the peer's views go when these buffers do

    def _shared(self):
        """The peer holding half of the rows, while it is alive and two cores are there; else None."""
        peer = getattr(self, "peer", None)
        return peer if peer is not None and peer.alive() and n_threads() == 2 else None

    def half(self) -> int:
        """Rows 0..half run here, half..size in the peer (a multiple of ALIGN)."""
        return self.size // 2 // ALIGN * ALIGN

    def grad_norm(self) -> float:
        """sqrt(sum of g^2) over every gradient (minilm.optim.clip_grad_norm's norm)."""
        peer = self._shared()
        if peer is None:
            return math.sqrt(float(np.dot(self.g, self.g)))
        h, here = self.half(), []
        theirs = peer.run("flat_sumsq", [self.key, h, self.size], [], lambda front: here.append(
            float(np.dot(self.g[:h], self.g[:h]))))
        return math.sqrt(here[0] + theirs)

    def adamw_step(self, lr, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01, max_norm=0.0,
                   norm: float | None = None) -> float:
        """Clip to ``max_norm`` (0: no clipping), then AdamW, as minilm.optim.clip_grad_norm + adamw_step.

        Returns the gradient norm before clipping (``norm``, if the caller has it already).
        """
        norm = self.grad_norm() if norm is None else norm
        scale = max_norm / (norm + 1e-6) if max_norm > 0 and norm > max_norm else 1.0
        self.t += 1
        k = (lr, beta1, beta2, eps, weight_decay, scale, self.t)
        peer = self._shared()
        if peer is None:
            adamw_rows(self.p, self.g, self.m, self.v, self.n_decay, 0, self.size, k)
        else:
            h = self.half()
            peer.run("flat_adamw", [self.key, h, self.size, k], [], lambda front: adamw_rows(
                self.p, self.g, self.m, self.v, self.n_decay, 0, h, k, alone=True))
        return norm

    def opt_state(self) -> dict:
        """minilm.optim's state dict ({"t", "m", "v"}) whose arrays are views of the moment buffers."""
        return {"t": self.t, "m": self.moments[0], "v": self.moments[1]}  # views, current after share()

    def load_opt_state(self, state: dict) -> None:
        self.t = int(state["t"])
        for mine, key in zip(self.moments, ("m", "v"), strict=True):
            for k, a in state[key].items():
                mine[k][...] = a


class FlatModel:
    """What every fast model does with its FlatParams ``flat``: parameters and gradients as named views of
    it, loading plain parameters and AdamW state in, and handing the state back out for a checkpoint."""

    def _init_flat(self, flat: FlatParams, params: dict | None) -> None:
        self.flat = flat
        self.dtype = flat.dtype
        self.params, self.grads = flat.params, flat.grads  # {name: view of the one buffer}
        if params is not None:
            flat.load(params)

    def load(self, params: dict) -> None:
        self.flat.load(params)

    def _share_optimizer(self) -> None:
        """On two cores, from SHARE_MIN entries: half of every optimiser step in the second process
        (FlatParams.share), once per peer."""
        if self.flat.size >= SHARE_MIN and n_threads() == 2 and self.flat._shared() is None:
            from minilm.fast import procs

            peer = procs.peer()
            if peer is not None:
                try:
                    self.flat.share(peer)
                except (OSError, procs.PeerError):  # no shared memory to be had: the step stays here
                    pass

    def opt_state(self) -> dict:
        return self.flat.opt_state()

    def load_opt_state(self, state: dict) -> None:
        self.flat.load_opt_state(state)


def combine_halves(g, g2, w1: float, w2: float) -> float:
    """g = w1 g + w2 g2, the gradient of a batch from its two halves' (w1, w2: their shares of the counted
    targets), over (n,) views; returns sum(g^2), the share of these entries in the gradient norm."""
    if fused.ON:  # one pass (minilm/fast/loops.c)
        return fused.combine(g, g2, w1, w2)
    f = g.dtype.type
    if w1 == w2:  # (g1 + g2) / 2: two passes, no temporary
        g += g2
        g *= f(0.5)
    else:
        g *= f(w1)
        g += f(w2) * g2
    return float(np.dot(g, g))


def adamw_rows(p, g, m, v, n_decay: int, lo: int, hi: int, k, alone: bool = False) -> None:
    """Rows lo..hi of the AdamW step, k = (lr, beta1, beta2, eps, weight_decay, scale, t): decoupled decay of
    p[:n_decay] (the matrices), then minilm.optim.adam_step's update with the gradient scale * g (clipping):

        m = beta1 m + (1 - beta1) scale g;   v = beta2 v + (1 - beta2) scale^2 g^2
        p = (1 - lr weight_decay) p - lr / bc1 * m / (sqrt(v / bc2) + eps),   bc_i = 1 - beta_i^t

    the last written as p = d p - (lr sqrt(bc2) / bc1) m / (sqrt(v) + eps sqrt(bc2)), the same number,
    so that each line is one pass (minilm.fast.blas.axpby: y = alpha x + beta y) and decay is folded into
    the last.  ``alone``: on this thread only (the other half of the rows runs in the second process).
    """
    lr, beta1, beta2, eps, weight_decay, scale, t = k
    f = p.dtype.type
    bc1, bc2 = 1 - beta1**t, 1 - beta2**t
    a1, a2 = (1 - beta1) * scale, (1 - beta2) * scale * scale
    step, e2, decay = lr * math.sqrt(bc2) / bc1, f(eps * math.sqrt(bc2)), 1 - lr * weight_decay

    def loop(r0, r1, _):  # the whole update in one compiled loop (minilm.fast.fused)
        r0, r1 = lo + r0, lo + r1
        fused.adamw(p[r0:r1], g[r0:r1], m[r0:r1], v[r0:r1], max(0, min(n_decay, r1) - r0),
                    a1, beta1, a2, beta2, step, e2, decay)

    def chain(r0, r1, store):
        r0, r1 = lo + r0, lo + r1
        gb, mb, vb, pb = g[r0:r1], m[r0:r1], v[r0:r1], p[r0:r1]
        u = scratch(store, "u", gb.shape, gb.dtype)
        axpby(a1, gb, beta1, mb)  # m = b1 m + (1 - b1) g
        np.multiply(gb, gb, out=u)
        axpby(a2, u, beta2, vb)  # v = b2 v + (1 - b2) g^2
        np.sqrt(vb, out=u)
        u += e2  # sqrt(v) + eps sqrt(bc2)
        np.divide(mb, u, out=u)
        d = max(0, min(n_decay, r1) - r0)  # rows r0 .. r0+d-1 are decayed matrices
        if d:
            axpby(-step, u[:d], decay, pb[:d])  # p = (1 - lr wd) p - lr sqrt(bc2) / bc1 * m / (...)
        if d < r1 - r0:
            axpby(-step, u[d:], 1.0, pb[d:])

    body = loop if fused.ON else chain
    if alone:
        with threads.alone():
            run_rows(body, hi - lo, 1, min_rows=4096)
    else:
        run_rows(body, hi - lo, 1, min_rows=4096)

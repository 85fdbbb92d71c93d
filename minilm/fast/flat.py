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
cache-sized blocks on two threads, with gradient clipping folded in (the
clipped gradient is ``scale * g``, so ``m`` and ``v`` take ``scale`` and
``scale**2``, and the gradient buffer itself is not rewritten).

A name may also be declared as a view of another entry (``alias``): the
Transformer keeps W_q, W_k, W_v as the three column blocks of one (C, 3C)
matrix, so that one matmul computes q, k and v.
"""

from __future__ import annotations

import math

import numpy as np

from minilm.fast.threads import run_rows, scratch

ALIGN = 16  # every array starts on a 64-byte boundary (16 float32)


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

    def move_params(self, buffer) -> None:
        """Put the parameters into ``buffer`` (memory shared with minilm.fast.peer's replica); the dicts of
        views (``params``, ``raw``) stay the same objects, their entries now views of the new memory."""
        new = np.ndarray(self.size, self.dtype, buffer=buffer)
        new[...] = self.p
        self.p = new
        self.raw.update({k: self.view(new, k) for k in self.offsets})
        self.params.update(self.named(new))

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

    def grad_norm(self) -> float:
        """sqrt(sum of g^2) over every gradient (minilm.optim.clip_grad_norm's norm)."""
        return math.sqrt(float(np.dot(self.g, self.g)))

    def adamw_step(self, lr, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01, max_norm=0.0,
                   norm: float | None = None) -> float:
        """Clip to ``max_norm`` (0: no clipping), then AdamW, as minilm.optim.clip_grad_norm + adamw_step.

        Returns the gradient norm before clipping (``norm``, if the caller has it already).
        """
        f = self.dtype.type
        norm = self.grad_norm() if norm is None else norm
        scale = max_norm / (norm + 1e-6) if max_norm > 0 and norm > max_norm else 1.0
        self.t += 1
        bc1, bc2 = 1 - beta1**self.t, 1 - beta2**self.t
        if weight_decay:
            self.p[: self.n_decay] *= f(1 - lr * weight_decay)  # decoupled decay, matrices only
        a1, a2 = f((1 - beta1) * scale), f((1 - beta2) * scale * scale)
        b1, b2, step, c2, e = f(beta1), f(beta2), f(lr / bc1), f(bc2), f(eps)
        p, g, m, v = self.p, self.g, self.m, self.v

        def chain(lo, hi, store):
            gb, mb, vb = g[lo:hi], m[lo:hi], v[lo:hi]
            t = scratch(store, "t", gb.shape, gb.dtype)
            mb *= b1
            np.multiply(gb, a1, out=t)
            mb += t  # m = b1 m + (1 - b1) g
            vb *= b2
            np.multiply(gb, gb, out=t)
            t *= a2
            vb += t  # v = b2 v + (1 - b2) g^2
            np.divide(vb, c2, out=t)
            np.sqrt(t, out=t)
            t += e  # sqrt(v / bc2) + eps
            u = scratch(store, "u", gb.shape, gb.dtype)
            np.multiply(mb, step, out=u)
            u /= t
            p[lo:hi] -= u  # p -= lr / bc1 * m / (sqrt(v / bc2) + eps)

        run_rows(chain, self.size, 1, min_rows=4096)
        return norm

    def opt_state(self) -> dict:
        """minilm.optim's state dict ({"t", "m", "v"}) whose arrays are views of the moment buffers."""
        return {"t": self.t, "m": self.named(self.m), "v": self.named(self.v)}

    def load_opt_state(self, state: dict) -> None:
        self.t = int(state["t"])
        for buf, key in ((self.m, "m"), (self.v, "v")):
            mine = self.named(buf)
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

    def opt_state(self) -> dict:
        return self.flat.opt_state()

    def load_opt_state(self, state: dict) -> None:
        self.flat.load_opt_state(state)


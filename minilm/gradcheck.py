"""Gradient checking by centred finite differences.

For a function ``out = f(x)`` and an upstream gradient ``dout`` (any array of
the shape of ``out``), the backward pass must return

    dx = d/dx sum(f(x) * dout)

Each entry is estimated by the centred difference

    dx[i] ~ sum((f(x + h e_i) - f(x - h e_i)) * dout) / (2h)

whose error is O(h^2).  In float64 with h = 1e-5 an exact backward agrees to
about 1e-9 or better; a wrong one (a dropped term, a factor of 1.01) is off by
1e-3 or more.  Agreement is measured by the relative error

    rel_error(a, n) = max_i |a_i - n_i| / max(1e-8, |a_i| + |n_i|)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

TOLERANCE = 1e-7  # largest relative error a gradient may have to pass


def rel_error(a: np.ndarray, n: np.ndarray) -> float:
    """Largest elementwise |a - n| / max(1e-8, |a| + |n|); 0.0 for empty arrays."""
    a, n = np.asarray(a, dtype=np.float64), np.asarray(n, dtype=np.float64)
    if a.shape != n.shape:
        raise ValueError(f"rel_error: shapes differ, {a.shape} vs {n.shape}")
    if a.size == 0:
        return 0.0
    return float(np.max(np.abs(a - n) / np.maximum(1e-8, np.abs(a) + np.abs(n))))


def numerical_gradient(
    f: Callable[[], np.ndarray], x: np.ndarray, dout: np.ndarray | float = 1.0, h: float = 1e-5
) -> np.ndarray:
    """Centred-difference gradient of sum(f() * dout) with respect to ``x``.

    ``f`` takes no arguments and reads ``x``, which is perturbed in place one
    entry at a time and restored afterwards.  ``x`` must be float64.
    """
    if x.dtype != np.float64:
        raise ValueError(f"numerical_gradient needs a float64 array, got {x.dtype}")
    grad = np.zeros_like(x)
    flat, gflat = x.reshape(-1), grad.reshape(-1)  # views of x and grad
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + h
        pos = np.array(f(), dtype=np.float64)
        flat[i] = old - h
        neg = np.array(f(), dtype=np.float64)
        flat[i] = old
        gflat[i] = np.sum((pos - neg) * dout) / (2 * h)
    return grad


def check_pair(
    forward: Callable,
    backward: Callable,
    inputs: Sequence[np.ndarray],
    names: Sequence[str] | None = None,
    kwargs: Mapping | None = None,
    wrt: Sequence[int] | None = None,
    seed: int = 0,
) -> dict[str, float]:
    """Check ``backward`` against ``forward`` for each float input.

    ``forward(*inputs, **kwargs)`` returns ``(out, cache)``;
    ``backward(dout, cache)`` returns the gradients of the inputs in order
    (a single array when there is one input).  ``wrt`` picks which inputs to
    check (default: every floating-point input).  Returns
    ``{"d" + name: largest relative error}``.
    """
    kwargs = dict(kwargs or {})
    inputs = [np.array(x, dtype=np.float64) if _is_float(x) else x for x in inputs]
    names = list(names) if names is not None else [f"x{i}" for i in range(len(inputs))]
    if wrt is None:
        wrt = [i for i, x in enumerate(inputs) if _is_float(x)]
    out, cache = forward(*inputs, **kwargs)
    dout = np.random.default_rng(seed).standard_normal(np.shape(out))
    grads = backward(dout, cache)
    if not isinstance(grads, tuple):
        grads = (grads,)
    errors = {}
    for i in wrt:
        num = numerical_gradient(lambda: forward(*inputs, **kwargs)[0], inputs[i], dout)
        errors["d" + names[i]] = rel_error(grads[i], num)
    return errors


def check_model(
    loss_and_grads: Callable[[dict], tuple[float, dict]],
    params: dict[str, np.ndarray],
    keys: Sequence[str] | None = None,
    max_entries: int | None = None,
    seed: int = 0,
) -> dict[str, float]:
    """Check every parameter's gradient of a scalar loss.

    ``loss_and_grads(params)`` returns ``(loss, grads)`` with ``grads`` keyed
    like ``params``.  Parameters are converted to float64 first.  With
    ``max_entries`` only that many randomly chosen entries of each parameter
    are checked (for larger models); by default every entry is.
    Returns ``{"d" + key: largest relative error}``.
    """
    params = {k: np.array(v, dtype=np.float64) for k, v in params.items()}
    _, grads = loss_and_grads(params)
    missing = set(params) - set(grads)
    if missing:
        raise ValueError(f"check_model: no gradient for parameters {sorted(missing)}")
    for k, p in params.items():
        if np.shape(grads[k]) != p.shape:
            raise ValueError(f"check_model: gradient of {k} has shape {np.shape(grads[k])}, expected {p.shape}")
    rng = np.random.default_rng(seed)
    errors = {}
    for k in keys if keys is not None else params:
        flat = params[k].reshape(-1)  # a view: perturbing it perturbs params[k]
        idx = np.arange(flat.size)
        if max_entries is not None and flat.size > max_entries:
            idx = rng.choice(flat.size, size=max_entries, replace=False)
        num = np.empty(idx.size)
        for j, i in enumerate(idx):
            old = flat[i]
            flat[i] = old + 1e-5
            lp = float(loss_and_grads(params)[0])
            flat[i] = old - 1e-5
            lm = float(loss_and_grads(params)[0])
            flat[i] = old
            num[j] = (lp - lm) / 2e-5
        errors["d" + k] = rel_error(np.asarray(grads[k]).reshape(-1)[idx], num)
    return errors


def _is_float(x) -> bool:
    return isinstance(x, np.ndarray) and np.issubdtype(x.dtype, np.floating)

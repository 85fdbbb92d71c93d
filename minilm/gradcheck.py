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

A number says that a gradient is wrong, not how.  ``describe_difference``
says how, where it is clear: a constant ratio (a missing scale), a flipped
sign, an error confined to some indices of one axis (rows, time steps, heads),
and the cosine between the two.  Each check also runs once in float32 (no
finite differences there): outputs and gradients must keep the input's dtype.
Inside ``with recording() as found:`` every failed comparison is appended to
``found`` as a ``Finding`` (name, error, what differs), so a caller can print
the words beside the number.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

TOLERANCE = 1e-7  # largest relative error a gradient may have to pass
LEGEND = {"B": "batch rows", "T": "time steps", "H": "heads", "C": "channels", "V": "vocabulary entries",
          "D": "input features", "Hd": "hidden units", "hs": "head channels", "T_q": "query positions",
          "T_kv": "key positions"}  # the shape letters of minilm/__init__.py, for feedback


@dataclass(frozen=True)
class Finding:
    """One failed comparison: ``name`` is its key in the errors a check returns ("dx", "dx float32"), ``error``
    its value, ``note`` what differs, in words, starting with the gradient's name."""

    name: str
    error: float
    note: str


_RECORDERS: list[list[Finding]] = []


@contextmanager
def recording():
    """Collect a ``Finding`` for every comparison that fails inside the block (check_pair, check_model)."""
    found: list[Finding] = []
    _RECORDERS.append(found)
    try:
        yield found
    finally:
        _RECORDERS.remove(found)


def _found(name: str, error: float, note: str) -> float:
    for r in _RECORDERS:
        r.append(Finding(name, error, note))
    return error


def _indices(idx: np.ndarray) -> str:
    """0, 2, 5-7: the indices, runs written as ranges."""
    runs, start = [], None
    for i, j in enumerate(idx):
        if start is None:
            start = j
        if i + 1 == len(idx) or idx[i + 1] != j + 1:
            runs.append(f"{start}" if start == j else f"{start}-{j}")
            start = None
    return ", ".join(runs[:6]) + (", ..." if len(runs) > 6 else "")


def _axis_name(k: int, ndim: int, axes: str | None) -> str:
    """'time steps', 'rows' or 'indices of axis 2': how the feedback names axis ``k``."""
    letters = axes.split() if axes else []
    if len(letters) == ndim:
        return LEGEND.get(letters[k], f"indices of axis {k} ({letters[k]})")
    if ndim == 2:
        return ("rows", "columns")[k]
    return f"indices of axis {k}"


def describe_difference(yours: np.ndarray, expected: np.ndarray, against: str = "the numerical gradient",
                        axes: str | None = None, tol: float = TOLERANCE) -> str:
    """How ``yours`` differs from ``expected`` (same shape), in words: a constant ratio or a flipped sign,
    the indices of each axis that hold every wrong entry when they are not all of them, and the cosine.
    ``axes`` names the axes with the package's shape letters ("B T C") for the words (time steps, heads)."""
    a, n = np.asarray(yours, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    bad_values = ~np.isfinite(a)
    if bad_values.any():
        return f"{int(bad_values.sum())} of {a.size} entries of yours are NaN or infinite"
    bad = np.abs(a - n) / np.maximum(1e-8, np.abs(a) + np.abs(n)) > tol  # the wrong entries
    na, nn = float(np.linalg.norm(a)), float(np.linalg.norm(n))
    if na == 0.0:
        return "yours is zero everywhere"
    if nn == 0.0:
        return f"{against} is zero everywhere, yours is not"
    parts = []
    ratio = float(np.sum(a * n) / nn**2)  # the best single factor: a ~ ratio * n
    if np.linalg.norm(a - ratio * n) <= 1e-3 * na:  # one factor everywhere (entries zero in both stay zero)
        if abs(ratio + 1) < 1e-3:
            parts.append("the sign is flipped everywhere")
        else:
            parts.append(f"≈ {ratio:.2f} × {against} everywhere" if abs(ratio) >= 0.1 else
                         f"≈ {ratio:.3g} × {against} everywhere")
    else:
        if bad.any() and np.all(np.abs(a[bad] + n[bad]) <= 1e-3 * (np.abs(a[bad]) + np.abs(n[bad]))):
            parts.append(f"the sign is flipped at the {int(bad.sum())} wrong entries")
        if bad.any() and not bad.all():
            for k in range(a.ndim):
                hit = np.flatnonzero(bad.any(axis=tuple(j for j in range(a.ndim) if j != k)))
                if 0 < hit.size < a.shape[k]:
                    parts.append(f"wrong only in {_axis_name(k, a.ndim, axes)} {_indices(hit)} of {a.shape[k]}")
            parts.append(f"{int(bad.sum())} of {a.size} entries wrong")
    parts.append(f"cosine {np.sum(a * n) / (na * nn):.4f}")
    return "; ".join(parts)


def compare(name: str, yours, expected: np.ndarray, against: str = "the numerical gradient",
            axes: str | None = None) -> float:
    """rel_error of ``yours`` against ``expected``; inf when yours is missing or has another shape.  A
    failure is recorded (see ``recording``) with what differs: ``dgamma: yours (3, 8), expected (8,)``."""
    if yours is None or not hasattr(yours, "shape"):
        return _found(name, np.inf, f"{name}: yours is {type(yours).__name__}, expected an array of shape "
                                    f"{np.shape(expected)}")
    if np.shape(yours) != np.shape(expected):
        return _found(name, np.inf, f"{name}: yours {np.shape(yours)}, expected {np.shape(expected)}")
    err = rel_error(yours, expected)
    if not err <= TOLERANCE:
        _found(name, err, f"{name}: relative error {err:.1e}; "
                          + describe_difference(yours, expected, against, axes))
    return err


def check_dtype(name: str, value, dtype) -> float | None:
    """None when ``value`` is not a float array or keeps ``dtype``; else inf, recorded as ``name + " float32"``."""
    if isinstance(value, np.ndarray) and np.issubdtype(value.dtype, np.floating) and value.dtype != dtype:
        return _found(f"{name} {np.dtype(dtype)}", np.inf,
                      f"{name}: yours is {value.dtype} for {np.dtype(dtype)} inputs, expected {np.dtype(dtype)} "
                      f"(outputs and gradients keep the input's dtype)")
    return None


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
    axes: Mapping[str, str] | None = None,
) -> dict[str, float]:
    """Check ``backward`` against ``forward`` for each float input.

    ``forward(*inputs, **kwargs)`` returns ``(out, cache)``;
    ``backward(dout, cache)`` returns the gradients of the inputs in order
    (a single array when there is one input).  ``wrt`` picks which inputs to
    check (default: every floating-point input).  Returns
    ``{"d" + name: largest relative error}``: inf for a gradient of the wrong
    shape or one not returned.  Then once in float32 (inputs and ``dout``):
    an output or gradient of another dtype adds ``"out float32"`` or
    ``"d" + name + " float32"`` with error inf.  ``axes`` ({name: "B T C"})
    names the axes of an input for the feedback of a failed comparison.
    """
    kwargs, axes = dict(kwargs or {}), dict(axes or {})
    inputs = [np.array(x, dtype=np.float64) if _is_float(x) else x for x in inputs]
    names = list(names) if names is not None else [f"x{i}" for i in range(len(inputs))]
    if wrt is None:
        wrt = [i for i, x in enumerate(inputs) if _is_float(x)]
    out, cache = forward(*inputs, **kwargs)
    dout = np.random.default_rng(seed).standard_normal(np.shape(out))
    grads = _as_tuple(backward(dout, cache))
    errors = {}
    for i in wrt:
        num = numerical_gradient(lambda: forward(*inputs, **kwargs)[0], inputs[i], dout)
        mine = grads[i] if i < len(grads) else None
        errors["d" + names[i]] = compare("d" + names[i], mine, num, axes=axes.get(names[i]))
    # float32: the same inputs, no finite differences; every output and gradient must stay float32
    inputs32 = [x.astype(np.float32) if _is_float(x) else x for x in inputs]
    out32, cache32 = forward(*inputs32, **kwargs)
    if check_dtype("out", out32, np.float32) is not None:
        errors["out float32"] = np.inf
    grads32 = _as_tuple(backward(dout.astype(np.float32), cache32))
    for i in wrt:
        if i < len(grads32) and check_dtype("d" + names[i], grads32[i], np.float32) is not None:
            errors[f"d{names[i]} float32"] = np.inf
    return errors


def check_model(
    loss_and_grads: Callable[[dict], tuple[float, dict]],
    params: dict[str, np.ndarray],
    keys: Sequence[str] | None = None,
    max_entries: int | None = None,
    seed: int = 0,
    float32: bool = True,
    largest: bool = False,
) -> dict[str, float]:
    """Check every parameter's gradient of a scalar loss.

    ``loss_and_grads(params)`` returns ``(loss, grads)`` with ``grads`` keyed
    like ``params``.  Parameters are converted to float64 first.  With
    ``max_entries`` only that many randomly chosen entries of each parameter
    are checked (for larger models); by default every entry is.  ``largest``
    picks, instead of random entries, the ``max_entries`` of largest
    |gradient|: where the loss's own rounding is larger (a long float64
    computation), a tiny entry's centred difference is mostly that rounding.
    Returns ``{"d" + key: largest relative error}``: inf for a gradient
    missing or of the wrong shape.  Last, one call with the parameters in
    float32: a gradient of another dtype adds ``"d" + key + " float32"``: inf
    (``float32=False`` leaves that out, for a model built for one dtype).
    """
    params = {k: np.array(v, dtype=np.float64) for k, v in params.items()}
    _, grads = loss_and_grads(params)
    rng = np.random.default_rng(seed)
    errors = {}
    for k in keys if keys is not None else params:
        mine = grads.get(k)
        if mine is None or np.shape(mine) != params[k].shape:
            errors["d" + k] = compare("d" + k, mine, params[k])  # names what is missing or misshapen
            continue
        flat = params[k].reshape(-1)  # a view: perturbing it perturbs params[k]
        idx = np.arange(flat.size)
        if max_entries is not None and flat.size > max_entries:
            if largest:
                idx = np.sort(np.argsort(-np.abs(np.asarray(mine)).reshape(-1), kind="stable")[:max_entries])
            else:
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
        if idx.size == flat.size:  # every entry: compared in the parameter's shape, so feedback can say where
            errors["d" + k] = compare("d" + k, np.asarray(mine), num.reshape(params[k].shape))
        else:
            errors["d" + k] = compare("d" + k, np.asarray(mine).reshape(-1)[idx], num)
    _, grads32 = loss_and_grads({k: v.astype(np.float32) for k, v in params.items()}) if float32 else (0, {})
    for k in keys if keys is not None and float32 else params if float32 else []:
        if check_dtype("d" + k, grads32.get(k), np.float32) is not None:
            errors[f"d{k} float32"] = np.inf
    return errors


def _as_tuple(grads) -> tuple:
    return grads if isinstance(grads, tuple) else (grads,)


def _is_float(x) -> bool:
    return isinstance(x, np.ndarray) and np.issubdtype(x.dtype, np.floating)

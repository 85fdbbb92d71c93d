"""Input checks shared by every layer: clear ValueErrors that name the problem."""

from __future__ import annotations

import numpy as np


def check_float(x, name: str, min_ndim: int = 1, last_dim: int | None = None) -> np.ndarray:
    """``x`` must be a float32/float64 array with at least ``min_ndim`` dimensions
    and, if given, a last dimension of ``last_dim``."""
    if not isinstance(x, np.ndarray):
        raise ValueError(f"{name} must be a numpy array, got {type(x).__name__}")
    if x.dtype not in (np.float32, np.float64):
        raise ValueError(f"{name} must be float32 or float64, got dtype {x.dtype}")
    if x.ndim < min_ndim:
        raise ValueError(f"{name} must have at least {min_ndim} dimension(s), got shape {x.shape}")
    if last_dim is not None and x.shape[-1] != last_dim:
        raise ValueError(f"{name} must have last dimension {last_dim}, got shape {x.shape}")
    return x


def check_ids(ids, vocab_size: int, name: str = "ids") -> np.ndarray:
    """``ids`` must be an integer array with every value in [0, vocab_size)."""
    ids = np.asarray(ids)
    if not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"{name} must be integer token ids, got dtype {ids.dtype}")
    if ids.size and (ids.min() < 0 or ids.max() >= vocab_size):
        bad = ids[(ids < 0) | (ids >= vocab_size)].reshape(-1)[0]
        raise ValueError(f"{name}: token id {bad} is outside [0, {vocab_size}) (vocabulary size {vocab_size})")
    return ids


def check_param_dict(params: dict, shapes: dict[str, tuple[int, ...]]) -> np.dtype:
    """``params`` must have exactly the keys of ``shapes``, each with its shape, all float32 or all
    float64; returns that dtype."""
    if set(params) != set(shapes):
        raise ValueError(f"params must have keys {sorted(shapes)}, got {sorted(params)}")
    dtypes = {params[k].dtype for k in shapes}
    if len(dtypes) != 1 or not dtypes <= {np.dtype(np.float32), np.dtype(np.float64)}:
        raise ValueError(f"params must all be float32 or all float64, got {sorted(map(str, dtypes))}")
    for k, shape in shapes.items():
        if params[k].shape != shape:
            raise ValueError(f"params[{k!r}] must have shape {shape}, got {params[k].shape}")
    return dtypes.pop()


def check_param_shapes(params: dict, shapes: dict[str, tuple[int, ...]]) -> None:
    """Every key of ``shapes`` must be in ``params`` with that shape (extra keys are allowed)."""
    for k, shape in shapes.items():
        if k not in params:
            raise ValueError(f"params lack {k!r} (a config of {len(shapes)} parameters)")
        if np.shape(params[k]) != shape:
            raise ValueError(f"params[{k!r}] must have shape {shape}, got {np.shape(params[k])}")

"""How many BLAS threads a command gives NumPy's matrix products.

OpenBLAS splits a product over its threads, and the threads wait for each
other by spinning.  For a small product the waiting costs more than the
split saves, and when another process holds a core (a shared class server,
a JupyterHub) a spinning thread that has lost its core holds up every
product: the default of one thread per core can make a small model several
times slower.  So the commands choose:

    one thread   when the largest product of a training step is small
                 (fewer than SPLIT_MACS multiply-adds) or the machine is busy
                 (the 1-minute load average leaves less than one core free);
    all cores    otherwise.

``--threads N`` overrides the choice.  threadpoolctl sets the limit for the
duration of the command and puts the old one back.
"""

from __future__ import annotations

import os
from contextlib import contextmanager

SPLIT_MACS = 1 << 26  # about 67 million multiply-adds: below this a product is faster on one thread


def largest_product(params: dict, rows: int) -> int:
    """Multiply-adds of the largest (rows, K) x (K, N) product the model's weight matrices take part in."""
    sizes = [p.shape[0] * p.shape[1] for p in params.values() if getattr(p, "ndim", 0) == 2]
    return rows * max(sizes, default=0)


def choose(params: dict, rows: int, requested: int | None = None) -> tuple[int, str]:
    """(threads, why): ``requested`` if given, else one thread or all cores as the module docstring says."""
    cores = os.cpu_count() or 1
    if requested is not None:
        if requested < 1:
            raise ValueError(f"--threads must be a positive integer, got {requested}")
        return requested, "--threads"
    macs = largest_product(params, rows)
    if macs < SPLIT_MACS:
        return 1, f"largest product {macs / 1e6:.1f}M multiply-adds: one thread is faster"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    if load > cores - 1:
        return 1, f"load average {load:.1f} on {cores} cores: spinning threads would wait for busy cores"
    return cores, f"largest product {macs / 1e6:.0f}M multiply-adds on a quiet machine"


@contextmanager
def blas_threads(n: int):
    """NumPy's BLAS limited to ``n`` threads inside the block (a no-op without threadpoolctl's BLAS)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # threadpoolctl is a dependency; without it the products keep BLAS's default
        yield
        return
    with threadpool_limits(limits=n, user_api="blas"):
        yield

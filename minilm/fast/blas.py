"""Run NumPy's BLAS on one thread while the fast path splits matrix products itself.

OpenBLAS splits one matrix product over its threads and makes them wait for
one another by spinning.  For the products of a small model (768 x 128 by
128 x 512, say) that waiting is a large part of the time, and on a machine
that is also running something else a spinning thread that has lost its
core holds up the whole product.  The fast path therefore sets BLAS to one
thread for the duration of a step and cuts each large product into two
halves of rows that run on two Python threads (minilm.fast.kernels.matmul),
which wait for each other by sleeping instead.

``one_thread()`` is a context manager that does the switch and restores the
previous thread count; it yields False (and changes nothing) when NumPy's
BLAS is not an OpenBLAS it can find, and the fast path then leaves the
products to BLAS.
"""

from __future__ import annotations

import ctypes
import functools
import glob
import os
from contextlib import contextmanager

import numpy as np

_SET = ("scipy_openblas_set_num_threads64_", "openblas_set_num_threads64_", "openblas_set_num_threads")
_GET = ("scipy_openblas_get_num_threads64_", "openblas_get_num_threads64_", "openblas_get_num_threads")
# (name, integer type) of OpenBLAS's out-of-place transpose, cblas_?omatcopy, for float32 and float64
_OMATCOPY = {"float32": (("scipy_cblas_somatcopy64_", ctypes.c_int64), ("cblas_somatcopy64_", ctypes.c_int64),
                         ("cblas_somatcopy", ctypes.c_int)),
             "float64": (("scipy_cblas_domatcopy64_", ctypes.c_int64), ("cblas_domatcopy64_", ctypes.c_int64),
                         ("cblas_domatcopy", ctypes.c_int))}
_api = None
_omatcopy = None


def _library():
    """The OpenBLAS library NumPy loaded (a ctypes.CDLL) with its thread functions, or None."""
    paths = glob.glob(os.path.join(os.path.dirname(np.__file__), os.pardir, "numpy.libs", "*openblas*"))
    paths += glob.glob(os.path.join(os.path.dirname(np.__file__), ".dylibs", "*openblas*"))
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        if any(hasattr(lib, n) for n in _GET) and any(hasattr(lib, n) for n in _SET):
            return lib
    return None


def _find():
    """(get, set) functions of the OpenBLAS NumPy loaded, or None."""
    lib = _library()
    if lib is None:
        return None
    get = next(getattr(lib, n) for n in _GET if hasattr(lib, n))
    set_ = next(getattr(lib, n) for n in _SET if hasattr(lib, n))
    get.restype, set_.argtypes = ctypes.c_int, [ctypes.c_int]
    return get, set_


def api():
    global _api
    if _api is None:
        _api = _find() or False
    return _api


@contextmanager
def one_thread():
    """BLAS on one thread inside the block (yields True), or untouched (yields False)."""
    found = api()
    if not found:
        yield False
        return
    get, set_ = found
    before = get()
    set_(1)
    try:
        yield True
    finally:
        set_(before)


def on_one_thread(fn):
    """fn with BLAS on one thread for the whole call (one_thread()): the fast models' entry points.

    One product on OpenBLAS's threads leaves them spinning for a while after it returns (about 0.1 s
    unless OPENBLAS_THREAD_TIMEOUT says otherwise), on the core that the fast path's second thread or
    process needs: on the bench's LSTM, one such product per call (a sum of weight-gradient parts)
    made the whole call about twice as slow.  So every product of a fast step runs on one thread, and the
    fast path splits the large ones itself (minilm.fast.kernels.matmul_split)."""

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        with one_thread():
            return fn(*args, **kwargs)

    return wrapped


# ---- small products: column blocks -------------------------------------------------------------

SMALL_PRODUCT = 1_000_000
"""M K N of an (M, K) x (K, N) product up to which OpenBLAS (0.3.31) with its SkylakeX kernels runs it on
its small-matrix kernel: measured on a machine with those kernels, (8, 128, 512) runs at about 100 GFLOPS and
(32, 128, 512) at about 77, (12, 256, 1024) at about 40 (``python -m minilm bench --profile``
prints the LSTM's products whole and in blocks)."""

SMALL_KERNEL_CORES = ("skylakex", "cooperlake", "sapphirerapids")
"""OpenBLAS's names of the cores whose kernels include the small-matrix one (the AVX-512 kernels).  With
the others (Haswell's, say) a product cut into blocks only makes more calls, and the steps ran slower with
them (``python benchmarks/column_blocks.py`` times both in the LSTM's fast steps, taking turns)."""

_CORENAME = ("scipy_openblas_get_corename64_", "openblas_get_corename64_", "openblas_get_corename")


@functools.cache
def core() -> str:
    """The name of the kernels NumPy's OpenBLAS chose for this CPU ("Haswell", "SkylakeX", ...), or ""."""
    lib = _library()
    fn = next((getattr(lib, n) for n in _CORENAME if lib is not None and hasattr(lib, n)), None)
    if fn is None:
        return ""
    fn.restype = ctypes.c_char_p
    return (fn() or b"").decode(errors="replace").strip()


def small_product() -> int:
    """The ``small`` of column_blocks for the LSTM's recurrent products: SMALL_PRODUCT with the kernels of
    SMALL_KERNEL_CORES, else 0 (whole products)."""
    return SMALL_PRODUCT if core().lower() in SMALL_KERNEL_CORES else 0


def column_blocks(M: int, K: int, N: int, small: int | None = None) -> list[tuple[int, int]]:
    """Column ranges [(c0, c1), ...] covering 0..N that cut an (M, K) x (K, N) product into
    products of at most ``small`` (SMALL_PRODUCT) multiply-adds each: the fewest power-of-two number of blocks,
    no block narrower than 16 columns.  One block [(0, N)] when the product is small already, or ``small`` is 0.

    The LSTM's recurrent products (minilm.fast.lstm), h_{t-1} W_h (B, Hd) x (Hd, 4Hd) and
    dA_t W_h^T (B, 4Hd) x (4Hd, Hd), are made one block of W's columns at a time, each block a
    contiguous copy: each output column is the same dot product, summed by another kernel.
    """
    small = SMALL_PRODUCT if small is None else small
    if small <= 0:
        return [(0, N)]
    p = 1
    while M * K * N > small * p and N // (2 * p) >= 16:
        p *= 2
    w = N // p
    return [(j * w, N if j == p - 1 else (j + 1) * w) for j in range(p)]


# ---- transposed copies ---------------------------------------------------------------------------

def _functions(table: dict, argtypes) -> dict:
    """{dtype name: function} of the first of each dtype's (name, integer type) in ``table`` that NumPy's
    OpenBLAS exports; ``argtypes(integer, real)`` gives the function's ctypes argument types."""
    lib, found = _library(), {}
    for dtype, names in table.items():
        for name, integer in names:
            if lib is not None and hasattr(lib, name):
                fn = getattr(lib, name)
                fn.argtypes = argtypes(integer, ctypes.c_float if dtype == "float32" else ctypes.c_double)
                fn.restype = None
                found[dtype] = fn
                break
    return found


def _omatcopy_functions() -> dict:
    """OpenBLAS's cblas_?omatcopy(order, trans, rows, cols, alpha, a, lda, b, ldb)."""
    return _functions(_OMATCOPY, lambda i, r: [ctypes.c_int, ctypes.c_int, i, i, r, ctypes.c_void_p, i,
                                               ctypes.c_void_p, i])


def transpose(a, out) -> None:
    """out[...] = a.T for a (R, C) and out (C, R), each with unit stride along its rows and the same dtype.

    NumPy copies a transposed view element by element with a stride of a whole row (about 3 ns per
    element here); OpenBLAS's cblas_?omatcopy does it in blocks, about ten times faster (the LSTM's
    copies of W_h^T and W_x^T, minilm.fast.lstm).  Without it, or for another dtype or layout, NumPy.
    """
    global _omatcopy
    if _omatcopy is None:
        _omatcopy = _omatcopy_functions()
    fn = _omatcopy.get(a.dtype.name)
    R, C = a.shape
    size = a.itemsize
    if (fn is None or out.dtype != a.dtype or out.shape != (C, R) or a.strides[1] != size
            or out.strides[1] != size or a.strides[0] % size or out.strides[0] % size):
        np.copyto(out, a.T)
        return
    fn(101, 112, R, C, 1.0, a.ctypes.data, a.strides[0] // size, out.ctypes.data, out.strides[0] // size)


# ---- y = alpha x + beta y ------------------------------------------------------------------------

_AXPBY = {"float32": (("scipy_cblas_saxpby64_", ctypes.c_int64), ("cblas_saxpby64_", ctypes.c_int64),
                      ("cblas_saxpby", ctypes.c_int)),
          "float64": (("scipy_cblas_daxpby64_", ctypes.c_int64), ("cblas_daxpby64_", ctypes.c_int64),
                      ("cblas_daxpby", ctypes.c_int))}
_axpby = None


def _axpby_functions() -> dict:
    """OpenBLAS's cblas_?axpby(n, alpha, x, incx, beta, y, incy), an OpenBLAS extension."""
    return _functions(_AXPBY, lambda i, r: [i, r, ctypes.c_void_p, i, r, ctypes.c_void_p, i])


def axpby(alpha: float, x, beta: float, y) -> None:
    """y = alpha x + beta y in place, in one pass (x, y: 1-D, contiguous, the same dtype and length).

    NumPy needs two or three passes and a temporary (y *= beta; y += alpha x); OpenBLAS's cblas_?axpby
    makes one, which is what the AdamW step's moment updates and its final update of p are
    (minilm.fast.flat.adamw_rows).  Without it, or for another dtype or layout, NumPy.
    """
    global _axpby
    if _axpby is None:
        _axpby = _axpby_functions()
    fn = _axpby.get(y.dtype.name)
    if fn is None or x.dtype != y.dtype or x.shape != y.shape or x.ndim != 1 or not (
            x.flags.c_contiguous and y.flags.c_contiguous):
        y *= y.dtype.type(beta)
        y += y.dtype.type(alpha) * x
        return
    fn(y.shape[0], alpha, x.ctypes.data, 1, beta, y.ctypes.data, 1)

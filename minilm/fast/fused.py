"""The fast path's elementwise chains as single loops: minilm/fast/loops.c, compiled once, called through ctypes.

minilm.fast.kernels writes each formula as a chain of NumPy calls, and every
call is a pass over memory: GELU's forward is nine passes over a (B T, 4C)
array, its backward nine more, a LayerNorm seven.  A compiled loop reads each
element once, keeps the intermediate numbers in registers and writes the
result once (``python -m minilm bench --profile`` shows what that saves, op by
op).  The loops are in loops.c, next to this file, one C function per NumPy
chain, each named after the kernel it mirrors; the matrix products stay
NumPy's (BLAS).

Where a C compiler is found (``$CC``, else ``cc``), the first use compiles
loops.c into the user's cache folder (``$XDG_CACHE_HOME`` or ~/.cache, then
minilm/; a temporary folder if that cannot be written), once per source,
compiler and machine, and every later process loads it (``ON``).  Without a
compiler, or with MINILM_FUSED=0, the kernels run their NumPy chains, which
give the same numbers to rounding (tests/test_fast_fused.py checks each loop
against its chain, in float32 and float64).

Each wrapper here takes the kernel's C-contiguous arrays, all of one dtype
(float32 or float64), and calls the loop of that dtype; ctypes gives up the
interpreter lock during the call, so two threads run two halves at once.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import weakref

import numpy as np

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "loops.c")
FLAGS = ("-O3", "-march=native", "-fopenmp-simd", "-fno-math-errno", "-shared", "-fPIC")
# x86-64: where the CPU has AVX-512, loops of whole 512-bit registers (GCC and Clang choose 256 bits unless told);
# the exp of GELU and of the softmax run faster so.  A compiler that refuses the flag gets the tries without it.
WIDE = ("-mprefer-vector-width=512",) if platform.machine().lower() in ("x86_64", "amd64") else ()
MVEC = ("-Wl,--no-undefined", "-lmvec", "-lm")
TRIES = (((*WIDE, "-DMINILM_MVEC"), MVEC), (WIDE, ("-lm",)),  # glibc's vector exp and tanh if they link
         (("-DMINILM_MVEC",), MVEC), ((), ("-lm",)))  # else the scalar ones


def _cache_folders():
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    uid = os.getuid() if hasattr(os, "getuid") else 0
    return os.path.join(base, "minilm"), os.path.join(tempfile.gettempdir(), f"minilm-{uid}")


def _machine() -> str:
    """What -march=native depends on: the CPU's model and flags (Linux), else the platform's name."""
    try:
        with open("/proc/cpuinfo") as f:
            lines = [ln for ln in f.read().splitlines() if ln.startswith(("model name", "flags"))][:2]
        return "\n".join(lines)
    except OSError:
        return platform.platform() + platform.processor()


def _compile(cc: str, folder: str) -> str | None:
    """The path of the compiled loops in ``folder``, compiling them if they are not there yet; None if
    the compiler fails with every set of flags."""
    with open(SOURCE, "rb") as f:
        source = f.read()
    version = subprocess.run([cc, "--version"], capture_output=True, timeout=60).stdout
    key = hashlib.sha256(b"\0".join([source, version, _machine().encode(), repr((FLAGS, TRIES)).encode()])).hexdigest()
    path = os.path.join(folder, f"loops-{key[:16]}.so")
    if os.path.exists(path):
        return path
    os.makedirs(folder, exist_ok=True)
    for defines, libs in TRIES:
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=folder)
        os.close(fd)
        done = subprocess.run([cc, *FLAGS, *defines, "-o", tmp, SOURCE, *libs], capture_output=True, timeout=300)
        if done.returncode == 0:
            os.replace(tmp, path)  # whole or not at all: another process may be compiling the same
            _forget_others(folder, path)
            return path
        os.unlink(tmp)
    return None


def _forget_others(folder: str, keep: str) -> None:
    """Remove the loops of other sources or machines from ``folder`` (a process that has one loaded keeps it)."""
    for name in os.listdir(folder):
        other = os.path.join(folder, name)
        if name.startswith("loops-") and name.endswith(".so") and other != keep:
            try:
                os.unlink(other)
            except OSError:
                pass


def _load():
    if os.environ.get("MINILM_FUSED", "1") == "0":
        return None
    cc = os.environ.get("CC") or "cc"
    if shutil.which(cc) is None:
        return None
    for folder in _cache_folders():
        try:
            path = _compile(cc, folder)
            return ctypes.CDLL(path) if path else None
        except (OSError, subprocess.SubprocessError):
            continue
    return None


_lib = _load()
ON = _lib is not None  # the kernels call these loops (tests switch it off to check the NumPy chains)

_L, _I, _D, _P = ctypes.c_long, ctypes.c_int, ctypes.c_double, ctypes.c_void_p
_SIGNATURES = {  # each C function's arguments in order: l a long (a shape), p an array, i an int, d a double
    "gelu_forward": "llpppp", "gelu_backward": "llppppp", "layernorm_forward": "llppppppd",
    "layernorm_backward": "llpppppipp", "softmax_forward": "llpid", "softmax_backward": "llppd",
    "adamw": "lpppplddddddd", "lstm_step_forward": "llpppppp", "lstm_step_backward": "llppppppppp",
    "lstm_derivatives": "llpppp", "add_bias": "llpp", "combine": "lppdd", "transpose_heads": "lllllpp",
    "cross_entropy": "llppl"}
_CTYPES = {"l": _L, "i": _I, "d": _D, "p": _P}
_RETURNS_DOUBLE = ("combine", "cross_entropy")
_fns = {}
if _lib is not None:
    for _name, _sig in _SIGNATURES.items():
        for _suffix, _dt in (("f", np.float32), ("d", np.float64)):
            _fn = getattr(_lib, f"{_name}_{_suffix}")
            _fn.argtypes, _fn.restype = [_CTYPES[c] for c in _sig], _D if _name in _RETURNS_DOUBLE else None
            _fns[_name, np.dtype(_dt)] = _fn


def _call(name: str, arrays, shapes):
    """loops.c's ``name`` for the arrays' dtype and their data pointers, after checking each array's layout
    and that its shape is the one in ``shapes`` (a C loop past an array's end would read other memory)."""
    dt = arrays[0].dtype
    for a, shape in zip(arrays, shapes, strict=True):
        if a.dtype != dt or not a.flags.c_contiguous or a.shape != shape:
            raise ValueError(f"fused.{name}: expected C-contiguous {dt} arrays of shapes {shapes}, "
                             f"got {[(x.dtype.name, x.shape, x.flags.c_contiguous) for x in arrays]}")
    return _fns[name, dt], [_pointer(a) for a in arrays]


_pointers = {}  # id(array) -> (weak reference to it, its data pointer): a.ctypes.data takes a microsecond


def _pointer(a) -> int:
    """a's data pointer, remembered for the arrays a step passes again and again (its buffers and views); the
    weak reference tells a live array from a new one that has the id of a collected one."""
    known = _pointers.get(id(a))
    if known is not None and known[0]() is a:
        return known[1]
    if len(_pointers) > 4096:  # the ids of collected views: forget them all now and then
        _pointers.clear()
    p = a.ctypes.data
    _pointers[id(a)] = (weakref.ref(a), p)
    return p


def gelu_forward(f, bias, s, g) -> None:
    """x = f + bias; s = sigmoid(2u); g = x s   (kernels.gelu_bias_forward).  f, s, g (M, F); bias (F,)."""
    fn, ptr = _call("gelu_forward", (f, bias, s, g), (f.shape, f.shape[1:], f.shape, f.shape))
    fn(f.shape[0], f.shape[1], *ptr)


def gelu_backward(dy, f, bias, s, dbias) -> None:
    """dy *= GELU'(f + bias); dbias = sum of dy's rows   (kernels.gelu_backward_inplace).  (M, F) each; (F,)."""
    fn, ptr = _call("gelu_backward", (dy, f, bias, s, dbias), (f.shape, f.shape, f.shape[1:], f.shape, f.shape[1:]))
    fn(f.shape[0], f.shape[1], *ptr)


def layernorm_forward(x, gamma, beta, out, xhat, rstd, eps: float) -> None:
    """kernels.layernorm_forward.  x, out, xhat (M, C); gamma, beta (C,); rstd (M,)."""
    M, C = x.shape
    fn, ptr = _call("layernorm_forward", (x, gamma, beta, out, xhat, rstd), ((M, C), (C,), (C,), (M, C), (M, C), (M,)))
    fn(M, C, *ptr, eps)


def layernorm_backward(dy, xhat, rstd, gamma, dx, add: bool, dgamma, dbeta) -> None:
    """kernels.layernorm_backward: dx (M, C), which may be dy, receives (add: += ) the input's gradient."""
    M, C = dy.shape
    fn, ptr = _call("layernorm_backward", (dy, xhat, rstd, gamma, dx, dgamma, dbeta),
                    ((M, C), (M, C), (M,), (C,), (M, C), (C,), (C,)))
    fn(M, C, *ptr[:5], int(add), *ptr[5:])


def softmax_forward(S, causal: bool, scale: float) -> None:
    """S (N, T, T): q k^T in, the attention weights softmax(scale q k^T) out (0 at future keys with ``causal``)."""
    fn, ptr = _call("softmax_forward", (S,), ((len(S), S.shape[-1], S.shape[-1]),))
    fn(S.shape[0], S.shape[1], *ptr, int(causal), float(scale))


def softmax_backward(d, p, scale: float) -> None:
    """d (N, T, T): dP in, dS = scale P (dP - rowsum(dP P)) out (the gradient of q k^T); p (N, T, T) the weights."""
    fn, ptr = _call("softmax_backward", (d, p), ((len(d), d.shape[-1], d.shape[-1]),) * 2)
    fn(d.shape[0], d.shape[1], *ptr, float(scale))


def cross_entropy(logits, targets, ignore_index: int | None) -> float:
    """kernels.cross_entropy_inplace: logits (M, V) becomes the gradient of the mean loss, which is returned;
    targets (M,) ids, those equal to ``ignore_index`` not counted."""
    M, V = logits.shape
    targets = np.ascontiguousarray(targets, np.int64)
    fn, ptr = _call("cross_entropy", (logits,), ((M, V),))
    if targets.shape != (M,):
        raise ValueError(f"fused.cross_entropy: expected {M} targets, got shape {targets.shape}")
    ignore = -(2**63) if ignore_index is None else int(ignore_index)
    loss = fn(M, V, ptr[0], targets.ctypes.data, ignore)
    if loss < 0:
        raise ValueError(f"fused.cross_entropy: a target outside 0..{V - 1}")
    return loss


def transpose_heads(src, dst) -> None:
    """dst (B, H, hs, T) = src (B, H, T, hs) with its last two axes swapped; src the heads of a (B T, rs) matrix
    (gpt's view of q, k or v in the (M, 3C) projection: strides (T rs, hs, rs, 1) entries), dst contiguous."""
    B, H, T, hs = src.shape
    it = src.itemsize
    rs = src.strides[2] // it
    if (src.ndim != 4 or src.dtype != dst.dtype or src.strides != (T * rs * it, hs * it, rs * it, it)
            or rs < H * hs or dst.shape != (B, H, hs, T) or not dst.flags.c_contiguous):
        raise ValueError(f"fused.transpose_heads: expected heads (B, H, T, hs) of a (B T, rs) matrix and a contiguous "
                         f"(B, H, hs, T) array of one dtype, got {src.shape} strides {src.strides} and {dst.shape}")
    _fns["transpose_heads", dst.dtype](B, H, T, hs, rs, _pointer(src), _pointer(dst))


def add_bias(y, b) -> None:
    """y (M, N) += b (N,) on every row (kernels.add_bias)."""
    if y.ndim != 2:
        raise ValueError(f"fused.add_bias: y must be 2-D (M, N), got shape {y.shape}")
    fn, ptr = _call("add_bias", (y, b), (y.shape, y.shape[1:]))
    fn(y.shape[0], y.shape[1], *ptr)


def combine(g, g2, w1: float, w2: float) -> float:
    """g = w1 g + w2 g2, (n,) each: two halves' gradients weighted by their counted targets; returns sum(g^2)."""
    fn, ptr = _call("combine", (g, g2), ((len(g),),) * 2)
    return fn(g.shape[0], *ptr, float(w1), float(w2))


def lstm_derivatives(a, tc, dgate, o_dtc) -> None:
    """minilm.fast.lstm._derivatives over (R, 4Hd) gates a and (R, Hd) tanh(c_t): dgate, o_dtc."""
    R, Hd = tc.shape
    fn, ptr = _call("lstm_derivatives", (a, tc, dgate, o_dtc), ((R, 4 * Hd), (R, Hd), (R, 4 * Hd), (R, Hd)))
    fn(R, Hd, *ptr)


def step_function(name: str, dtype):
    """The ctypes function of loops.c's ``name`` for ``dtype``, for a loop that calls it with precomputed
    pointers (the LSTM's steps: microseconds matter there): fn(B, Hd, *pointers)."""
    return _fns[name, np.dtype(dtype)]


def pointers(*arrays) -> tuple[int, ...]:
    """The data pointers of C-contiguous arrays, for step_function's calls."""
    for a in arrays:
        if not a.flags.c_contiguous:
            raise ValueError(f"fused.pointers: every array must be C-contiguous, got strides {a.strides}")
    return tuple(a.ctypes.data for a in arrays)


def adamw(p, g, m, v, n_decay: int, a1, beta1, a2, beta2, step, e2, decay) -> None:
    """flat.adamw_rows on p, g, m, v (n,), the first n_decay entries decayed."""
    fn, ptr = _call("adamw", (p, g, m, v), ((len(p),),) * 4)
    fn(p.shape[0], *ptr, n_decay, *(float(k) for k in (a1, beta1, a2, beta2, step, e2, decay)))

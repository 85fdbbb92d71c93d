"""``python -m minilm bench --profile``: where a fast step's time goes, op by op.

Each kernel of the fast path is wrapped in a timer of this thread's CPU time
(``time.thread_time_ns``), and the step runs on ONE thread with BLAS on one
thread (MINILM_THREADS=1), so every nanosecond of work is counted once and
other processes on the machine change the figures little (they take the
wall clock, not this thread's CPU time).  A profile, not a benchmark: the
wrappers add about a microsecond per call, and the two-thread split of the
real step is left out.

    transformer   the bench's nanoGPT step against its matmul floor (bench.matmul_floor): each kernel of
                  minilm.fast.kernels, AdamW, the gradient norm, and the rest (bias adds, lookups)
    lstm          the bench's LSTM 128 -> 128 call: the loops over t (per step: the recurrent products and
                  the gates) against the products before and after them (per call); then the recurrent
                  products alone, whole and by column blocks, and W^T copied two ways
"""

from __future__ import annotations

import os
import time
from collections import Counter
from contextlib import contextmanager

import numpy as np


@contextmanager
def _timed(targets, ns=None, calls=None):
    """Wrap each (object, attribute name, label) in a CPU-time counter inside the block; yields (ns Counter,
    calls Counter), new ones or the given ones, which go on counting."""
    ns, calls, saved = ns if ns is not None else Counter(), calls if calls is not None else Counter(), []
    for obj, name, label in targets:
        fn = getattr(obj, name)
        saved.append((obj, name, fn))

        def timed(*a, _fn=fn, _label=label, **k):
            t = time.thread_time_ns()
            try:
                return _fn(*a, **k)
            finally:
                ns[_label] += time.thread_time_ns() - t
                calls[_label] += 1

        setattr(obj, name, timed)
    try:
        yield ns, calls
    finally:
        for obj, name, fn in saved:
            setattr(obj, name, fn)


def _cpu_ms(fn, n: int) -> float:
    t = time.thread_time_ns()
    for _ in range(n):
        fn()
    return (time.thread_time_ns() - t) / n / 1e6


def profile_transformer(make_step, steps: int = 10, rounds: int = 5, warmup: int = 10, log=print) -> dict:
    """``make_step(kind)`` is the bench's minilm.fast.bench.transformer_step: kind "fast" or "floor".

    After ``warmup`` untimed steps of each (a process's first steps run slower), ``rounds`` rounds of
    ``steps`` steps of each, the two taking turns: a machine whose speed drifts slows both alike.  The
    floor runs twice a round, once as it is and once with its 2-D products timed one by one (the same
    counter as the step's ``matmul``), which splits it into those and the attention's batched products."""
    from minilm.fast import kernels as K
    from minilm.fast.blas import one_thread
    from minilm.fast.flat import FlatParams

    step, _ = make_step("fast")
    floor, _ = make_step("floor")
    names = ("matmul", "attention_forward", "attention_backward", "gelu_bias_forward", "gelu_backward_inplace",
             "layernorm_forward", "layernorm_backward", "cross_entropy_inplace", "embedding_backward_add")
    targets = [(K, n, n) for n in names] + [(FlatParams, "adamw_step", "adamw_step"),
                                            (FlatParams, "grad_norm", "grad_norm")]
    with one_thread():
        for _ in range(warmup):
            step(), floor()
        floor_ms = total = 0.0
        ns, calls, floor_ns = Counter(), Counter(), Counter()
        for _ in range(rounds):
            floor_ms += _cpu_ms(floor, steps) / rounds  # unwrapped: the floor's products are not the step's
            with _timed([(K, "matmul", "matmul")], floor_ns):
                _cpu_ms(floor, steps)
            with _timed(targets, ns, calls):
                total += _cpu_ms(step, steps) / rounds
    steps *= rounds  # the timed steps of the fast model
    floor_2d = floor_ns["matmul"] / steps / 1e6  # the floor's 2-D products, the step's "matmul" row's twins
    rows = {k: ns[k] / steps / 1e6 for k in names + ("adamw_step", "grad_norm")}
    rows["rest (bias adds, lookups, views)"] = total - sum(rows.values())
    log(f"fast Transformer step (nanoGPT config), one thread: {total:.1f} ms CPU; its matmul floor "
        f"{floor_ms:.1f} ms CPU ({floor_2d:.1f} of 2-D products, {floor_ms - floor_2d:.1f} of the attention's "
        f"batched ones); step / floor {total / floor_ms:.2f}")
    log(f"  {'op':<34} {'ms/step':>8} {'calls':>6}  (attention_* include their batched products)")
    for k, ms in sorted(rows.items(), key=lambda kv: -kv[1]):
        log(f"  {k:<34} {ms:8.2f} {calls[k] // steps if calls[k] else '':>6}")
    log(f"  the step's 2-D products (matmul) take {rows['matmul']:.2f} ms against {floor_2d:.2f} ms for the same "
        f"products in the floor, {rows['matmul'] / floor_2d:.2f}x (the floor makes every layer's from one set of "
        f"arrays, the step from each layer's own)")
    return {"total_ms": total, "floor_ms": floor_ms, "floor_2d_ms": floor_2d, "ops": rows,
            "calls": {k: calls[k] // steps for k in calls}}


def _faults(fn, n: int) -> float:
    """Minor page faults (first touches of fresh memory) per call of fn."""
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(n):
        fn()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / n


def profile_lstm(make_call, steps: int = 10, log=print) -> dict:
    """``make_call(kind)`` is the bench's minilm.fast.bench.lstm_step (its Workspace kept from call to call)."""
    from minilm.fast import lstm as L
    from minilm.fast.blas import one_thread

    call, _ = make_call("fast")
    fresh = make_call("fast", keep_workspace=False)[0]
    targets = [(L, "_steps_forward", "per step: forward loop over t"),
               (L, "_steps_backward", "per step: backward loop over t")]
    with one_thread():
        for _ in range(3):
            call(), fresh()
        faults = {"kept": _faults(call, steps), "fresh": _faults(fresh, steps)}
        with _timed(targets) as (ns, calls):
            total = _cpu_ms(call, steps)
    rows = {k: ns[k] / steps / 1e6 for _, _, k in targets}
    rows["per call: products, derivatives, copies"] = total - sum(rows.values())
    log(f"fast LSTM 128 -> 128, T 64, B 32, forward + backward, one thread: {total:.1f} ms CPU")
    for k, ms in rows.items():
        per_step = f"{ms / 64 * 1e3:7.1f} us per time step" if k.startswith("per step") else ""
        log(f"  {k:<38} {ms:8.2f} ms  {per_step}")
    log(f"  minor page faults per call: {faults['kept']:.0f} with the Workspace kept, {faults['fresh']:.0f} with a "
        f"fresh one per call")
    t_tanh, t_exp = L.form_timings()
    log(f"  gate form {L.gate_form()!r} (minilm.fast.lstm.gate_form): one step's gate calls over (32, 512), "
        f"tanh form {t_tanh * 1e6:.1f} us, exp form {t_exp * 1e6:.1f} us")
    return {"total_ms": total, "ops": rows, "page_faults": faults, "gate_form": L.gate_form(),
            "tanh_us": t_tanh * 1e6, "exp_us": t_exp * 1e6}


def profile_lstm_products(log=print, repeats: int = 200) -> dict:
    """The LSTM's per-step recurrent products whole and by column blocks (minilm.fast.blas.column_blocks),
    and W^T copied by NumPy and by minilm.fast.blas.transpose, float32, in microseconds of CPU time per call."""
    from minilm.fast import blas

    rng = np.random.default_rng(0)
    rows = {}
    log("LSTM recurrent products (float32, one thread, us of CPU per product): whole, by column blocks")
    for name, (M, K, N) in (("bench forward, h W_h", (32, 128, 512)), ("bench backward, dA W_h^T", (32, 512, 128)),
                            ("LM forward, h W_h", (12, 256, 1024)), ("LM backward, dA W_h^T", (12, 1024, 256))):
        a, W = rng.standard_normal((M, K)).astype(np.float32), rng.standard_normal((K, N)).astype(np.float32)
        out = np.empty((M, N), np.float32)
        cols = blas.column_blocks(M, K, N)
        blocks = [(np.ascontiguousarray(W[:, c0:c1]), out[:, c0:c1]) for c0, c1 in cols]

        def whole(a=a, W=W, out=out):
            np.matmul(a, W, out=out)

        def by_blocks(a=a, blocks=blocks):
            for Wb, ob in blocks:
                np.matmul(a, Wb, out=ob)

        t_whole = min(_cpu_ms(whole, repeats) for _ in range(3)) * 1e3
        t_blocks = min(_cpu_ms(by_blocks, repeats) for _ in range(3)) * 1e3
        rows[name] = (t_whole, t_blocks, len(cols))
        log(f"  {name:<26} ({M}, {K}) x ({K}, {N})  {t_whole:7.1f}  {t_blocks:7.1f} in {len(cols)} blocks  "
            f"({t_whole / t_blocks:.2f}x)")
    W = rng.standard_normal((256, 1024)).astype(np.float32)
    WT = np.empty((1024, 256), np.float32)
    t_numpy = min(_cpu_ms(lambda: np.copyto(WT, W.T), 20) for _ in range(3)) * 1e3
    t_blas = min(_cpu_ms(lambda: blas.transpose(W, WT), 20) for _ in range(3)) * 1e3
    rows["transpose"] = (t_numpy, t_blas)
    log(f"  W^T of a (256, 1024) W: NumPy's copy {t_numpy:.0f} us, blas.transpose {t_blas:.0f} us "
        f"({t_numpy / t_blas:.1f}x)")
    rows["core"], rows["blocks_used"] = blas.core() or "unknown", blas.small_product() > 0
    log(f"  the LSTM's steps make them {'by column blocks' if rows['blocks_used'] else 'whole'}: OpenBLAS's "
        f"{rows['core']} kernels {'have' if rows['blocks_used'] else 'have no'} small-matrix kernel "
        f"(minilm.fast.blas.small_product)")
    return rows


def run(transformer_step, lstm_step, log=print) -> dict:
    """Both profiles; the bench (minilm.fast.bench) hands over the steps it times, so both measure the same work."""
    os.environ["MINILM_THREADS"] = "1"  # read by minilm.fast.threads at every split
    try:
        with np.errstate(over="ignore", invalid="ignore"):  # the same batch again and again: timing, not training
            out = {"transformer": profile_transformer(transformer_step, log=log),
                   "lstm": profile_lstm(lstm_step, log=log)}
            from minilm.fast.blas import one_thread

            with one_thread():
                out["lstm_products"] = profile_lstm_products(log=log)
            return out
    finally:
        del os.environ["MINILM_THREADS"]

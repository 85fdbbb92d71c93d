"""The LSTM's recurrent products by column blocks against whole, in the fast steps themselves: one run.

    python benchmarks/column_blocks.py [--pairs 20] [--calls 3]

minilm.fast.lstm makes h_{t-1} W_h and dA_t W_h^T a block of W_h's columns at
a time where OpenBLAS's kernels have a small-matrix kernel, and whole
elsewhere (minilm.fast.blas.small_product).  This script builds each of two
fast steps twice in one process, once with blocks and once whole, and times
them taking turns (``--pairs`` rounds of ``--calls`` calls each), so that a
machine whose speed drifts slows both alike:

* the bench's LSTM call (minilm.fast.bench.lstm_step: 32 x 64 steps, 128 -> 128,
  forward and backward, half of the batch in a second process on two cores);
* a step of the LSTM LM of ``benchmarks/shakespeare.py --model lstm`` (2 layers of
  256, batch 12, block 64, vocabulary 65: forward, backward and AdamW).

It prints each median time, the median of the per-round ratios whole / blocks
with their quartiles, the OpenBLAS kernels, which of the two the steps use by
default, and the load average before and after.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from minilm import lstm_lm
from minilm.fast import bench, blas
from minilm.fast.lstm_lm import FastLSTMLM


def bench_call(small: int):
    blas.SMALL_PRODUCT = small  # read when a Workspace takes its shape, at the first call
    step, _ = bench.lstm_step("fast")
    step()
    return step


def lm_step(small: int):
    blas.SMALL_PRODUCT = small
    cfg = lstm_lm.LSTMConfig(vocab_size=65, n_embd=256, n_hidden=256, n_layer=2)
    rng = np.random.default_rng(0)
    params = {k: v.astype(np.float32) for k, v in lstm_lm.init_params(cfg, rng).items()}
    idx, targets = rng.integers(0, 65, (12, 64)), rng.integers(0, 65, (12, 64))
    model = FastLSTMLM(cfg, params)

    def step():
        model.step(idx, targets, 1e-4)

    step()
    return step


def compare(name: str, make, pairs: int, calls: int) -> None:
    default, kernels = blas.SMALL_PRODUCT, blas.core
    try:
        blas.core = lambda: "SkylakeX"  # small_product() > 0: the Workspace makes blocks
        steps = {"blocks": make(default), "whole": make(0)}
    finally:
        blas.SMALL_PRODUCT, blas.core = default, kernels
    times = {k: [] for k in steps}
    for _ in range(pairs):
        for k, step in steps.items():
            t0 = time.perf_counter()
            for _ in range(calls):
                step()
            times[k].append((time.perf_counter() - t0) / calls)
    ratio = np.array(times["whole"]) / np.array(times["blocks"])
    q1, q3 = np.percentile(ratio, [25, 75])
    print(f"{name}: blocks {1e3 * np.median(times['blocks']):.2f} ms, whole {1e3 * np.median(times['whole']):.2f} ms; "
          f"whole / blocks {np.median(ratio):.3f} (quartiles {q1:.3f}-{q3:.3f}, {pairs} rounds)")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=20)
    ap.add_argument("--calls", type=int, default=3)
    a = ap.parse_args(argv)
    if a.pairs < 1 or a.calls < 1:
        ap.error("--pairs and --calls must be at least 1")
    used = "column blocks" if blas.small_product() else "whole products"
    print(f"OpenBLAS kernels: {blas.core() or 'unknown'}; the steps use {used} by default; "
          f"load average {os.getloadavg()[0]:.2f}")
    compare("bench LSTM call (32 x 64, 128 -> 128)", bench_call, a.pairs, a.calls)
    compare("LSTM LM step (2 x 256, batch 12, block 64)", lm_step, a.pairs, a.calls)
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

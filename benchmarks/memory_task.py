"""Remember the first token over L steps: a vanilla RNN against an LSTM (minilm.tasks.memory).

    python benchmarks/memory_task.py [--lags 10 20 40 80] [--seeds 0 1] [--steps 500]

For each lag L, each model (tanh RNN; LSTM with forget bias 1, torch-style; LSTM with forget bias 3) and
each seed: 500 Adam steps (lr 1e-2, clipping at 1) on fresh batches of 32 sequences of L tokens from
K = 4 symbols, hidden size 32, then the accuracy on 1,000 held-out sequences (chance 0.25).
Prints one row per lag, the load average beside the timings.  BLAS runs on one thread.
"""

from __future__ import annotations

import argparse
import os
import time


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lags", type=int, nargs="+", default=[10, 20, 40, 80])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--steps", type=int, default=500)
    args = ap.parse_args()
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    from minilm.tasks import memory

    models = [("RNN", "rnn", 1.0), ("LSTM b_f=1", "lstm", 1.0), ("LSTM b_f=3", "lstm", 3.0)]
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}; {args.steps} steps, seeds {args.seeds}; "
          "test accuracy per seed (chance 0.25)")
    print(f"{'L':>4}" + "".join(f"{name:>22}" for name, _, _ in models) + f"{'seconds':>10}")
    for L in args.lags:
        t0, cells = time.perf_counter(), []
        for _, kind, fb in models:
            accs = [memory.train(kind, L, steps=args.steps, forget_bias=fb, seed=s)["test_accuracy"]
                    for s in args.seeds]
            cells.append(" ".join(f"{a:.3f}" for a in accs))
        print(f"{L:>4}" + "".join(f"{c:>22}" for c in cells) + f"{time.perf_counter() - t0:>10.1f}", flush=True)
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The learning rate of each model of notebook 09, tuned on the same budget.

    python benchmarks/lr_grid.py [--lrs 0.003 0.006 0.01 0.02 0.04] [--budget 96000] [--models ngram lstm transformer]

The three models and sizes of notebooks/09_comparing_models.ipynb (MLP n-gram n = 8, LSTM, Transformer,
60,000-66,000 parameters), each trained by minilm.training.loop.train for the same number of predicted
tokens (the n-gram model in batches of 128 contexts, the others in 16 windows of 32 characters) at every
peak learning rate of the grid, everything else as in the notebook (AdamW, warmup + cosine to lr / 10,
clipping at 1, seed 0, the last 5% of the built-in corpus held out).  Prints the validation perplexity of
every run, the best learning rate per model, and the load average.  BLAS runs on one thread.

The grid is chosen on the same held-out text the notebook reports: the tuned numbers are a little
optimistic, for all three models alike.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import tempfile
import time

CONFIGS = {
    "MLP n-gram (n=8)": dict(model="ngram", context=8, width=24, hidden=192, batch_size=128),
    "LSTM": dict(model="lstm", width=32, hidden=96, batch_size=16, block_size=32),
    "Transformer": dict(model="transformer", width=48, layers=2, heads=4, batch_size=16, block_size=32),
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lrs", type=float, nargs="+", default=[0.003, 0.006, 0.01, 0.02, 0.04])
    ap.add_argument("--budget", type=int, default=96_000, help="predicted training tokens per run")
    ap.add_argument("--models", nargs="+", choices=["ngram", "lstm", "transformer"],
                    default=["ngram", "lstm", "transformer"])
    args = ap.parse_args()
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    from minilm.training.loop import TrainOptions, train

    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}; budget {args.budget:,} predicted tokens; "
          "validation perplexity")
    print(f"{'model':<18}" + "".join(f"{'lr ' + format(lr, 'g'):>11}" for lr in args.lrs) + f"{'best lr':>10}"
          f"{'seconds':>9}")
    best = {}
    with tempfile.TemporaryDirectory(prefix="minilm-lr-grid-") as workdir:
        for name, cfg in CONFIGS.items():
            if cfg["model"] not in args.models:
                continue
            steps = round(args.budget / (cfg["batch_size"] * cfg.get("block_size", 1)))
            t0, ppl = time.perf_counter(), {}
            for lr in args.lrs:
                out = os.path.join(workdir, f"{cfg['model']}-{lr:g}")
                with contextlib.redirect_stdout(io.StringIO()):
                    m = train(TrainOptions(out=out, steps=steps, eval_every=steps, val_fraction=0.05, seed=0, lr=lr,
                                           **cfg), log=lambda *a, **k: None, progress=False, plot=False)
                ppl[lr] = m["val_perplexity"]
            best[name] = min(ppl, key=ppl.get)
            print(f"{name:<18}" + "".join(f"{ppl[lr]:>11.3f}" for lr in args.lrs) + f"{best[name]:>10g}"
                  f"{time.perf_counter() - t0:>9.1f}", flush=True)
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

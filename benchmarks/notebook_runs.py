"""The longer runs that notebooks 04 and 05 quote: too slow for a notebook's 60-second budget.

    OPENBLAS_NUM_THREADS=1 python benchmarks/notebook_runs.py [--only norm|head|objectives]

* ``norm`` (notebook 04): the command line's defaults for the Transformer (``python -m minilm train`` with
  ``--norm post``, ``--norm pre`` and ``--norm post --no-causal-mask``): validation loss, perplexity, bits per
  character, and a sample of 120 characters after the prompt "The " (seed 0, temperature 0.8, the default of
  ``minilm sample``).
* ``head`` (notebook 04): the notebook's small model (C = 48, 2 blocks, 400 steps, lr 1e-2) with the output layer
  initialised at fan-in size (the package's) and 10 times smaller: the loss at step 0 and the validation loss
  after 400 steps, for two seeds.
* ``objectives`` (notebook 05): the notebook's two models (next word, masked LM) trained for 3,000 steps instead of
  300, scored on the notebook's question (character 16 of a window of 32 from the left only, or from both sides).

Each run is timed; the machine's load average is printed beside the results.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import tempfile
import time

import numpy as np

from minilm import transformer
from minilm.training.adapters import load_run, sample_run
from minilm.training.corpora import builtin_text
from minilm.training.data import CharTokenizer, eval_windows, split
from minilm.training.evaluate import nll_sum
from minilm.training.loop import TrainOptions, train


def quiet_train(**opts):
    with contextlib.redirect_stdout(io.StringIO()):
        return train(TrainOptions(**opts), log=lambda *a, **k: None, progress=False, plot=False)


def load():
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def norm_runs(work):
    print("notebook 04: the command line's Transformer defaults (1000 steps, C = 64, T = 32, batch 32, lr 6e-3)")
    print(f"{'run':<30}{'val loss':>9}{'ppl':>7}{'bpc':>7}{'seconds':>9}   sample")
    for name, extra in (("post-LN (the text's block)", dict(norm="post")), ("pre-LN", dict(norm="pre")),
                        ("post-LN, no causal mask", dict(norm="post", causal=False))):
        out = os.path.join(work, name.split()[0] + str(extra.get("causal", "")))
        start = time.perf_counter()
        m = quiet_train(out=out, **extra)
        seconds = time.perf_counter() - start
        text = sample_run(load_run(os.path.join(out, "checkpoint.npz")), "The ", n_tokens=120, temperature=0.8, seed=0)
        print(f"{name:<30}{m['val_loss']:>9.4f}{m['val_perplexity']:>7.2f}{m['val_bits_per_char']:>7.3f}"
              f"{seconds:>9.1f}   {text!r}", flush=True)
    print(f"(load average {load()})\n")


def head_runs(work):
    print("notebook 04: the output layer's initial scale (C = 48, 2 blocks, T = 32, batch 16, 400 steps, lr 1e-2)")
    plain = transformer.init_params
    common = dict(steps=400, width=48, layers=2, heads=4, block_size=32, batch_size=16, lr=1e-2, eval_every=400,
                  val_fraction=0.02)
    print(f"{'W_head init':<22}{'seed':>5}{'loss at step 0':>16}{'val loss, step 400':>20}")
    for label, scale in (("N(0, 1/C) (minilm)", 1.0), ("N(0, 0.01/C)", 0.1)):
        def scaled(cfg, rng, dtype=np.float32, scale=scale):
            p = plain(cfg, rng, dtype)
            p["lm_head.W"] = (p["lm_head.W"] * scale).astype(p["lm_head.W"].dtype)
            return p

        transformer.init_params = scaled
        try:
            for seed in (0, 1):
                out = os.path.join(work, f"head{scale}-{seed}")
                m = quiet_train(out=out, seed=seed, **common)
                first = load_run(os.path.join(out, "checkpoint.npz")).meta["history"]["train_loss"][0]
                print(f"{label:<22}{seed:>5}{first:>16.3f}{m['val_loss']:>20.4f}", flush=True)
        finally:
            transformer.init_params = plain
    print(f"ln V = {np.log(CharTokenizer.build(builtin_text()).vocab_size):.3f}   (load average {load()})\n")


def objectives_runs(work, steps=3000):
    print(f"notebook 05: the two objectives, {steps:,} steps instead of 300 (C = 48, 2 blocks, T = 32, batch 16)")
    common = dict(batch_size=16, block_size=32, width=48, layers=2, heads=4, steps=steps, lr=3e-3,
                  eval_every=steps, val_fraction=0.05, seed=0)
    runs = {}
    for name, model in (("next word", "transformer"), ("masked LM", "mlm")):
        out = os.path.join(work, model)
        start = time.perf_counter()
        quiet_train(model=model, out=out, **common)
        runs[name] = load_run(os.path.join(out, "checkpoint.npz"))
        print(f"  trained {name} in {time.perf_counter() - start:.0f} s", flush=True)
    ids = CharTokenizer.build(builtin_text()).encode(builtin_text())
    val_ids = split(ids, common["val_fraction"])[1]
    X = np.concatenate([x for x, _ in eval_windows(val_ids, 32, 256) if x.shape[1] == 32])  # (N, 32)
    P, mask_id = 16, runs["masked LM"].cfg.mask_token

    def score(name, inputs, at, targets):
        run = runs[name]
        logits = np.concatenate([transformer.forward(run.params, run.cfg, inputs[i:i + 256])[0][:, at]
                                 for i in range(0, len(inputs), 256)])  # (N, V)
        nll, n, correct = nll_sum(logits, targets)
        return correct / n, nll / n

    left, both = X[:, :P + 1].copy(), X.copy()
    left[:, P] = mask_id
    both[:, P] = mask_id
    print(f"{len(X):,} validation windows; predicting character {P}")
    for label, res in (("next word, left only", score("next word", X, P - 1, X[:, P])),
                       ("masked LM, left only", score("masked LM", left, P, X[:, P])),
                       ("masked LM, both sides", score("masked LM", both, P, X[:, P]))):
        print(f"  {label:<24} accuracy {res[0]:6.1%}   cross-entropy {res[1]:.3f}")
    print(f"(load average {load()})\n")


def main():
    parser = argparse.ArgumentParser(description="the longer runs quoted by notebooks 04 and 05")
    parser.add_argument("--only", choices=("norm", "head", "objectives"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        for name, fn in (("norm", norm_runs), ("head", head_runs), ("objectives", objectives_runs)):
            if args.only in (None, name):
                fn(work)


if __name__ == "__main__":
    main()

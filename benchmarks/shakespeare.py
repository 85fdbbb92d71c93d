"""Quality at speed: nanoGPT's CPU recipe on tinyshakespeare, PyTorch against minilm.

    python benchmarks/shakespeare.py [--data FILE] [--steps 2000] [--only torch|minilm]

The recipe (nanoGPT's shakespeare_char on a CPU): characters, the first 90%
for training and the last 10% for validation; 4 layers, 4 heads, width 128,
block 64, batch 12, pre-LN, GELU, tied embeddings, learned positions,
dropout 0; 2000 steps of AdamW (lr 1e-3, linear warmup for 100 steps, cosine
to 1e-4, beta2 0.99, weight decay 0.1 on matrices), gradient clipping at 1.0.

Each side trains in a process of its own, one after the other:

* PyTorch: the model of benchmarks/torch_ref.py, initialised as nanoGPT does
  (N(0, 0.02), the residual output projections N(0, 0.02 / sqrt(2 L))),
  trained by the loop below with minilm's batch sampler and learning-rate schedule;
* minilm: ``python -m minilm train ... --fast`` (the command is printed).

Both are scored by the same function, minilm.training.evaluate.evaluate_windows: the
mean loss over every token of the validation split, in consecutive windows of
64 (for PyTorch the logits come from its model).  Training time is the time
of the optimisation steps alone, without evaluation.  Prints a table, and
the JSON of both results last.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parents[1] / "shared" / "data" / "tinyshakespeare.txt"
RECIPE = dict(steps=2000, batch_size=12, block_size=64, layers=4, heads=4, width=128, lr=1e-3, min_lr=1e-4,
              warmup=100, beta1=0.9, beta2=0.99, weight_decay=0.1, clip=1.0)


def minilm_command(data: str, out: str, steps: int, seed: int) -> list[str]:
    r = dict(RECIPE, steps=steps)
    return [sys.executable, "-m", "minilm", "train", "--model", "transformer", "--data", data, "--out", out,
            "--seed", str(seed), "--steps", str(r["steps"]), "--batch-size", str(r["batch_size"]),
            "--block-size", str(r["block_size"]), "--layers", str(r["layers"]), "--heads", str(r["heads"]),
            "--width", str(r["width"]), "--norm", "pre", "--activation", "gelu", "--positions", "learned",
            "--no-scale-embed", "--tie-weights", "--dropout", "0", "--lr", str(r["lr"]), "--min-lr", str(r["min_lr"]),
            "--warmup", str(r["warmup"]), "--beta2", str(r["beta2"]), "--weight-decay", str(r["weight_decay"]),
            "--clip", str(r["clip"]), "--eval-every", str(r["steps"]), "--fast", "--quiet"]


def run_minilm(data: str, steps: int, seed: int) -> dict:
    with tempfile.TemporaryDirectory() as out:
        cmd = minilm_command(data, out, steps, seed)
        print("$", " ".join(cmd[1:]), flush=True)
        subprocess.run(cmd, check=True, env={**os.environ, "OPENBLAS_THREAD_TIMEOUT": "4"})
        m = json.loads((Path(out) / "metrics.json").read_text())
    return {"who": "minilm --fast", "val_loss": m["val_loss"], "train_seconds": m["train_seconds"]}


def torch_worker(data: str, steps: int, seed: int) -> dict:
    """Train and score the PyTorch reference in this process."""
    import torch
    import torch.nn as nn

    sys.path.insert(0, str(HERE))
    from torch_ref import GPT, adamw

    from minilm.optim import lr_at
    from minilm.training import data as D
    from minilm.training.corpora import read_text_file
    from minilm.training.evaluate import evaluate_windows

    r = RECIPE | {"steps": steps}
    tok = D.CharTokenizer.build(read_text_file(data))
    train_ids, val_ids = D.split(tok.encode(read_text_file(data)), 0.1)
    torch.manual_seed(seed)
    L, T = r["layers"], r["block_size"]
    model = GPT(tok.vocab_size, T, r["width"], r["heads"], L)
    for name, p in model.named_parameters():  # nanoGPT's initialisation
        if p.ndim == 2:
            std = 0.02 / math.sqrt(2 * L) if name.endswith(("proj.weight", "fc2.weight")) else 0.02
            nn.init.normal_(p, 0.0, std)
        elif "ln" not in name:
            nn.init.zeros_(p)
    opt = adamw(model.parameters(), r["lr"], (r["beta1"], r["beta2"]), r["weight_decay"])
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    for step in range(steps):
        x, y = (np.ascontiguousarray(a) for a in D.random_windows(train_ids, r["batch_size"], T, rng))
        for g in opt.param_groups:
            g["lr"] = lr_at(step, r["lr"], r["min_lr"], r["warmup"], steps)
        loss = model.loss(torch.from_numpy(x), torch.from_numpy(y))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), r["clip"])
        opt.step()
    seconds = time.perf_counter() - t0
    model.eval()
    with torch.no_grad():
        logits = lambda x: model(torch.from_numpy(x)).numpy()  # noqa: E731
        val = evaluate_windows(logits, val_ids, T, 64)
    return {"who": f"PyTorch {torch.__version__}", "val_loss": val["loss"], "train_seconds": seconds}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(DEFAULT_DATA), help="tinyshakespeare.txt")
    p.add_argument("--steps", type=int, default=RECIPE["steps"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", choices=["torch", "minilm"])
    p.add_argument("--torch-worker", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if not Path(a.data).exists():
        raise SystemExit(f"{a.data} not found: give --data path/to/tinyshakespeare.txt")
    if a.torch_worker:
        print(json.dumps(torch_worker(a.data, a.steps, a.seed)))
        return 0
    results = []
    if a.only != "minilm":
        cmd = [sys.executable, __file__, "--torch-worker", "--data", a.data, "--steps", str(a.steps),
               "--seed", str(a.seed)]
        done = subprocess.run(cmd, capture_output=True, text=True, check=True)
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    if a.only != "torch":
        results.append(run_minilm(a.data, a.steps, a.seed))
    print(f"\n{'who':<24} {'val loss':>9} {'train s':>9}")
    for r in results:
        print(f"{r['who']:<24} {r['val_loss']:9.4f} {r['train_seconds']:9.1f}")
    if len(results) == 2:
        print(f"time ratio minilm / PyTorch: {results[1]['train_seconds'] / results[0]['train_seconds']:.2f}")
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Quality at speed: nanoGPT's CPU recipe on tinyshakespeare, PyTorch against minilm; and an LSTM LM likewise.

    python benchmarks/shakespeare.py [--model transformer|lstm] [--data FILE] [--steps N] [--only torch|minilm]

The Transformer recipe (nanoGPT's shakespeare_char on a CPU, lr raised): characters, the first 90%
for training and the last 10% for validation; 4 layers, 4 heads, width 128,
block 64, batch 12, pre-LN, GELU, tied embeddings, learned positions,
dropout 0; 2000 steps of AdamW (lr 2e-3, linear warmup for 100 steps, cosine
to 2e-4, beta2 0.99, weight decay 0.1 on matrices), gradient clipping at 1.0.

The LSTM recipe (``--model lstm``): the same data, batch, block and steps; the LSTM LM of §5.2 with
2 layers of 256 units and 256-wide embeddings, contiguous streams with the state carried between
batches (minilm.training.data.stream_windows), lr 3e-3 with the same schedule, clipping and decay.
Both sides start from the SAME parameters (minilm.lstm_lm.init_params with the seed of
``minilm train``, copied into nn.Embedding, nn.LSTM and nn.Linear; nn.LSTM's second bias is held
at 0) and read the same batches, so their validation losses may differ by float32 rounding only.

Each side trains in a process of its own, one after the other:

* PyTorch: the Transformer of benchmarks/torch_ref.py, initialised as nanoGPT does
  (N(0, 0.02), the residual output projections N(0, 0.02 / sqrt(2 L))), or nn.LSTM,
  trained by the loop below with minilm's batch sampler and learning-rate schedule;
* minilm: ``python -m minilm train ... --fast`` (the command is printed).

Both are scored by the same function of minilm.training.evaluate (evaluate_windows, consecutive
windows of 64, or evaluate_streams, the state carried): the mean loss over every token of the
validation split.  Training time is the time of the optimisation steps alone, without evaluation.
For minilm, the peak resident memory of the training process is printed too.  Prints a table with
each goal's figure, and the JSON of the results last.  ``--only`` runs one side (run the two one
after the other on a quiet machine; the time ratio needs both in one run).
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
RECIPE = dict(steps=2000, batch_size=12, block_size=64, layers=4, heads=4, width=128, lr=2e-3, min_lr=2e-4,
              warmup=100, beta1=0.9, beta2=0.99, weight_decay=0.1, clip=1.0)
LSTM_RECIPE = dict(RECIPE, layers=2, width=256, hidden=256, lr=3e-3, min_lr=3e-4)
GOALS = {"transformer": dict(val_loss=1.75, time_ratio=0.80, peak_mb=250),
         "lstm": dict(time_ratio=1.25, loss_gap=0.02)}


def minilm_command(data: str, out: str, steps: int, seed: int, model: str = "transformer") -> list[str]:
    r = dict(RECIPE if model == "transformer" else LSTM_RECIPE, steps=steps)
    cmd = [sys.executable, "-m", "minilm", "train", "--model", model, "--data", data, "--out", out,
           "--seed", str(seed), "--steps", str(r["steps"]), "--batch-size", str(r["batch_size"]),
           "--block-size", str(r["block_size"]), "--layers", str(r["layers"]), "--width", str(r["width"])]
    if model == "transformer":
        cmd += ["--heads", str(r["heads"]), "--norm", "pre", "--activation", "gelu", "--positions", "learned",
                "--no-scale-embed", "--tie-weights", "--dropout", "0"]
    else:
        cmd += ["--hidden", str(r["hidden"])]
    return cmd + ["--lr", str(r["lr"]), "--min-lr", str(r["min_lr"]), "--warmup", str(r["warmup"]),
                  "--beta2", str(r["beta2"]), "--weight-decay", str(r["weight_decay"]), "--clip", str(r["clip"]),
                  "--eval-every", str(r["steps"]), "--fast", "--quiet"]


def run_minilm(data: str, steps: int, seed: int, model: str) -> dict:
    with tempfile.TemporaryDirectory() as out:
        cmd = minilm_command(data, out, steps, seed, model)
        print("$", " ".join(cmd[1:]), flush=True)
        child = subprocess.Popen(cmd)  # the environment as a user has it
        _, status, usage = os.wait4(child.pid, 0)  # this child's own peak resident size
        if os.waitstatus_to_exitcode(status):
            raise SystemExit(f"minilm train failed (exit status {os.waitstatus_to_exitcode(status)})")
        m = json.loads((Path(out) / "metrics.json").read_text())
    return {"who": "minilm --fast", "val_loss": m["val_loss"], "train_seconds": m["train_seconds"],
            "peak_mb": usage.ru_maxrss / 1024 + m.get("second_process_peak_mb", 0.0)}  # both processes


def lstm_torch_worker(data: str, steps: int, seed: int) -> dict:
    """Train and score nn.LSTM from minilm's initial parameters, on minilm's batches, in this process."""
    import torch
    import torch.nn as nn

    sys.path.insert(0, str(HERE))
    from torch_ref import adamw

    from minilm import lstm_lm
    from minilm.optim import lr_at
    from minilm.training import data as D
    from minilm.training.corpora import read_text_file
    from minilm.training.evaluate import evaluate_streams

    r = LSTM_RECIPE | {"steps": steps}
    text = read_text_file(data)
    tok = D.CharTokenizer.build(text)
    train_ids, val_ids = D.split(tok.encode(text), 0.1)
    cfg = lstm_lm.LSTMConfig(vocab_size=tok.vocab_size, n_embd=r["width"], n_hidden=r["hidden"], n_layer=r["layers"])
    init_rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(2)[0])  # as minilm.training.loop.start
    p = {k: torch.from_numpy(v.copy()) for k, v in lstm_lm.init_params(cfg, init_rng).items()}
    embed, head = nn.Embedding(cfg.vocab_size, cfg.n_embd), nn.Linear(cfg.n_hidden, cfg.vocab_size)
    lstm = nn.LSTM(cfg.n_embd, cfg.n_hidden, num_layers=cfg.n_layer, batch_first=True)
    with torch.no_grad():  # the same gate order (i, f, g, o); torch stores W transposed
        embed.weight.copy_(p["embed"])
        head.weight.copy_(p["W_out"].T)
        head.bias.copy_(p["b_out"])
        for l in range(cfg.n_layer):
            getattr(lstm, f"weight_ih_l{l}").copy_(p[f"lstm.{l}.Wx"].T)
            getattr(lstm, f"weight_hh_l{l}").copy_(p[f"lstm.{l}.Wh"].T)
            getattr(lstm, f"bias_ih_l{l}").copy_(p[f"lstm.{l}.b"])
            getattr(lstm, f"bias_hh_l{l}").zero_()
            getattr(lstm, f"bias_hh_l{l}").requires_grad_(False)  # one bias per layer, as minilm
    params = [q for m in (embed, lstm, head) for q in m.parameters() if q.requires_grad]
    opt = adamw(params, r["lr"], (r["beta1"], r["beta2"]), r["weight_decay"])

    def run(x, state):
        out, state = lstm(embed(x), state)
        return head(out), state

    state, t0 = None, time.perf_counter()
    for step in range(steps):
        x, y, fresh = D.stream_windows(train_ids, r["batch_size"], r["block_size"], step)
        if fresh:
            state = None
        for g in opt.param_groups:
            g["lr"] = lr_at(step, r["lr"], r["min_lr"], r["warmup"], steps)
        logits, state = run(torch.from_numpy(np.ascontiguousarray(x)), state)
        state = tuple(s.detach() for s in state)  # truncated BPTT, as minilm's carried state
        loss = nn.functional.cross_entropy(logits.reshape(-1, cfg.vocab_size), torch.from_numpy(y).reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(params, r["clip"])
        opt.step()
    seconds = time.perf_counter() - t0

    def stepper(x, st):  # evaluate_streams' step_fn: the state as [(h, c) per layer] of numpy arrays
        st = None if st is None else tuple(torch.from_numpy(np.stack(a)) for a in zip(*st, strict=True))
        logits, (h, c) = run(torch.from_numpy(np.ascontiguousarray(x)), st)
        return logits.numpy(), [(h[l].numpy(), c[l].numpy()) for l in range(cfg.n_layer)]

    with torch.no_grad():
        val = evaluate_streams(stepper, val_ids, r["block_size"], max(4 * r["batch_size"], 32), True)
    return {"who": f"PyTorch {torch.__version__} nn.LSTM", "val_loss": val["loss"], "train_seconds": seconds}


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


def goal_lines(model: str, results: list[dict]) -> list[str]:
    """Each goal of this benchmark with the figure of this run (the pair's when both sides ran)."""
    g, by = GOALS[model], {("torch" if r["who"].startswith("PyTorch") else "minilm"): r for r in results}
    lines, mine = [], by.get("minilm")
    if mine and "val_loss" in g:
        lines.append(f"minilm validation loss (whole split)     {mine['val_loss']:7.3f}   goal <= {g['val_loss']}")
    if mine and "peak_mb" in g:
        lines.append(f"minilm training, peak memory MB (both)   {mine['peak_mb']:7.0f}   goal <= {g['peak_mb']}")
    if len(by) == 2:
        ratio = by["minilm"]["train_seconds"] / by["torch"]["train_seconds"]
        lines.append(f"training time, minilm / PyTorch          {ratio:7.2f}x  goal <= {g['time_ratio']}x")
        if "loss_gap" in g:
            gap = abs(by["minilm"]["val_loss"] - by["torch"]["val_loss"])
            lines.append(f"|validation loss gap|                    {gap:7.3f}   goal <= {g['loss_gap']}")
    return lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=["transformer", "lstm"], default="transformer")
    p.add_argument("--data", default=None, help="tinyshakespeare.txt (default: a copy in ../shared if there is one, "
                   "else minilm's verified download into $MINILM_CACHE)")
    p.add_argument("--steps", type=int, default=RECIPE["steps"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", choices=["torch", "minilm"])
    p.add_argument("--torch-worker", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.data is None:
        from minilm.training.corpora import fetch

        a.data = str(DEFAULT_DATA) if DEFAULT_DATA.exists() else str(fetch("tinyshakespeare"))
    if not Path(a.data).exists():
        raise SystemExit(f"{a.data} not found: give --data path/to/tinyshakespeare.txt")
    if a.torch_worker:
        worker = torch_worker if a.model == "transformer" else lstm_torch_worker
        print(json.dumps(worker(a.data, a.steps, a.seed)))
        return 0
    load = os.getloadavg()[0]
    results = []
    if a.only != "minilm":
        cmd = [sys.executable, __file__, "--torch-worker", "--model", a.model, "--data", a.data,
               "--steps", str(a.steps), "--seed", str(a.seed)]
        done = subprocess.run(cmd, capture_output=True, text=True, check=True)
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    if a.only != "torch":
        results.append(run_minilm(a.data, a.steps, a.seed, a.model))
    print(f"\n{a.model}, {a.steps} steps; load average {load:.1f} before, {os.getloadavg()[0]:.1f} after")
    print(f"{'who':<32} {'val loss':>9} {'train s':>9}")
    for r in results:
        print(f"{r['who']:<32} {r['val_loss']:9.4f} {r['train_seconds']:9.1f}")
    print("\n".join(goal_lines(a.model, results)))
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())

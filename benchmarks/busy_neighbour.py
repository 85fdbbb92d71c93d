"""The main command on a shared machine: quiet, then with one busy-loop process beside it.

    python benchmarks/busy_neighbour.py                 # the README's main command (1,000 steps)
    python benchmarks/busy_neighbour.py --steps 300     # shorter

Runs `minilm train --model transformer` (the README's first command, in a
temporary folder) four times, one after another:

    quiet          nothing else running; the command chooses its BLAS threads
    busy           one process spinning `while True: pass` beside it; the command chooses
    busy, 1 thread the same with --threads 1
    busy, N threads the same with --threads N (N = cores: what OpenBLAS does by default)

and prints each run's training seconds (metrics.json's train_seconds: the
optimisation steps only) and wall seconds, the ratios the goals are about
(busy / quiet <= 1.3, busy <= busy with one thread), and the load average
before each run.  The machine must otherwise be idle for the quiet figure to
mean anything: the load average printed beside it says whether it was.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run(steps: int, threads: int | None, out: Path) -> dict:
    cmd = [sys.executable, "-m", "minilm", "train", "--model", "transformer", "--steps", str(steps), "--out", str(out),
           "--force", "--quiet"] + ([] if threads is None else ["--threads", str(threads)])
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")}
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"busy_neighbour: {' '.join(cmd)} failed:\n{p.stderr}")
    chosen = next((line.split("BLAS threads ")[1] for line in p.stdout.splitlines() if "BLAS threads" in line), "?")
    m = json.loads((out / "metrics.json").read_text())
    return {"train_seconds": m["train_seconds"], "wall_seconds": wall, "load_before": load, "threads": chosen,
            "val_loss": m["val_loss"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=1000, help="training steps per run (the main command's 1000)")
    ap.add_argument("--json", action="store_true", help="print the results as JSON too")
    args = ap.parse_args()
    cores = os.cpu_count() or 1
    results = {}
    with tempfile.TemporaryDirectory(prefix="minilm-busy-") as tmp:
        out = Path(tmp) / "run"
        results["quiet"] = run(args.steps, None, out)
        busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        try:
            time.sleep(2.0)  # let the neighbour take its core
            results["busy"] = run(args.steps, None, out)
            results["busy, 1 thread"] = run(args.steps, 1, out)
            results[f"busy, {cores} threads"] = run(args.steps, cores, out)
        finally:
            busy.kill()
            busy.wait()
    print(f"minilm train --model transformer --steps {args.steps}; {cores} cores; the busy neighbour is one "
          f"process running `while True: pass`\n")
    print(f"{'run':<18} {'BLAS threads chosen':<64} {'train s':>8} {'wall s':>7} {'load before':>11}")
    for name, r in results.items():
        print(f"{name:<18} {r['threads'][:64]:<64} {r['train_seconds']:>8.1f} {r['wall_seconds']:>7.1f} "
              f"{r['load_before']:>11.2f}")
    q, b, one = results["quiet"], results["busy"], results["busy, 1 thread"]
    many = results[f"busy, {cores} threads"]
    print(f"\nbusy / quiet            {b['train_seconds'] / q['train_seconds']:.2f}   (goal <= 1.3)")
    print(f"busy / busy, 1 thread   {b['train_seconds'] / one['train_seconds']:.2f}   (goal: not slower, <= 1.0 "
          f"within noise)")
    print(f"busy, {cores} threads / quiet  {many['train_seconds'] / q['train_seconds']:.2f}   (every core's "
          f"thread, as OpenBLAS's default would use)")
    if args.json:
        print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

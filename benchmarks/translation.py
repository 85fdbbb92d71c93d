"""Translating number words: time to the goal, and held-out exact match and edit distance (§6.1).

    python benchmarks/translation.py [--steps 400] [--direction en-zh] [--beam 4] [--eval-every 40]

Trains with the command line, exactly as a user would:

    python -m minilm train --model seq2seq --task numbers --direction D --steps N --eval-every E --out DIR --quiet

(numbers 0 .. 99,999, 10% of them held out and never trained on; width 64,
2 encoder and 2 decoder blocks, 4 heads, batch 64, AdamW lr 3e-3 with warmup
and cosine: the defaults of minilm/training/translation.py).  Then it loads the
checkpoint, translates every held-out number greedily and with beam search,
and prints:

* the training time (optimisation steps only) at which the exact match on
  the 1,000 held-out numbers scored at each evaluation first reached 95%;
* exact match, mean character edit distance and character error rate on all
  held-out numbers, greedy and beam;
* the wall-clock and CPU time of the whole command, the CPU count and the
  load average before and after (other processes on the machine slow a run
  down; the CPU time is about what the run takes on an idle machine);
* the held-out numbers still translated wrongly, and the JSON of the results.

BLAS runs on one thread (OPENBLAS_NUM_THREADS=1, --blas-threads to change):
the matrices are small, and on a busy machine more threads only contend.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GOAL = 0.95


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--direction", choices=["en-zh", "zh-en"], default="en-zh")
    ap.add_argument("--eval-every", type=int, default=40)
    ap.add_argument("--beam", type=int, default=4, help="beam size for the second scoring (1: greedy only)")
    ap.add_argument("--blas-threads", default="1")
    ap.add_argument("--out", default=None, help="where the run goes (default: a temporary directory)")
    args = ap.parse_args()
    os.environ["OPENBLAS_NUM_THREADS"] = args.blas_threads

    from minilm.tasks import numbers as N
    from minilm.training import translation as train_task
    from minilm.training.adapters import load_run
    from minilm.translate import translation_scores

    out = Path(args.out or tempfile.mkdtemp(prefix="minilm-translation-"))
    cmd = [sys.executable, "-m", "minilm", "train", "--model", "seq2seq", "--task", "numbers", "--direction",
           args.direction, "--steps", str(args.steps), "--eval-every", str(args.eval_every), "--out", str(out),
           "--quiet"]
    print("$ python", " ".join(cmd[1:]), flush=True)
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=os.environ)
    wall = time.perf_counter() - t0
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = usage.ru_utime + usage.ru_stime  # CPU seconds of the command: about its time on an idle machine
    load_after = os.getloadavg()

    run = load_run(out / "checkpoint.npz")
    h, task = run.meta["history"], run.tokenizer
    reached = next(((s, t) for s, em, t in zip(h["eval_step"], h["exact_match"], h["train_seconds"], strict=True)
                    if em >= GOAL), None)
    refs = [N.target_text(int(n), task.direction) for n in task.held]
    results = {"direction": args.direction, "steps": args.steps, "held_out_numbers": len(task.held),
               "train_seconds": run.meta["spent"]["train_seconds"], "command_seconds": wall,
               "command_cpu_seconds": cpu, "cpus": os.cpu_count(), "load_before": load_before, "load_after": load_after,
               "goal_step": reached and reached[0], "goal_train_seconds": reached and reached[1]}
    for name, beam in (("greedy", 1), (f"beam {args.beam}", args.beam))[: 2 if args.beam > 1 else 1]:
        t0 = time.perf_counter()
        hyps = train_task.translate_numbers(run.params, run.cfg, task, task.held, beam_size=beam)
        results[name] = translation_scores(hyps, refs) | {"seconds": time.perf_counter() - t0}
        if beam == 1:
            wrong = [(int(n), r, y) for n, r, y in zip(task.held, refs, hyps, strict=True) if r != y]

    print(f"\nseq2seq {args.direction}, {args.steps} steps; {os.cpu_count()} CPUs, load average "
          f"{load_before[0]:.1f} before and {load_after[0]:.1f} after")
    if reached:
        print(f"exact match >= {GOAL:.0%} on the 1,000 scored held-out numbers first at step {reached[0]}, "
              f"after {reached[1]:.1f} s of training")
    else:
        print(f"exact match never reached {GOAL:.0%} at an evaluation")
    print(f"training {results['train_seconds']:.1f} s (steps only), the whole command {wall:.1f} s "
          f"({cpu:.1f} s of CPU time)\n")
    print(f"{'decoding':<10} {'exact match':>12} {'edit distance':>14} {'char error rate':>16} {'seconds':>8}")
    for name in [k for k in ("greedy", f"beam {args.beam}") if k in results]:
        r = results[name]
        print(f"{name:<10} {r['exact_match']:>12.4f} {r['edit_distance']:>14.4f} {r['char_error_rate']:>16.5f} "
              f"{r['seconds']:>8.1f}")
    print(f"\non all {len(task.held):,} held-out numbers; greedy gets {len(wrong)} wrong:")
    for n, r, y in wrong[:20]:
        print(f"  {n:>6}  {N.source_text(n, args.direction)!r}: wrote {y!r}, expected {r!r}")
    results["wrong_greedy"] = [{"number": n, "expected": r, "wrote": y} for n, r, y in wrong[:50]]
    print(json.dumps(results, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Pre-training then fine-tuning against training from scratch, on "is 17>9 true?" (§3.2, §7).

    python benchmarks/finetune.py [--max-number 999] [--pretrain-steps 4000] [--finetune-steps 300]
                                  [--labels 64 256 1024] [--width 32] [--layers 2]

minilm.training.transfer.experiment: the unordered pairs {a, b} of 0 .. max_number
are split 80/20; a masked LM (width 32, 2 blocks, 4 heads) is pre-trained on
true statements about the training pairs; then, for each number of labelled
statements (random sign, half true), a classifier is fine-tuned from the
pre-trained encoder and another is trained from random weights, both for
the same steps with the same data, batches and schedule; both are scored on
4,000 labelled statements about held-out pairs, which neither pre-training
nor fine-tuning saw.  A second scratch arm trained for pre-training +
fine-tuning steps (--long-scratch) asks whether more steps on the labels
alone close the gap.

Prints a table and the JSON of the results.  BLAS runs on one thread.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--max-number", type=int, default=999)
    ap.add_argument("--pretrain-steps", type=int, default=4000)
    ap.add_argument("--finetune-steps", type=int, default=300)
    ap.add_argument("--labels", type=int, nargs="+", default=[64, 256, 1024])
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--long-scratch", action="store_true", help="also train from scratch for pretrain + finetune steps")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

    from minilm.training.transfer import experiment

    t0 = time.perf_counter()
    load_before = os.getloadavg()
    report, _, _ = experiment(args.max_number, args.pretrain_steps, args.finetune_steps, tuple(args.labels),
                              width=args.width, layers=args.layers, seed=args.seed)
    report.pop("mlm_loss")
    if args.long_scratch:
        long, _, _ = experiment(args.max_number, 0, args.finetune_steps, tuple(args.labels), width=args.width,
                                layers=args.layers, seed=args.seed,
                                scratch_steps=args.pretrain_steps + args.finetune_steps, log=lambda *a: None)
        for row, lrow in zip(report["rows"], long["rows"], strict=True):
            row["scratch_long"] = lrow["scratch"]
    report |= {"seconds": time.perf_counter() - t0, "cpus": os.cpu_count(), "load_before": load_before,
               "load_after": os.getloadavg()}

    print(f"\nnumbers 0 .. {args.max_number}; masked LM pre-trained {args.pretrain_steps} steps in "
          f"{report['pretrain_seconds']:.0f} s; fine-tuning {args.finetune_steps} steps; held-out accuracy on "
          f"{report['test_statements']:,} statements about unseen pairs (chance 0.5)\n")
    head = f"{'labels':>7} {'pre-trained + fine-tuned':>25} {'from scratch':>14}"
    print(head + (f" {'scratch, ' + str(args.pretrain_steps + args.finetune_steps) + ' steps':>22}"
                  if args.long_scratch else ""))
    for row in report["rows"]:
        pre, scratch = row["pretrained"]["test_accuracy"], row["scratch"]["test_accuracy"]
        line = f"{row['labels']:>7} {pre:>25.3f} {scratch:>14.3f}"
        if args.long_scratch:
            line += f" {row['scratch_long']['test_accuracy']:>22.3f}"
        print(line)
    print(f"\n{report['seconds']:.0f} s in all; {os.cpu_count()} CPUs, load average {load_before[0]:.1f} before")
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())

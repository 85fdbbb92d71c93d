"""Listen, Attend and Spell on spoken digits (§6.2): accuracy, word error rate and training CPU time against the goals.

    OPENBLAS_NUM_THREADS=1 python benchmarks/speech.py [--data-dir DIR] [--steps N] [--no-loso | --only-loso]

1. Trains ``train --model las --task digits`` with the defaults (minilm.training.adapters) through the one
   training loop, timing the process's CPU seconds (data preparation, training steps and evaluations).
2. Scores recordings never trained on: the 300 official test recordings one by one (single-digit accuracy,
   greedy and beam search), 600 utterances of 1-3 test recordings (word error rate, exact match), and per
   speaker: their 50 test recordings and 200 utterances of their test recordings.
3. Leave one speaker out: for each of the 6 speakers, a short run of the default model (``--loso-steps``, 500
   steps of 16 utterances of 1-2 digits) on the other five speakers' training recordings only, scored on all 500
   recordings of the speaker it never heard.

Goals: single-digit accuracy >= 97% on the official test split, WER <= 5% on 1-3-digit utterances, training
<= 15 minutes of CPU on 2 cores.  The machine's load average is printed beside the figures (other processes
slow a run down in wall-clock time; its CPU time changes less).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from minilm.tasks import digits as D  # noqa: E402
from minilm.training import speech  # noqa: E402
from minilm.training.adapters import load_run  # noqa: E402
from minilm.training.loop import TrainOptions, train  # noqa: E402

GOALS = {"digit_accuracy": 0.97, "word_error_rate": 0.05, "cpu_minutes": 15.0}


def shared_copy() -> Path | None:
    here = Path(__file__).resolve()
    return next((p / "shared" / "data" / "fsdd" for p in here.parents
                 if (p / "shared" / "data" / "fsdd" / "recordings").is_dir()), None)


def load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg()) + f" on {os.cpu_count()} cores"


def timed_train(opts: TrainOptions) -> tuple[dict, float]:
    cpu = time.process_time()
    m = train(opts, progress=False, plot=False, log=lambda *a, **k: None)
    return m, time.process_time() - cpu


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=None, help="FSDD recordings (default: ../shared's copy, else download)")
    ap.add_argument("--steps", type=int, default=None, help="training steps (default: the model's)")
    ap.add_argument("--loso-steps", type=int, default=500, help="steps of each leave-one-speaker-out model")
    ap.add_argument("--utterances", type=int, default=600, help="1-3-digit test utterances scored (600)")
    ap.add_argument("--no-loso", action="store_true", help="skip leave-one-speaker-out")
    ap.add_argument("--only-loso", action="store_true", help="only leave-one-speaker-out")
    ap.add_argument("--out", default=None, help="where the checkpoints go (default: a temporary folder)")
    a = ap.parse_args(argv)
    data_dir = a.data_dir or shared_copy()
    folder = D.open_recordings(data_dir)
    out = Path(a.out or tempfile.mkdtemp(prefix="minilm-speech-"))
    print(f"FSDD {D.VERSION} from {folder}; checkpoints in {out}")
    print(f"before: {load()}; OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS')}", flush=True)

    if not a.only_loso:
        main_model(a, folder, out)
    if not a.no_loso:
        leave_one_out(a, folder, out)
    print(f"\nafter: {load()}")
    return 0


def main_model(a, folder, out) -> None:
    # 1. the default model, through the training loop
    opts = TrainOptions(model="las", task="digits", data_dir=str(folder), steps=a.steps, out=str(out / "main"))
    m, cpu = timed_train(opts)
    run = load_run(out / "main" / "checkpoint.npz")
    o = run.opts
    print(f"\ntrained: {m['steps']} steps of {o.batch_size} utterances, {m['n_params']:,} parameters "
          f"(listener {o.hidden} units per direction, {o.layers} pyramidal layers, speller {o.width}); "
          f"{cpu / 60:.2f} min CPU in all ({m['train_seconds'] / 60:.2f} min wall in training steps, "
          f"{m['seconds'] / 60:.2f} min wall in all); {load()}", flush=True)

    # 2. recordings never trained on
    test = D.recordings(folder, "test")
    singles = D.dataset(D.single(test))
    utts = D.dataset(D.utterances(test, a.utterances, seed=12345, max_digits=3))
    rows = []
    for beam in (1, 4):
        hyp1 = speech.transcribe_features(run.params, run.cfg, singles.feats, beam, max_digits=1)
        hyp3 = speech.transcribe_features(run.params, run.cfg, utts.feats, beam, max_digits=3)
        s1, s3 = D.scores(hyp1, singles.texts), D.scores(hyp3, utts.texts)
        rows.append((beam, s1, s3, hyp1, hyp3))
        print(f"{'greedy' if beam == 1 else f'beam {beam}':>7}: single-digit accuracy {s1['exact_match']:.4f} "
              f"({round(s1['exact_match'] * s1['utterances'])}/{s1['utterances']}); 1-3-digit utterances: "
              f"WER {s3['word_error_rate']:.4f} ({s3['words']} words), exact match {s3['exact_match']:.4f} "
              f"({s3['utterances']} utterances)", flush=True)
    _, s1, s3, hyp1, hyp3 = rows[0]
    wrong = [(h, r) for h, r in zip(hyp1, singles.texts, strict=True) if h != r]
    print(f"single digits wrong (greedy, said -> written), {len(wrong)}:",
          ", ".join(f"{r}->{h or '(nothing)'}" for h, r in wrong[:40]))
    wrong3 = [(h, r) for h, r in zip(hyp3, utts.texts, strict=True) if h != r]
    print(f"utterances wrong (greedy), first 10 of {len(wrong3)}:", "; ".join(f"{r!r}->{h!r}" for h, r in wrong3[:10]))
    print("\nper speaker (greedy)     single digits    200 utterances of their test recordings")
    print(f"{'speaker':<10} {'accuracy':>10} {'n':>5}   {'WER':>8} {'exact':>8}")
    per = D.per_speaker(hyp1, singles.texts, singles.speakers)
    for sp in D.SPEAKERS:
        mine = D.dataset(D.utterances(D.recordings(folder, "test", speakers=(sp,)), 200, seed=777, max_digits=3))
        sc = D.scores(speech.transcribe_features(run.params, run.cfg, mine.feats), mine.texts)
        print(f"{sp:<10} {per[sp]['exact_match']:>10.4f} {per[sp]['utterances']:>5}   "
              f"{sc['word_error_rate']:>8.4f} {sc['exact_match']:>8.4f}", flush=True)

    print("\ngoals (official test split, greedy):")
    checks = [("single-digit accuracy", s1["exact_match"], ">=", GOALS["digit_accuracy"]),
              ("WER, 1-3-digit utterances", s3["word_error_rate"], "<=", GOALS["word_error_rate"]),
              ("training CPU minutes", cpu / 60, "<=", GOALS["cpu_minutes"])]
    for name, v, op, goal in checks:
        ok = v >= goal if op == ">=" else v <= goal
        print(f"  {name:<28} {v:8.4f}  goal {op} {goal:<5}  {'met' if ok else 'NOT met'}")



def leave_one_out(a, folder, out) -> None:
    # 3. leave one speaker out
    print(f"\nleave one speaker out ({a.loso_steps} steps of 16 utterances of 1-2 digits each, the default model, "
          f"2000 training utterances of the other 5 speakers' training recordings; scored on all 500 recordings of "
          f"the one left out, WER on 100 utterances of their test recordings); {load()}:", flush=True)
    accs = []
    for sp in D.SPEAKERS:
        lo = TrainOptions(model="las", task="digits", data_dir=str(folder), held_out_speaker=sp, train_size=2000,
                          eval_size=100, batch_size=16, max_digits=2, steps=a.loso_steps, eval_every=a.loso_steps,
                          out=str(out / f"loso-{sp}"))
        lm, lcpu = timed_train(lo)
        accs.append(lm["val_digit_accuracy"])
        print(f"  {sp:<10} single-digit accuracy {lm['val_digit_accuracy']:.4f}, WER {lm['val_word_error_rate']:.4f}; "
              f"{lcpu / 60:.2f} min CPU", flush=True)
    print(f"  mean single-digit accuracy over the 6 speakers {sum(accs) / len(accs):.4f}")


if __name__ == "__main__":
    sys.exit(main())

"""The command line: ``python -m minilm <command>`` (or ``minilm <command>``)."""

from __future__ import annotations

import argparse
import sys

from minilm.classroom.exercises import add_exercise_parser
from minilm.classroom.selfcheck import cmd_gradcheck


class Parser(argparse.ArgumentParser):
    """argparse, with a bad flag reported in one line (exit status 2) instead of the usage block."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def cmd_train(args) -> int:
    """Train a model; see minilm.training.loop."""
    from minilm.training.loop import TrainingDiverged, TrainOptions, run_exit_status, train
    from minilm.training.translation import TASK_ARGS, cmd_train_task

    if getattr(args, "model", None) == "seq2seq" or set(TASK_ARGS) & set(vars(args)):
        return cmd_train_task(args)  # a generated task rather than a text: minilm/training/translation.py
    explicit = {k: v for k, v in vars(args).items() if k not in ("command", "fn", "resume", "quiet", "force")}
    opts = TrainOptions(**explicit)
    try:
        m = train(opts, resume=getattr(args, "resume", False), explicit=set(explicit),
                  progress=not getattr(args, "quiet", False), force=getattr(args, "force", False))
    except TrainingDiverged as e:
        print(f"minilm train: error: {e}", file=sys.stderr)
        return 1
    print(f"{m['model']}: step {m['steps']} of {m['of_steps']}, train loss {m['train_loss']:.4f}"
          + ("" if m["val_loss"] is None else f", val loss {m['val_loss']:.4f}, "
                                               f"val perplexity {m['val_perplexity']:.2f}")
          + (f", {m['val_bits_per_char']:.3f} bits/char" if "val_bits_per_char" in m else "")
          + (f", masked-token accuracy {m['val_accuracy']:.3f}" if "val_accuracy" in m else "")
          + f"; {m['tokens_per_second']:,.0f} tokens/s, {m['seconds']:.1f} s; wrote {opts.out}/")
    return run_exit_status(m, opts.out)


def cmd_sample(args) -> int:
    """Generate text from a checkpoint."""
    from minilm.training.adapters import load_run, sample_run

    run = load_run(args.checkpoint)
    print(sample_run(run, args.prompt, args.tokens, args.temperature, args.top_k, args.seed))
    return 0


def cmd_eval(args) -> int:
    """Loss and perplexity of a checkpoint over its validation split, or over all of --data FILE."""
    from minilm.training.adapters import evaluate_run, load_run
    from minilm.training.corpora import load_text, read_text_file
    from minilm.training.data import split
    from minilm.training.loop import text_sha256

    run = load_run(args.checkpoint)
    if args.data is not None:
        ids, where = run.tokenizer.encode(read_text_file(args.data)), f"all of {args.data}"
    else:
        o = run.opts
        text, source = load_text(o.data, o.corpus)
        if text_sha256(text) != run.meta.get("text_sha256"):
            raise ValueError(f"the training text ({source}) has changed since {args.checkpoint} was trained")
        ids, where = split(run.tokenizer.encode(text), o.val_fraction)[1], f"the validation split of {source}"
    r = evaluate_run(run, ids)
    what = "masked-token loss" if "accuracy" in r else "loss"
    print(f"{what} {r['loss']:.4f} nats/token, perplexity {r['perplexity']:.3f}"
          + (f", {r['bits_per_char']:.4f} bits/char" if "bits_per_char" in r else "")
          + (f", accuracy {r['accuracy']:.3f}" if "accuracy" in r else "")
          + f" over {r['tokens']:,} tokens of {where}")
    return 0


def add_train_parser(sub) -> None:
    from minilm.training.adapters import ADAPTERS
    from minilm.training.corpora import CORPORA
    from minilm.training.translation import add_task_arguments

    def flag(k, v):
        k = {"causal": "causal-mask"}.get(k, k).replace("_", "-")
        return (f"--{k}" if v else f"--no-{k}") if isinstance(v, bool) else f"--{k} {v}"

    def wrapped(name, flags):  # whole flags per line, never a flag split from its value
        lines = [f"  {name:<12} {ADAPTERS[name].about}:", " " * 14]
        for f in flags:
            if len(lines[-1]) + 1 + len(f) > 100:
                lines.append(" " * 14)
            lines[-1] += " " + f
        return "\n".join(lines)

    epilog = "each model's defaults (minilm/training/adapters.py):\n" + "\n".join(
        wrapped(name, [flag(k, v) for k, v in a.defaults.items()]) for name, a in ADAPTERS.items())
    t = sub.add_parser("train", help="train a language model", argument_default=argparse.SUPPRESS,
                       description="Train a model; an option left out takes the model's default.", epilog=epilog,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    t.add_argument("--model", choices=[*ADAPTERS, "seq2seq"], help="which model (default transformer)")
    src = t.add_mutually_exclusive_group()
    src.add_argument("--data", metavar="FILE", help="train on this UTF-8 text file")
    src.add_argument("--corpus", choices=CORPORA, help="a named corpus (default pydoc, built in)")
    t.add_argument("--out", metavar="DIR", help="where checkpoint.npz, metrics.json, loss.png go (runs/demo)")
    again = t.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    again.add_argument("--force", action="store_true",
                   help="start afresh in an --out that holds a checkpoint (kept until the new run saves)")
    t.add_argument("--steps", type=int, metavar="N", help="total optimiser steps")
    t.add_argument("--stop-after", type=int, metavar="N", help="pause after step N (checkpoint saved)")
    t.add_argument("--seed", type=int, metavar="S", help="seed of the initialisation and the batches (0)")
    t.add_argument("--batch-size", type=int, metavar="B")
    t.add_argument("--block-size", type=int, metavar="T", help="sequence length (Transformer, masked LM, LSTM)")
    t.add_argument("--context", type=int, metavar="N", help="n-gram model: the number of previous tokens")
    t.add_argument("--layers", type=int, metavar="L")
    t.add_argument("--heads", type=int, metavar="H")
    t.add_argument("--width", type=int, metavar="C", help="model width C (Transformer) or embedding size E")
    t.add_argument("--hidden", type=int, metavar="Hd", help="hidden units (n-gram MLP, LSTM)")
    t.add_argument("--dropout", type=float, metavar="P", help="dropout probability (Transformer, masked LM)")
    t.add_argument("--norm", choices=["post", "pre"], help="LayerNorm after (the text's) or before the sublayers")
    t.add_argument("--activation", choices=["relu", "gelu", "tanh"],
                   help="Transformer feed-forward: relu (the text's) or gelu; n-gram hidden layer: tanh or relu")
    t.add_argument("--positions", choices=["sinusoidal", "learned"], help="positional encoding (sinusoidal)")
    t.add_argument("--scale-embed", action=argparse.BooleanOptionalAction,
                   help="multiply token embeddings by sqrt(C) before adding positions (on, as in the text)")
    t.add_argument("--tie-weights", action=argparse.BooleanOptionalAction,
                   help="share the token embedding with the output projection (off)")
    t.add_argument("--causal-mask", dest="causal", action=argparse.BooleanOptionalAction,
                   help="--no-causal-mask reproduces the text's bug: each position sees the token it predicts")
    t.add_argument("--tokenizer", choices=["char", "word"], help="characters (default) or words")
    t.add_argument("--max-vocab", type=int, metavar="N", help="word tokenizer: vocabulary cap incl. <unk>")
    t.add_argument("--val-fraction", type=float, metavar="F", help="last fraction held out (0.1)")
    t.add_argument("--lr", type=float, help="peak learning rate")
    t.add_argument("--min-lr", type=float, help="learning rate at the end of the cosine (lr / 10)")
    t.add_argument("--warmup", type=int, metavar="N", help="linear warmup steps (steps / 20)")
    t.add_argument("--weight-decay", type=float, help="AdamW decoupled weight decay on matrices (0.1)")
    t.add_argument("--beta1", type=float, help="AdamW beta1 (0.9)")
    t.add_argument("--beta2", type=float, help="AdamW beta2 (0.99)")
    t.add_argument("--clip", type=float, help="clip the global gradient norm to this; 0 = off (1.0)")
    t.add_argument("--eval-every", type=int, metavar="N", help="score the whole validation split every N steps")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.add_argument("--fast", action="store_true", help="train with minilm.fast where the model has a fast path "
                   "(pre-LN Transformer without dropout, n-gram): same formulas and checkpoints, faster (README)")
    add_task_arguments(t)  # --task numbers and its options, for --model seq2seq
    t.set_defaults(fn=cmd_train)


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="minilm", description="Language models from scratch in NumPy.")
    sub = p.add_subparsers(dest="command", required=True)
    g = sub.add_parser("gradcheck", help="check every backward pass against finite differences")
    g.add_argument("--only", nargs="+", metavar="NAME",
                   help="only these: exercise names, module names, or parts of a case's 'group/name'")
    g.add_argument("-v", "--verbose", action="store_true", help="print every gradient's error")
    g.set_defaults(fn=cmd_gradcheck)
    add_exercise_parser(sub)
    add_train_parser(sub)
    from minilm.training.translation import add_translate_parser

    add_translate_parser(sub)
    s = sub.add_parser("sample", help="generate text from a checkpoint")
    s.add_argument("--checkpoint", required=True, metavar="PATH")
    s.add_argument("--prompt", default="", help="text to continue (masked LM: text with [MASK] to fill in)")
    s.add_argument("--tokens", type=int, default=300, metavar="N", help="how many tokens to generate (300)")
    s.add_argument("--temperature", type=float, default=0.8, metavar="T", help="0 = greedy (0.8)")
    s.add_argument("--top-k", type=int, default=None, metavar="K", help="sample among the K likeliest tokens")
    s.add_argument("--seed", type=int, default=0, metavar="S")
    s.set_defaults(fn=cmd_sample)
    e = sub.add_parser("eval", help="loss and perplexity of a checkpoint")
    e.add_argument("--checkpoint", required=True, metavar="PATH")
    e.add_argument("--data", metavar="FILE", help="score all of this file instead of the validation split")
    e.set_defaults(fn=cmd_eval)
    try:  # a student copy (minilm exercise make) leaves minilm/fast/ out, and with it the benchmark
        from minilm.fast.bench import add_subcommand as add_bench_subcommand
    except ModuleNotFoundError:
        return p
    add_bench_subcommand(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except ValueError as e:  # bad input: a one-line message naming the problem
        print(f"minilm {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"minilm {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

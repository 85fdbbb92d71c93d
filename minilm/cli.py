"""The command line: ``python -m minilm <command>`` (or ``minilm <command>``)."""

from __future__ import annotations

import argparse
import sys
import time

from minilm.classroom.exercises import add_exercise_parser
from minilm.fast.bench import add_subcommand as add_bench_subcommand


def cmd_gradcheck(args) -> int:
    """Run every registered gradient check and print one line per case."""
    from minilm.cases import all_cases
    from minilm.gradcheck import TOLERANCE

    cases = [c for c in all_cases() if not args.only or any(s in f"{c.group}/{c.name}" for s in args.only)]
    print(f"centred differences in float64; a gradient passes when its max relative error <= {TOLERANCE:.0e}\n")
    print(f"{'group':<12} {'case':<34} {'worst gradient':<16} {'rel. error':>10}  result")
    print("-" * 84)
    failed, t0 = 0, time.perf_counter()
    for c in cases:
        try:
            errors = c.run()
        except NotImplementedError as e:  # a stub of a student copy (minilm exercise make)
            failed += 1
            print(f"{c.group:<12} {c.name:<34} {'':<16} {'':>10}  not implemented")
            print(f"{'':<12} {(str(e).splitlines() or [''])[0]}")
            continue
        worst = max(errors, key=errors.get)
        ok = all(e <= TOLERANCE for e in errors.values())
        failed += not ok
        print(f"{c.group:<12} {c.name:<34} {worst:<16} {errors[worst]:>10.1e}  {'pass' if ok else 'FAIL'}")
        if args.verbose or not ok:
            for k, e in errors.items():
                print(f"{'':<48}{k:<16} {e:>10.1e}")
    print("-" * 84)
    print(f"{len(cases) - failed} of {len(cases)} passed in {time.perf_counter() - t0:.1f} s")
    return 1 if failed else 0


class Parser(argparse.ArgumentParser):
    """argparse, with a bad flag reported in one line (exit status 2) instead of the usage block."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def cmd_train(args) -> int:
    """Train a model; see minilm.training.loop."""
    from minilm.training.adapters import format_scores
    from minilm.training.loop import TrainingDiverged, TrainOptions, run_exit_status, train

    explicit = {k: v for k, v in vars(args).items() if k not in ("command", "fn", "resume", "quiet", "force")}
    opts = TrainOptions(**explicit)
    try:
        m = train(opts, resume=getattr(args, "resume", False), explicit=set(explicit),
                  progress=not getattr(args, "quiet", False), force=getattr(args, "force", False))
    except TrainingDiverged as e:
        print(f"minilm train: error: {e}", file=sys.stderr)
        return 1
    scores = {k[4:]: v for k, v in m.items() if k.startswith("val_")}
    speed = next(f"{v:,.0f} {k.split('_')[0]}/s" for k, v in m.items() if k.endswith("_per_second") and v)
    print(f"{m['model']}: step {m['steps']} of {m['of_steps']}, train loss {m['train_loss']:.4f}"
          + ("" if m["val_loss"] is None else f"; validation {format_scores(scores)}")
          + f"; {speed}, {m['seconds']:.1f} s; wrote {opts.out}/")
    return run_exit_status(m, opts.out)


def _threads(run, rows: int, requested):
    """BLAS threads for a command that uses ``run``: minilm.training.threads decides unless --threads is given."""
    from minilm.training.threads import blas_threads, choose

    return blas_threads(choose(run.params, rows, requested)[0])


def cmd_sample(args) -> int:
    """Generate text from a checkpoint, or from a GPT-2 directory (--from-hf)."""
    from minilm.training.adapters import load_run, sample_run, transformer_run

    if (args.checkpoint is None) == (args.from_hf is None):
        raise ValueError("give --checkpoint PATH or --from-hf DIR (one of them)")
    if args.from_hf is not None:
        from minilm.hub import gpt2

        run = transformer_run(*gpt2.load(args.from_hf), args.from_hf)
    else:
        run = load_run(args.checkpoint)
    with _threads(run, 1, args.threads):
        print(sample_run(run, args.prompt, args.tokens, args.temperature, args.top_k, args.seed,
                         top_p=args.top_p, cache=args.cache))
    return 0


def cmd_eval(args) -> int:
    """Scores of a checkpoint over its validation set, or over all of --data FILE."""
    from minilm.training.adapters import evaluate_run, format_scores, load_run, validation_data
    from minilm.training.corpora import read_text_file

    run = load_run(args.checkpoint)
    run.require("eval")
    if args.data_dir is not None:
        if run.adapter.name != "las":
            raise ValueError(f"--data-dir does not apply to {args.checkpoint}, a {run.adapter.name} model")
        run.opts.data_dir = args.data_dir
    if args.data is not None:
        if not run.adapter.reads_text:
            raise ValueError(f"--data does not apply to {args.checkpoint}: a {run.adapter.name} model is scored "
                             f"on its own held-out examples")
        ids, where = run.tokenizer.encode(read_text_file(args.data)), f"all of {args.data}"
        if len(ids) < 2:
            raise ValueError(f"the text is too short to evaluate: {len(ids)} tokens")
    else:
        d = validation_data(run, log=lambda *a, **k: None)
        ids = d.val_final if d.val_final is not None else d.val
        where = f"the validation set of {d.source}"
    with _threads(run, 512, args.threads):
        r = evaluate_run(run, ids)
    print(f"{format_scores(r)} over {r.get('tokens', r.get('sentences', len(ids))):,} "
          f"{'tokens' if 'tokens' in r else 'examples'} of {where}")
    return 0


def cmd_export(args) -> int:
    """Write a checkpoint's model in another format (--format hf: a GPT-2 directory)."""
    from minilm.hub import gpt2
    from minilm.training.adapters import load_run

    run = load_run(args.checkpoint)
    if run.adapter.name != "transformer":
        raise ValueError(f"{args.checkpoint} holds a {run.adapter.name} model; GPT-2 is a causal Transformer LM "
                         f"(--model transformer)")
    paths = gpt2.save(args.dir, run.params, run.cfg, run.tokenizer)
    print(f"wrote {', '.join(p.name for p in paths)} to {args.dir}/ (GPT-2, {run.cfg.n_layer} layers, width "
          f"{run.cfg.n_embd}, vocabulary {run.cfg.vocab_size}); transformers reads it with "
          f"GPT2LMHeadModel.from_pretrained({str(args.dir)!r})")
    return 0


def cmd_translate(args) -> int:
    """Translate with a seq2seq checkpoint."""
    from minilm.training.adapters import load_run
    from minilm.training.translation import translate_texts

    run = load_run(args.checkpoint)
    with _threads(run, len(args.text) * args.beam, args.threads):
        translated = translate_texts(run, args.text, args.beam)
    for text, out in zip(args.text, translated, strict=True):
        print(f"{text}\t{out}")
    return 0


def cmd_transcribe(args) -> int:
    """Transcribe WAV files with a las checkpoint."""
    from minilm.training.adapters import load_run
    from minilm.training.speech import transcribe_files

    run = load_run(args.checkpoint)
    for path, text in zip(args.files, transcribe_files(run, args.files, args.beam), strict=True):
        print(f"{path}\t{text}")
    return 0


def add_train_parser(sub) -> None:
    from minilm.tasks.numbers import DIRECTIONS
    from minilm.training.adapters import ADAPTERS
    from minilm.training.corpora import CORPORA
    from minilm.training.speech import TASKS as SPEECH_TASKS
    from minilm.training.translation import TASKS

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
        wrapped(name, [flag(k, v) for k, v in a.defaults.items() if v is not None]) for name, a in ADAPTERS.items())
    t = sub.add_parser("train", help="train a model", argument_default=argparse.SUPPRESS,
                       description="Train a model; an option left out takes the model's default.", epilog=epilog,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    t.add_argument("--model", choices=list(ADAPTERS), help="which model (default transformer)")
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
    t.add_argument("--head-bias", action=argparse.BooleanOptionalAction,
                   help="a bias on the output layer (on); GPT-2 has none")
    t.add_argument("--init-from", metavar="DIR", help="fine-tune a GPT-2 directory (config.json, model.safetensors, "
                   "vocab.json, merges.txt): its architecture and tokenizer, --block-size windows")
    t.add_argument("--tie-weights", action=argparse.BooleanOptionalAction,
                   help="share the token embedding with the output projection (off)")
    t.add_argument("--causal-mask", dest="causal", action=argparse.BooleanOptionalAction,
                   help="--no-causal-mask reproduces the text's bug: each position sees the token it predicts")
    t.add_argument("--tokenizer", choices=["char", "word", "bpe"],
                   help="characters (default), words, or byte-level BPE (GPT-2's)")
    t.add_argument("--max-vocab", type=int, metavar="N", help="word tokenizer: vocabulary cap incl. <unk>")
    t.add_argument("--vocab-size", type=int, metavar="N", help="bpe: 256 bytes + learned merges (1000)")
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
    t.add_argument("--threads", type=int, metavar="N", help="BLAS threads (default: chosen from the model's "
                   "products and the machine's load, see minilm/training/threads.py)")
    t.add_argument("--fast", action="store_true", help="train with minilm.fast (the language models; "
                   "seq2seq and las refuse it): same formulas, batches and checkpoints, faster (README)")
    t.add_argument("--task", choices=[*TASKS, *SPEECH_TASKS],
                   help="seq2seq: the generated task (numbers); las: spoken digits (digits)")
    t.add_argument("--direction", choices=list(DIRECTIONS), help="seq2seq: en-zh (default) or zh-en")
    t.add_argument("--max-number", type=int, metavar="N", help="seq2seq: numbers 0 .. N (99999)")
    t.add_argument("--held-out", type=float, metavar="F", help="seq2seq: fraction of numbers never trained on (0.1)")
    t.add_argument("--share-vocab", action=argparse.BooleanOptionalAction,
                   help="seq2seq: one vocabulary for both languages")
    t.add_argument("--eval-size", type=int, metavar="N",
                   help="seq2seq: held-out numbers per evaluation (1000); las: test utterances (300)")
    t.add_argument("--data-dir", metavar="DIR", help="las: a copy of the FSDD recordings (default: download "
                   "v1.0.10 once into $MINILM_CACHE); checked against its SHA256SUMS either way")
    t.add_argument("--max-digits", type=int, metavar="N", help="las: utterances of 1 .. N digits (3)")
    t.add_argument("--train-size", type=int, metavar="N", help="las: training utterances (6000)")
    t.add_argument("--spec-augment", action=argparse.BooleanOptionalAction,
                   help="las: mask a random band and stretch of each training utterance (SpecAugment; off)")
    t.add_argument("--held-out-speaker", metavar="NAME", help="las: leave this speaker out of training and "
                   "evaluate on all of their recordings")
    t.set_defaults(fn=cmd_train)


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="minilm", description="Language models from scratch in NumPy.")
    sub = p.add_subparsers(dest="command", required=True)
    g = sub.add_parser("gradcheck", help="check every backward pass against finite differences")
    g.add_argument("--only", nargs="*", help="run only cases whose 'group/name' contains one of these")
    g.add_argument("-v", "--verbose", action="store_true", help="print every gradient's error")
    g.set_defaults(fn=cmd_gradcheck)
    add_exercise_parser(sub)
    add_train_parser(sub)
    tr = sub.add_parser("translate", help="translate with a seq2seq checkpoint",
                        description="Translate number words with a checkpoint of --model seq2seq.")
    tr.add_argument("--checkpoint", required=True, metavar="PATH")
    tr.add_argument("--beam", type=int, default=1, metavar="K", help="beam search with K prefixes (1 = greedy)")
    tr.add_argument("--threads", type=int, default=None, metavar="N", help="BLAS threads (default: chosen)")
    tr.add_argument("text", nargs="+", help='e.g. "three thousand and forty-two" (or 三千零四十二 for zh-en)')
    tr.set_defaults(fn=cmd_translate)
    tc = sub.add_parser("transcribe", help="transcribe spoken digits with a las checkpoint",
                        description="Transcribe 8 kHz mono 16-bit PCM WAV files with a checkpoint of --model las.")
    tc.add_argument("--checkpoint", required=True, metavar="PATH")
    tc.add_argument("--beam", type=int, default=1, metavar="K", help="beam search with K prefixes (1 = greedy)")
    tc.add_argument("files", nargs="+", metavar="FILE.wav")
    tc.set_defaults(fn=cmd_transcribe)
    s = sub.add_parser("sample", help="generate text from a checkpoint")
    s.add_argument("--checkpoint", metavar="PATH")
    s.add_argument("--from-hf", metavar="DIR", help="a GPT-2 directory (config.json, model.safetensors, vocab.json, "
                   "merges.txt) instead of a checkpoint")
    s.add_argument("--prompt", default="", help="text to continue (masked LM: text with [MASK] to fill in)")
    s.add_argument("--tokens", type=int, default=300, metavar="N", help="how many tokens to generate (300)")
    s.add_argument("--temperature", type=float, default=0.8, metavar="T", help="0 = greedy (0.8)")
    s.add_argument("--top-k", type=int, default=None, metavar="K", help="sample among the K likeliest tokens")
    s.add_argument("--top-p", type=float, default=None, metavar="P",
                   help="sample among the likeliest tokens whose mass first reaches P (nucleus sampling)")
    s.add_argument("--seed", type=int, default=0, metavar="S")
    s.add_argument("--threads", type=int, default=None, metavar="N", help="BLAS threads (default: chosen)")
    s.add_argument("--cache", action=argparse.BooleanOptionalAction, default=True,
                   help="keep each layer's keys and values (on); --no-cache recomputes the window every step")
    s.set_defaults(fn=cmd_sample)
    x = sub.add_parser("export", help="write a checkpoint's model in another format (GPT-2, Hugging Face)")
    x.add_argument("--format", choices=["hf"], default="hf",
                   help="hf: config.json, model.safetensors, vocab.json, merges.txt of a GPT-2 (the only one)")
    x.add_argument("--checkpoint", required=True, metavar="PATH")
    x.add_argument("dir", metavar="DIR", help="the directory to write (new, or without those files)")
    x.set_defaults(fn=cmd_export)
    e = sub.add_parser("eval", help="loss and perplexity of a checkpoint")
    e.add_argument("--checkpoint", required=True, metavar="PATH")
    e.add_argument("--data", metavar="FILE", help="score all of this file instead of the validation split")
    e.add_argument("--threads", type=int, default=None, metavar="N", help="BLAS threads (default: chosen)")
    e.add_argument("--data-dir", metavar="DIR", help="las: where the FSDD recordings are, if not where trained")
    e.set_defaults(fn=cmd_eval)
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

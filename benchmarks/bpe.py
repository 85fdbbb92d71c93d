"""Byte-level BPE training: minilm (Python) against Hugging Face ``tokenizers`` (Rust), on the same work.

    python benchmarks/bpe.py [--data FILE] [--vocab-size 2000] [--repeat 3] [--hf-threads 1] [--recount-merges 50]

Both learn a vocabulary of ``--vocab-size`` tokens (256 bytes + merges) on
the whole file, given as one string, with GPT-2's pre-tokenisation: minilm.bpe.BPETokenizer.train,
and tokenizers.ByteLevelBPETokenizer.train_from_iterator (min_frequency 1, no
special tokens).  Each is timed ``--repeat`` times, one after the other, in
this process; the best and the median are printed with the load average
before and after (other processes on the machine slow every contender).
``--hf-threads`` sets RAYON_NUM_THREADS before tokenizers loads (its trainer
is multithreaded; 1 compares one core with one core).

Also printed: the time minilm spends pre-tokenising, its merge loop's time
per merge, and (``--recount-merges N``) the time per merge of the method the
incremental counts replace, recounting every pair for each of the first N
merges; the time to encode the whole file with each vocabulary, the
tokens per character, whether the two learned the same merges in the same
order, and whether ``tokenizers``, reading the files minilm writes
(save_hf), gives minilm's ids on the whole file.  The last line is
the JSON of the results.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHARED = [HERE.parents[1] / "shared" / "data" / "tinyshakespeare.txt",  # beside the repository
          HERE.parents[2] / "shared" / "data" / "tinyshakespeare.txt"]  # one folder further up


def timed(fn, repeat: int):
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return out, times


def recount_merges(counts, n_merges: int) -> int:
    """The method incremental counting replaces: recount every pair of the distinct words for each merge.

    ``counts``: word -> how often it occurs (the pre-tokenised text).  Returns the merges made.
    """
    from collections import Counter

    words = [list(w.encode("utf-8")) for w in counts]
    n_w, new_id = list(counts.values()), 256
    for _ in range(n_merges):
        pairs = Counter()
        for w, n in zip(words, n_w, strict=True):
            for p in zip(w[:-1], w[1:], strict=True):
                pairs[p] += n
        if not pairs:
            break
        a, b = max(pairs, key=pairs.get)
        for k, w in enumerate(words):
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and w[i] == a and w[i + 1] == b:
                    out.append(new_id)
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            words[k] = out
        new_id += 1
    return new_id - 256


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", help="a UTF-8 text file (default: tinyshakespeare, the shared copy or the "
                                   "verified download)")
    ap.add_argument("--vocab-size", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--hf-threads", type=int, default=1, help="RAYON_NUM_THREADS for tokenizers (1)")
    ap.add_argument("--recount-merges", type=int, default=50, help="merges timed with recounting (50; 0 = skip)")
    args = ap.parse_args()
    os.environ["RAYON_NUM_THREADS"] = str(args.hf_threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true" if args.hf_threads > 1 else "false")

    from minilm.bpe import BPETokenizer
    from minilm.training.corpora import load_text, read_text_file

    if args.data:
        text, source = read_text_file(args.data), args.data
    else:
        local = next((p for p in SHARED if p.is_file()), None)
        text, source = (read_text_file(local), str(local)) if local else load_text(corpus="tinyshakespeare")
    print(f"{source}: {len(text):,} characters, {len(text.encode('utf-8')):,} bytes; "
          f"vocabulary {args.vocab_size}; {os.cpu_count()} CPUs")

    from collections import Counter

    from minilm.bpe import GPT2_PATTERN

    load_before = os.getloadavg()
    counts, t_pre = timed(lambda: Counter(GPT2_PATTERN.findall(text)), 1)
    ours, t_ours = timed(lambda: BPETokenizer.train(text, args.vocab_size), args.repeat)
    ids, t_enc = timed(lambda: BPETokenizer.from_dict(ours.to_dict()).encode(text), 1)  # a fresh word cache
    result = {"source": source, "chars": len(text), "vocab_size": args.vocab_size, "cpus": os.cpu_count(),
              "minilm": {"train_seconds": t_ours, "pretokenize_seconds": t_pre[0], "encode_seconds": t_enc[0],
                         "merges": len(ours.merges), "tokens": len(ids)}}
    if args.recount_merges:
        done, t_re = timed(lambda: recount_merges(counts, args.recount_merges), 1)
        result["recount"] = {"merges": done, "seconds": t_re[0]}
    try:
        import tokenizers
    except ImportError:
        tokenizers = None
    if tokenizers is not None:
        def hf_train():
            hf = tokenizers.ByteLevelBPETokenizer()
            hf.train_from_iterator([text], vocab_size=args.vocab_size, min_frequency=1, show_progress=False)
            return hf

        hf, t_hf = timed(hf_train, args.repeat)
        hf_ids, t_hf_enc = timed(lambda: hf.encode(text).ids, 1)
        with tempfile.TemporaryDirectory() as d:
            ours.save_hf(d)
            reader = tokenizers.ByteLevelBPETokenizer(str(Path(d) / "vocab.json"), str(Path(d) / "merges.txt"))
            same = reader.encode(text).ids == ids.tolist()
            hf.save_model(d)  # overwrites minilm's files with tokenizers' own
            theirs = BPETokenizer.load_hf(d)
        same_merges = theirs.vocab == ours.vocab and theirs.merges == ours.merges
        result["tokenizers"] = {"version": tokenizers.__version__, "threads": args.hf_threads,
                                "train_seconds": t_hf, "encode_seconds": t_hf_enc[0],
                                "merges": hf.get_vocab_size() - 256, "tokens": len(hf_ids)}
        result["tokenizers_reads_minilm_files_same_ids"] = same
        result["same_merges"] = same_merges
    result["load_before"], result["load_after"] = load_before, os.getloadavg()

    print(f"\n{'':<28} {'train best':>11} {'median':>8} {'encode':>8} {'merges':>7} {'tokens/char':>12}")
    rows = [("minilm (Python)", result["minilm"])]
    if "tokenizers" in result:
        rows.append((f"tokenizers {result['tokenizers']['version']} ({args.hf_threads} thr)", result["tokenizers"]))
    for name, r in rows:
        print(f"{name:<28} {min(r['train_seconds']):>10.2f}s {statistics.median(r['train_seconds']):>7.2f}s "
              f"{r['encode_seconds']:>7.2f}s {r['merges']:>7} {r['tokens'] / len(text):>12.4f}")
    if "tokenizers" in result:
        ratio = min(result["minilm"]["train_seconds"]) / min(result["tokenizers"]["train_seconds"])
        print(f"\ntraining: minilm takes {ratio:.1f}x the time of tokenizers; the same merges in the same "
              f"order: {same_merges}; tokenizers reading minilm's vocab.json + merges.txt gives minilm's ids "
              f"on the whole text: {same}")
    m = result["minilm"]
    per_merge = (min(m["train_seconds"]) - m["pretokenize_seconds"]) / m["merges"]
    print(f"minilm: pre-tokenising and counting the words {m['pretokenize_seconds']:.2f} s; the merge loop "
          f"{1e3 * per_merge:.2f} ms per merge (best run)")
    if "recount" in result:
        r = result["recount"]
        print(f"recounting all pairs for every merge instead: {1e3 * r['seconds'] / r['merges']:.0f} ms per merge "
              f"over the first {r['merges']} merges")
    print(f"load average {load_before[0]:.2f} before, {result['load_after'][0]:.2f} after (1-minute)")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

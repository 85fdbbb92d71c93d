"""Regenerate the README's Performance section from one run of each command it shows.

    python benchmarks/readme_performance.py              # every run (about 15 minutes on 2 cores)
    python benchmarks/readme_performance.py --dry-run    # print the section instead of writing it
    python benchmarks/readme_performance.py --keep runs.json   # and save every output;
    python benchmarks/readme_performance.py --from runs.json   # then rewrite the prose around them, running nothing

Runs one after the other, on this machine, as they are, with PAUSE seconds of quiet before each:

    python -m minilm bench --plain --rounds 3 --json
    MINILM_PROCESSES=0 python -m minilm bench --rounds 3 --json      (everything in one process)
    python -m minilm bench --profile
    python benchmarks/shakespeare.py
    python benchmarks/shakespeare.py --model lstm
    python benchmarks/busy_neighbour.py --json       (last: it loads the machine)

and writes the section between the README's ``<!-- performance:begin -->`` and
``<!-- performance:end -->`` lines: each command's output as it printed it, and
every figure the prose states read off that output (its JSON, or a line of
it).  The machine should be otherwise idle; each output carries the load
average it saw.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
README = HERE.parent / "README.md"
BEGIN, END = "<!-- performance:begin -->", "<!-- performance:end -->"
PAUSE = 45.0  # seconds of quiet before each command


def run(cmd: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
    print("$", " ".join(cmd), flush=True)
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})}, cwd=HERE.parent)
    if done.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed (exit status {done.returncode}):\n{done.stderr[-3000:]}")
    return done


def split_json(text: str):
    """(the text before a trailing JSON document, the document) of an output that ends with one."""
    lines = text.rstrip().splitlines()
    for i, line in enumerate(lines):
        if line.startswith(("{", "[")):
            try:
                return "\n".join(lines[:i]).rstrip(), json.loads("\n".join(lines[i:]))
            except json.JSONDecodeError:
                continue
    raise ValueError("no JSON at the end of the output")


def number(pattern: str, text: str) -> str:
    m = re.search(pattern, text)
    if m is None:
        raise ValueError(f"{pattern!r} not in the output")
    return m.group(1)


def bench_figures(js: dict) -> dict:
    """The figures the prose takes from one bench run's JSON."""
    r, goals = js["results"], {g["goal"].split(",")[0].split(" ")[0] + str(g["target"]): g for g in js["goals"]}
    tf, ls = r["transformer"], r["lstm"]
    f = {"load": f"{js['load_average']:.1f}", "load_after": f"{js['load_average_after']:.1f}",
         "tf_torch": f"{tf['fast']['vs_torch']:.2f}", "tf_floor": f"{tf['fast']['vs_floor']:.2f}",
         "lstm_torch": f"{ls['fast']['vs_torch']:.2f}"}
    for key, g in (("tf_torch", goals.get("Transformer0.8")), ("tf_floor", goals.get("Transformer1.3")),
                   ("lstm_torch", goals.get("LSTM1.25"))):
        if g:
            f[key + "_status"] = g["status"]
            f[key + "_rounds"] = f"{g['rounds'][0]:.2f}-{g['rounds'][1]:.2f}x"
    if "peak" + "250" in goals:
        f["peak"] = f"{goals['peak250']['figure']:.0f}"
    for w in ("ngram-27", "ngram-10000"):
        if w in r:
            f[w] = f"{r[w]['fast']['vs_torch']:.2f}" if "vs_torch" in r[w]["fast"] else "?"
    if js.get("blas"):
        f["blas"] = f"{js['blas']['floor_vs_tfloor']:.2f}"
        f["goal_floor"] = f"{js['blas']['goal_vs_floor']:.2f}"
    return f


def shakespeare_figures(js: list[dict]) -> dict:
    by = {("torch" if r["who"].startswith("PyTorch") else "minilm"): r for r in js}
    mine, theirs = by["minilm"], by["torch"]
    ratio = mine["train_seconds"] / theirs["train_seconds"]
    return {"val": f"{mine['val_loss']:.3f}", "torch_val": f"{theirs['val_loss']:.3f}",
            "peak": f"{mine.get('peak_mb', 0):.0f}", "ratio": f"{ratio:.2f}", "ratio_raw": ratio,
            "val_raw": mine["val_loss"], "gap": f"{abs(mine['val_loss'] - theirs['val_loss']):.3f}",
            "gap_raw": abs(mine["val_loss"] - theirs["val_loss"])}


def met(figure, goal: float) -> str:
    """Whether ``figure`` (a number, or the string of one) is within ``goal``; a figure that only rounds to
    the goal is not, and says so with three decimals."""
    value = float(figure)
    if value <= goal:
        return "met"
    return f"not met, {value:.3f} before rounding" if float(f"{value:.2f}") <= goal else "not met"


def section(out: dict) -> str:
    b, b1, p, busy, st, sl = (out[k] for k in ("bench", "one", "profile", "busy", "shakespeare", "lstm"))
    M = out.get("machine") or {"cpu": "?", "blas": "?", "core": "?"}
    B, B1 = bench_figures(b["json"]), bench_figures(b1["json"])
    S, SL = shakespeare_figures(st["json"]), shakespeare_figures(sl["json"])
    q, bb, one = busy["json"]["quiet"], busy["json"]["busy"], busy["json"]["busy, 1 thread"]
    many = next(v for k, v in busy["json"].items() if k.startswith("busy, ") and k != "busy, 1 thread")
    busy_ratio, one_ratio = bb["train_seconds"] / q["train_seconds"], bb["train_seconds"] / one["train_seconds"]
    many_ratio = many["train_seconds"] / q["train_seconds"]
    P = {"step_floor": number(r"step / floor ([\d.]+)", p["text"]),
         "mm_step": number(r"2-D products \(matmul\) take ([\d.]+) ms", p["text"]),
         "mm_floor": number(r"ms against ([\d.]+) ms for the same products in the floor", p["text"]),
         "mm_ratio": number(r"products in the floor, ([\d.]+)x", p["text"]),
         "fwd_us": number(r"forward loop over t\s+[\d.]+ ms\s+([\d.]+) us", p["text"]),
         "bwd_us": number(r"backward loop over t\s+[\d.]+ ms\s+([\d.]+) us", p["text"]),
         "faults_kept": number(r"page faults per call: (\d+) with the Workspace kept", p["text"]),
         "faults_fresh": number(r"kept, (\d+) with a fresh one", p["text"]),
         "transpose": number(r"blas.transpose [\d.]+ us \(([\d.]+)x\)", p["text"]),
         "form": number(r"gate form '(\w+)'", p["text"]),
         "tanh_us": number(r"tanh form ([\d.]+) us", p["text"]),
         "exp_us": number(r"exp form ([\d.]+) us", p["text"])}
    compiled = "elementwise: compiled loops" in p["text"]
    form_line = (f"the steps make their gates by `{P['form']}`, the form of the compiled step of loops.c, which "
                 "replaces those NumPy calls (minilm.fast.lstm.gate_form)." if compiled else
                 f"so the steps make their gates by `{P['form']}` here (minilm.fast.lstm.gate_form).")
    blas_line = ""
    if "blas" in B:
        blas_line = f"On the products alone NumPy's BLAS (floor) takes {B['blas']}x PyTorch's time (tfloor)"
        if not 0.95 <= float(B["blas"]) <= 1.05:
            blas_line += f"; a fast step at 0.8x PyTorch would be {B['goal_floor']}x its own floor."
        elif float(B["tf_torch"]) <= 0.8:
            blas_line += (f": the products cost both sides about the same, so the fast step's lead is made above them "
                          f"(a step at 0.8x PyTorch would be {B['goal_floor']}x its own floor; this one is "
                          f"{B['tf_floor']}x).")
        else:
            blas_line += (f": the products cost both sides about the same, and what stands between the fast step and "
                          f"0.8x PyTorch is its work above them (a step at 0.8x PyTorch would be {B['goal_floor']}x "
                          f"its own floor).")
    return f"""{BEGIN}
## Performance

minilm is for reading, but a class that waits ten minutes for every
experiment learns less.  `minilm/fast/` trains the same models faster: the
same formulas and parameter names, each function naming the plain one it
mirrors, and tests (`tests/test_fast.py`, `tests/test_fast_gpt.py`,
`tests/test_fast_procs.py`, `tests/test_fast_fused.py`) that compare losses,
gradients and whole AdamW steps with the plain models in float64 (they agree
to 1e-10 or better; the gradient checks run on the plain code).  `minilm train --fast` covers every
language model and configuration `train` offers: the Transformer pre- or
post-LN (the text's), ReLU or GELU, sinusoidal or learned positions, with or
without dropout, with or without the output layer's bias (GPT-2's has none:
`--init-from`), the masked LM, the LSTM LM and the n-gram model.  It draws
the same batches, masks and dropout from the run's generator as the plain
step, and checkpoints are the same.  `--model seq2seq` and `--model las` have
no fast path yet: `--fast` refuses them in one line.  What the fast path does
differently:

* parameters, gradients and AdamW moments are one flat float32 buffer each,
  updated in place (decayed matrices first: weight decay is one multiply);
* every activation lives in a buffer allocated once and reused by every step;
* W_q, W_k, W_v are column blocks of one (C, 3C) matrix: one product gives
  q, k, v, and the heads are strided views of it (no copies, no einsum);
* every NumPy call is a pass over memory, and GELU's forward alone is nine
  of them.  So the elementwise chains (GELU, LayerNorm and the attention's
  softmax, each forward and backward; the cross-entropy; AdamW; the bias
  adds and the sum of two halves' gradients; each LSTM step after its
  recurrent product, and the LSTM's gate derivatives) are also written as
  single loops in C, `minilm/fast/loops.c`, one function per chain, named
  after the kernel it mirrors and beside the same formula.  A loop does what
  its chain's neighbours did where that saves a pass: the softmax scales the
  scores by 1/sqrt(d_k) itself (forward and backward), GELU's backward adds
  the bias again and sums the bias's gradient, the halves' gradient sum gives
  the norm's sum of squares.  The softmax goes by blocks of 16 keys (a causal
  row to its length rounded up), with its own exp written out (`exp_f`,
  within an ulp), so that its short rows compile to whole vector
  operations; k^T and v^T of the heads are copied by 8 x 8 tiles, v^T in the
  forward while v is still in the cache, kept for the backward.  The first use
  compiles that file with the machine's C compiler (`cc`, or `$CC`; `-O3
  -march=native`, on x86-64 512-bit vectors where the CPU has them, IEEE
  arithmetic but for fused multiply-adds, glibc's vector exp and tanh where
  they link) into `~/.cache/minilm/`, once per source and machine; ctypes calls
  it, and gives up the interpreter lock meanwhile (`minilm/fast/fused.py`).
  Without a compiler, or with `MINILM_FUSED=0`, the kernels run their NumPy
  chains, which `tests/test_fast_fused.py` checks each loop against (float32
  and float64, and a loop broken on purpose is caught); `bench` prints which
  ran.  In the NumPy chains the causal mask is added (0 or -inf), not
  `np.where`, the row sums are matrix-vector products, GELU is the plain
  code's sigmoid form without the clamp pass (exp may overflow to s = 0
  instead), and long chains run in cache-sized blocks of 64k elements; the
  matrix products are NumPy's (BLAS) either way.  The embedding gradient of a
  small vocabulary is one product with a one-hot matrix instead of
  `np.add.at`;
* OpenBLAS makes its threads wait for each other by spinning, and they go on
  spinning for a while after a product returns, on the core the fast path's
  second thread or process needs: every fast model's step, forward and
  evaluation runs with BLAS on one thread throughout
  (`minilm/fast/blas.py`, tested), and the fast path splits the large
  products itself;
* two threads of one process help the many short NumPy calls of an
  elementwise chain or a loop over time steps far less than the products:
  each call gives the interpreter lock up and takes it back, and two threads
  making many short calls spend their time handing it over.  So on two
  cores the work is split over two processes (`minilm/fast/procs.py` starts
  the second, `minilm/fast/peer.py` is what it runs), over memory both map:
  a Transformer step without dropout runs as two halves of the batch, each
  the whole forward and backward on one core, the loss and gradients being
  the halves' means weighted by their counted targets (each process sums the
  two halves' gradients over its half of the entries); the optimiser step
  (gradient norm and AdamW) of every model of 2^18 parameters or more runs
  half of its rows in each process, its moments in memory both map; the
  AdamW lines are one pass each (OpenBLAS's `?axpby`, y = alpha x + beta y).
  An error on either side is raised in the caller and the second
  process replaced; `MINILM_PROCESSES=0` keeps everything in one process
  (two threads: the Transformer's weight-gradient products then go to the
  second thread behind the backward chain);
* the LSTM (`minilm/fast/lstm.py`): the loop over t cannot be split, and
  NumPy pays about a microsecond per call inside it, so the loop makes as few
  calls as the formulas allow: with the compiled loops, a step is its
  recurrent product and one call of loops.c (forward: the four gates, c_t and
  h_t; backward: the gates' gradients and dc_{{t-1}}).  In NumPy, one call
  gives all four gates: one `tanh`
  (sigmoid(a) = (1 + tanh(a/2)) / 2), or, where that form's calls take longer
  than this one's (both timed once per process; `bench --profile` prints
  both), one `exp` (sigmoid(a) = 1 / (1 + exp(-a)), tanh(a) =
  2 sigmoid(2a) - 1); the factors folded into copies of W_x, W_h and b made
  once per call, the gates stored in the order i, f, o, g so the sigmoids
  are one block; the gates' derivatives are computed a chunk of 8
  steps at a time before the backward loop enters it; with the kernels of
  OpenBLAS's AVX-512 cores the recurrent products h_{{t-1}} W_h and dA_t W_h^T
  are made a block of W_h's columns at a time, each small enough for their
  small-matrix kernel, and with other kernels (which have none) whole
  (`bench --profile` prints both, and which the steps use); W_h^T and W_x^T are copied
  by OpenBLAS's transpose, not NumPy's strided copy; every array and every
  per-step view of it lives in a workspace allocated once per shape.  On two
  cores one layer with a batch of 32 rows or more runs the second half of the
  batch in the second process (the rows are independent; the weights'
  gradients are summed at the end), and each half, with nothing to overlap on
  its core, makes each product and the gates' derivatives over all T steps at
  once rather than a chunk at a time; a stack of layers (the LSTM LM) runs as a
  wavefront, the odd layers in the second process, layer 2 working on steps
  t0..t0+7 as soon as layer 1 has finished them, with four bytes through a
  pipe for each finished chunk.  For the LSTM LM's character vocabulary the
  embeddings' gradient is (onehot dA_0) W_x0^T, fewer multiply-adds than
  making layer 1's input gradient dx first; onehot dA_0 is made a few chunks
  of steps at a time behind layer 1's backward loop, in the time that side
  would otherwise wait for the layer above.

```bash
python -m minilm bench --plain --rounds 3    # every workload and every goal's figure, from one run
python -m minilm bench --profile             # where the fast Transformer step and LSTM call spend their time
python benchmarks/shakespeare.py                # nanoGPT's recipe on tinyshakespeare, PyTorch then minilm --fast
python benchmarks/shakespeare.py --model lstm   # the 2-layer LSTM LM likewise (--only torch / minilm: one half)
python benchmarks/busy_neighbour.py             # the main command with a busy-loop process beside it
python benchmarks/readme_performance.py         # the five commands above, written into this section
python benchmarks/column_blocks.py              # the LSTM's recurrent products in column blocks or whole
```

Measured on this project's machine ({M['cpu']}, 2 cores, NumPy {b['json']['numpy']} with
OpenBLAS {M['blas']}, its {M['core']} kernels, PyTorch 2.13 CPU) while it was otherwise idle, each block below
from one run of the command above it, with the load average it printed; the
whole section is written by `python benchmarks/readme_performance.py`.

`python -m minilm bench --plain --rounds 3` (each contender in its own process, taking turns):

```
{b['text']}
```

Of the goals, the fast Transformer step is {B['tf_torch']}x PyTorch eager with
its fused attention and fused AdamW (goal 0.8x: {B.get('tf_torch_status', '?')}) and
{B['tf_floor']}x its own matmul floor (goal 1.3x: {B.get('tf_floor_status', '?')}); the LSTM is
{B['lstm_torch']}x `nn.LSTM` (goal 1.25x, 1.5x acceptable: {B.get('lstm_torch_status', '?')}); peak
memory is {B.get('peak', '?')} MB (goal 250 MB: {met(B.get('peak', '1e9'), 250)}).  The "rounds" column is
the same ratio within each of the three rounds, where the contenders ran one right after the other
({B.get('tf_torch_rounds', '')}, {B.get('tf_floor_rounds', '')} and {B.get('lstm_torch_rounds', '')}): the
machine's other work moves a ratio by about that much from run to run.  The n-gram models are
{B['ngram-27']}x and {B['ngram-10000']}x PyTorch.  The matmul floor is the products of the fast
Transformer step alone, made as the step makes them (on two cores, half of
the batch in each of two processes, one thread each), and tfloor the same
products in PyTorch on its own threads.  {blas_line}  Peak memory is the
whole process's peak resident size, and with a second process that
process's peak added.

The same bench in one process, `MINILM_PROCESSES=0 python -m minilm bench --rounds 3`
(two threads; load average {B1['load']} before, {B1['load_after']} after), gave the Transformer step
{B1['tf_torch']}x PyTorch and {B1['tf_floor']}x its floor (the floor there made on two threads), the LSTM
{B1['lstm_torch']}x `nn.LSTM`, the n-gram models {B1['ngram-27']}x and {B1['ngram-10000']}x.

**Where the time goes.** `python -m minilm bench --profile` times each kernel
of one fast step in CPU time on one thread, against the same products alone:

```
{p['text']}
```

On one thread the Transformer step is {P['step_floor']}x its products.  The
products themselves take longer in the step: its 2-D ones {P['mm_step']} ms against
{P['mm_floor']} ms in the floor ({P['mm_ratio']}x): the floor makes every layer's products from
one set of arrays, the step from each layer's own.  Above the products:
attention's softmax and head transposes (the parts of `attention_*` that the
floor's batched products do not account for), GELU forward and backward,
LayerNorm, the cross-entropy and AdamW (one pass over memory each in the
compiled loops), and "rest": the bias adds (compiled loops too), residual
adds, lookups and views.  In the LSTM call the two loops over t cost {P['fwd_us']} and
{P['bwd_us']} us per time step; a fresh set of arrays for every call costs
{P['faults_fresh']} minor page faults per call, the kept Workspace {P['faults_kept']}; OpenBLAS's
transpose copies a (256, 1024) W {P['transpose']}x faster than NumPy.  One step's gate calls over a
(32, 512) block took {P['tanh_us']} us in the tanh form and {P['exp_us']} us in the exp form; {form_line}

**The busy neighbour.** `python benchmarks/busy_neighbour.py` runs the
README's main command four times: on the quiet machine, then with one
`while True: pass` process beside it, letting the command choose its BLAS
threads, with `--threads 1` and with every core's thread (what OpenBLAS's
default would use on this machine):

```
{busy['text']}
```

With a busy neighbour the main command trains in {busy_ratio:.2f}x its quiet time (goal at most
1.3x: {met(busy_ratio, 1.3)}) and in {one_ratio:.2f}x the time with one thread forced; every core's thread,
OpenBLAS's default, takes {many_ratio:.2f}x the quiet time.

**Quality at speed.** nanoGPT's CPU recipe on tinyshakespeare (characters,
first 90% for training, last 10% for validation; 4 layers, 4 heads, width
128, block 64, batch 12, pre-LN, GELU, tied embeddings, learned positions,
dropout 0; 2000 steps of AdamW, beta2 0.99, weight decay 0.1, clipping at
1.0), with the learning rate raised from nanoGPT's 1e-3 to 2e-3 (100 warmup
steps, cosine decay to 2e-4), PyTorch then minilm `--fast`, back to back.
`python benchmarks/shakespeare.py` (the data: a copy beside the repository
if there is one, else minilm's verified download) runs for minilm:

```bash
{st['command']}
```

and printed:

```
{st['text']}
```

minilm reaches a validation loss of {S['val']} over the whole split (goal at most
1.75: {met(S['val_raw'], 1.75)}; PyTorch with nanoGPT's initialisation {S['torch_val']} on the same recipe),
with {S['peak']} MB of peak memory (both processes; goal at most 250 MB: {met(S['peak'], 250)}), in
{S['ratio']}x PyTorch's training time (goal 0.8x: {met(S['ratio_raw'], 0.8)}).  The LSTM LM
(`python benchmarks/shakespeare.py --model lstm`: 2 layers of 256 units,
embeddings of 256, the same data, batch, block, steps and schedule, lr 3e-3)
starts both sides from the same parameters on the same batches:

```
{sl['text']}
```

The two validation losses differ by {SL['gap']} (goal at most 0.02: {met(SL['gap_raw'], 0.02)}); minilm
takes {SL['ratio']}x `nn.LSTM`'s time (goal 1.25x: {met(SL['ratio_raw'], 1.25)}), its two layers running as
a wavefront on the two cores.
{END}"""


def shakespeare(model: str) -> dict:
    done = run([sys.executable, str(HERE / "shakespeare.py"), "--model", model])
    lines = done.stdout.rstrip().splitlines()
    command = next(line[2:] for line in lines if line.startswith("$ "))
    text, js = split_json("\n".join(lines[lines.index(next(ln for ln in lines if ln.startswith(model + ","))):]))
    return {"text": text, "json": js, "command": wrap(command.replace(" --out ", " --out ").strip())}


def wrap(command: str, width: int = 110) -> str:
    """A long command over several lines, continued with backslashes; the temporary paths named simply."""
    command = re.sub(r"--data \S+", "--data tinyshakespeare.txt", command)
    command = re.sub(r" --out \S+", "", command)
    words, lines, line = command.split(), [], "python"
    for w in words[1:] if words[0].endswith("python") or "/" in words[0] else words:
        if len(line) + 1 + len(w) > width:
            lines.append(line + " \\")
            line = "    " + w
        else:
            line += " " + w
    return "\n".join(lines + [line])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry-run", action="store_true", help="print the section instead of writing the README")
    ap.add_argument("--keep", metavar="FILE", help="also save every command's output to FILE (JSON)")
    ap.add_argument("--from", dest="source", metavar="FILE",
                    help="write the section from the outputs a --keep run saved, without running anything")
    a = ap.parse_args(argv)
    out = json.loads(Path(a.source).read_text()) if a.source else outputs()
    if a.keep:
        Path(a.keep).write_text(json.dumps(out))
    new = section(out)
    if a.dry_run:
        print(new)
        return 0
    readme = README.read_text()
    if BEGIN not in readme or END not in readme:
        raise SystemExit(f"README.md has no {BEGIN} ... {END} lines to write between")
    head, rest = readme.split(BEGIN, 1)
    README.write_text(head + new + rest.split(END, 1)[1])
    print(f"wrote the Performance section of {README}")
    return 0


def machine() -> dict:
    """The CPU's model name, NumPy's OpenBLAS version and the kernels it chose (as threadpoolctl reports them)."""
    done = run([sys.executable, "-c", "import json, numpy, threadpoolctl; print(json.dumps(["
                "i for i in threadpoolctl.threadpool_info() if i['user_api'] == 'blas']))"])
    info = (json.loads(done.stdout) or [{}])[0]
    cpu = "a CPU of unknown model"
    try:
        names = [ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                 if ln.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    return {"cpu": cpu, "blas": info.get("version", "?"), "core": info.get("architecture", "?")}


def outputs(pause: float = PAUSE) -> dict:
    """Every command's output, run one after the other, ``pause`` seconds of quiet before each (the load
    average a command prints is over the last minute); the busy neighbour last, as it loads the machine."""
    py = sys.executable
    out = {"machine": machine()}
    quiet = lambda: time.sleep(pause)  # noqa: E731
    quiet()
    done = run([py, "-m", "minilm", "bench", "--plain", "--rounds", "3", "--json"])
    out["bench"] = {"text": done.stderr.rstrip(), "json": json.loads(done.stdout)}
    quiet()
    done = run([py, "-m", "minilm", "bench", "--rounds", "3", "--json"], {"MINILM_PROCESSES": "0"})
    out["one"] = {"text": done.stderr.rstrip(), "json": json.loads(done.stdout)}
    quiet()
    out["profile"] = {"text": run([py, "-m", "minilm", "bench", "--profile"]).stdout.rstrip()}
    quiet()
    out["shakespeare"] = shakespeare("transformer")
    quiet()
    out["lstm"] = shakespeare("lstm")
    quiet()
    text, js = split_json(run([py, str(HERE / "busy_neighbour.py"), "--json"]).stdout)
    out["busy"] = {"text": text, "json": js}
    return out


if __name__ == "__main__":
    sys.exit(main())

"""``python -m minilm bench``: time one training step of each model, against PyTorch when it is installed.

Workloads (the configurations of the performance table in the README):

    transformer   nanoGPT's CPU model: 4 layers, 4 heads, C 128, T 64, B 12, V 65, pre-LN, GELU,
                  tied embeddings, learned positions; forward, backward, clipping, AdamW
    lstm          one LSTM layer 128 -> 128, T 64, B 32: forward and backward
    ngram-27      MLP n-gram: 3 tokens of context, E 30, 200 tanh units, B 32, V 27; step with AdamW
    ngram-10000   the same with a vocabulary of 10,000

Each contender runs in a process of its own (so no two libraries share a
thread pool), after ``--warmup`` steps, for ``--steps`` timed steps; the
contenders of a workload take turns for ``--rounds`` rounds, so a slow
moment of the machine hits all of them.  A contender's time is the median
of all its steps.  Contenders:

    fast     minilm.fast (the path ``minilm train`` uses when it can)
    plain    the readable model the gradient checks run on (with --plain)
    floor    (Transformer) the matrix multiplies of the step alone, each one np.matmul, made as
             the fast step makes them (on two cores: half of the batch in each of two processes)
    torch    the same work in PyTorch (benchmarks/torch_ref.py), when torch is installed
    tfloor   (Transformer, with torch) the floor's matrix multiplies in PyTorch, each one
             torch.matmul: the floor/tfloor ratio is how much faster PyTorch's BLAS makes the
             products both sides need, the part of a step no change to minilm's code removes

Peak memory is the peak resident size of the contender's process (the
interpreter and libraries included).  After the table, each goal of the
performance work is printed with this run's figure (``GOALS``).  A
benchmark, not a test: it asserts nothing.  ``--profile`` prints instead
where the fast steps spend their time, op by op (minilm.fast.profile).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

WORKLOADS = ("transformer", "lstm", "ngram-27", "ngram-10000")
CONTENDERS = {"transformer": ("fast", "plain", "floor", "torch", "tfloor"), "lstm": ("fast", "plain", "torch"),
              "ngram-27": ("fast", "plain", "torch"), "ngram-10000": ("fast", "plain", "torch")}
TORCH_KINDS = ("torch", "tfloor")
PLAIN_STEPS = 5  # the readable models are many times slower: a few steps give their median
TORCH_SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "torch_ref.py"


# ---- the numpy contenders (run inside a worker process) -----------------------------------------

def transformer_config():
    from minilm.transformer import TransformerConfig

    return TransformerConfig(vocab_size=65, block_size=64, n_layer=4, n_head=4, n_embd=128, ffn="gelu",
                             norm="pre", pos="learned", scale_embed=False, tie_weights=True, dropout=0.0)


def _adamw_plain(params, grads, state):
    from minilm import optim

    optim.clip_grad_norm(grads, 1.0)
    optim.adamw_step(params, grads, state, 1e-3, 0.9, 0.99, weight_decay=0.1)


def transformer_step(kind: str):
    from minilm import optim, transformer

    cfg, B, T = transformer_config(), 12, 64
    rng = np.random.default_rng(0)
    params = transformer.init_params(cfg, rng)
    x, y = rng.integers(0, cfg.vocab_size, (2, B, T))
    if kind == "fast":
        from minilm.fast.gpt import FastTransformer

        model = FastTransformer(cfg, params)
        return lambda: model.step(x, y, 1e-3, 0.9, 0.99, weight_decay=0.1, max_norm=1.0), B * T
    if kind == "plain":
        state = optim.init_state(params)

        def step():
            _, grads = transformer.loss_and_grads(params, cfg, x, y)
            _adamw_plain(params, grads, state)

        return step, B * T
    if kind == "floor":
        return matmul_floor(cfg, B, T, rng), B * T
    raise ValueError(kind)


def matmul_floor(cfg, B: int, T: int, rng):
    """The matrix products of one fast Transformer step (forward and backward), and nothing else.

    The same products, of the same shapes, made the same way as minilm.fast.gpt makes them: per
    layer q/k/v, output and the two feed-forward projections (forward, input gradient, weight
    gradient) and six batched attention products; then the tied output layer.  On two cores with
    the second process (minilm.fast.procs), as the fast step: each of two processes makes the
    products of half of the batch on one thread, at the same time (_TwoProcesses).  Otherwise the
    2-D products split by rows over two threads with BLAS on one thread
    (minilm.fast.kernels.matmul_split) and the attention products by halves of the batch.
    """
    from minilm.fast import blas
    from minilm.fast import kernels as K
    from minilm.fast.threads import alone, n_threads

    if n_threads() == 2 and os.environ.get("MINILM_PROCESSES", "1") != "0" and hasattr(os, "fork"):
        half = _floor_products(cfg, B // 2, T, rng)  # each process's share, as in the fast step
        return _TwoProcesses(lambda: _with(alone, blas.one_thread, lambda: half(K.matmul)))
    products = _floor_products(cfg, B, T, rng)

    def floor():
        if n_threads() == 1:
            return products(K.matmul)
        with blas.one_thread() as split:
            products(K.matmul_split if split else K.matmul)

    return floor


def _with(*contexts_then_fn):
    """fn() inside the given context managers (each called to make one)."""
    *contexts, fn = contexts_then_fn
    if not contexts:
        return fn()
    with contexts[0]():
        return _with(*contexts[1:], fn)


class _TwoProcesses:
    """A step that runs ``work()`` here and in a forked copy of this process at the same time, and
    returns when both have finished (a byte through a pipe each way).  The copy exits when this side
    closes its pipe: close(), on deletion, or when this process ends."""

    def __init__(self, work):
        self.work = work
        go_r, self.go_w = os.pipe()
        self.done_r, done_w = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:  # the copy: one step per byte, until the pipe closes
            os.close(self.go_w), os.close(self.done_r)
            try:
                while os.read(go_r, 1):
                    work()
                    os.write(done_w, b"x")
            finally:
                os._exit(0)
        os.close(go_r), os.close(done_w)

    def __call__(self):
        os.write(self.go_w, b"x")
        self.work()
        if not os.read(self.done_r, 1):
            raise RuntimeError("the floor's second process exited")

    def close(self):
        if self.pid:
            os.close(self.go_w), os.close(self.done_r)
            os.waitpid(self.pid, 0)
            self.pid = 0

    __del__ = close


def _floor_products(cfg, B: int, T: int, rng):
    """products(mm): the floor's products for a batch of B sequences, 2-D ones through mm(a, b, out)."""
    from minilm.fast.threads import run_halves

    C, H, V, L = cfg.n_embd, cfg.n_head, cfg.vocab_size, cfg.n_layer
    M, F, hs = B * T, 4 * C, C // H
    r = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    x, xF, x3, logits, dx = r(M, C), r(M, F), r(M, 3 * C), r(M, V), r(M, C)
    lin = [(x, r(C, 3 * C), x3), (x, r(C, C), x.copy()), (x, r(C, F), xF), (xF, r(F, C), x.copy())]
    grads = [(r(*a.shape), r(*w.shape)) for a, w, _ in lin]  # (da, dw): no product's output is read back
    # as an input, so every value stays what the first step made it (finite: no overflow to inf and NaN)
    qkv, S, E, dE = r(M, 3 * C), r(B, H, T, T), r(V, C), r(V, C)
    q, k, v = (qkv[:, i * C:(i + 1) * C].reshape(B, T, H, hs).transpose(0, 2, 1, 3) for i in range(3))
    out = r(M, C).reshape(B, T, H, hs).transpose(0, 2, 1, 3)

    def attention(lo, hi):
        np.matmul(q[lo:hi], k[lo:hi].swapaxes(-1, -2), out=S[lo:hi])  # scores q k^T
        np.matmul(S[lo:hi], v[lo:hi], out=out[lo:hi])  # heads P v
        np.matmul(S[lo:hi].swapaxes(-1, -2), q[lo:hi], out=out[lo:hi])  # dv = P^T dout
        np.matmul(q[lo:hi], k[lo:hi].swapaxes(-1, -2), out=S[lo:hi])  # dP = dout v^T
        np.matmul(S[lo:hi], k[lo:hi], out=out[lo:hi])  # dq = dS k
        np.matmul(S[lo:hi].swapaxes(-1, -2), q[lo:hi], out=out[lo:hi])  # dk = dS^T q

    def products(mm):
        for _ in range(L):
            for (a, w, o), (da, dw) in zip(lin, grads, strict=True):
                mm(a, w, o)  # forward: (M, Din) x (Din, Dout)
                mm(o, w.T, da)  # input gradient: (M, Dout) x (Dout, Din)
                mm(a.T, o, dw)  # weight gradient: (Din, M) x (M, Dout)
            run_halves(attention, B)
        mm(x, E.T, logits)  # logits (M, C) x (C, V)
        mm(logits, E, dx)  # dx (M, V) x (V, C)
        mm(logits.T, x, dE)  # dwte (V, M) x (M, C)

    return products


def lstm_step(kind: str, keep_workspace: bool = True):
    from minilm import lstm

    B, T, D, Hd = 32, 64, 128, 128
    rng = np.random.default_rng(0)
    Wx, Wh, b = lstm.lstm_init(rng, D, Hd)
    x = rng.standard_normal((B, T, D)).astype(np.float32)
    dout = rng.standard_normal((B, T, Hd)).astype(np.float32)
    h0 = np.zeros((B, Hd), np.float32)
    if kind == "plain":
        def step():
            _, _, cache = lstm.lstm_forward(x, h0, h0, Wx, Wh, b)
            lstm.lstm_backward(dout, cache)

        return step, B * T
    if kind == "fast":
        from minilm.fast import lstm as fast_lstm
        from minilm.fast import procs

        ws = fast_lstm.Workspace()  # the layer's arrays, kept from call to call as a model keeps them
        peer = procs.peer()  # half of the batch in a second process (None: two threads here)

        def step():
            _, _, cache = fast_lstm.lstm_forward(x, h0, h0, Wx, Wh, b, ws if keep_workspace else None, peer)
            fast_lstm.lstm_backward(dout, cache)

        return step, B * T
    raise ValueError(kind)


def ngram_step(kind: str, V: int):
    from minilm import ngram, optim

    cfg, B = ngram.NgramConfig(vocab_size=V, context=3, n_embd=30, n_hidden=200), 32
    rng = np.random.default_rng(0)
    params = ngram.init_params(cfg, rng)
    ctx, y = rng.integers(0, V, (B, 3)), rng.integers(0, V, B)
    if kind == "plain":
        state = optim.init_state(params)

        def step():
            _, grads = ngram.loss_and_grads(params, cfg, ctx, y)
            _adamw_plain(params, grads, state)

        return step, B
    if kind == "fast":
        from minilm.fast.ngram import FastNgram

        model = FastNgram(cfg, params)
        return lambda: model.step(ctx, y, 1e-3, 0.9, 0.99, weight_decay=0.1, max_norm=1.0), B
    raise ValueError(kind)


def make_step(workload: str, kind: str):
    if workload == "transformer":
        return transformer_step(kind)
    if workload == "lstm":
        return lstm_step(kind)
    if workload.startswith("ngram-"):
        return ngram_step(kind, int(workload.split("-")[1]))
    raise ValueError(f"unknown workload {workload!r}; choose from {', '.join(WORKLOADS)}")


def worker(workload: str, kind: str, steps: int, warmup: int) -> dict:
    """Time ``steps`` steps after ``warmup`` steps, in this process."""
    step, tokens = make_step(workload, kind)
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    from minilm.fast import procs

    peak_kb += procs.peak_kb() or 0  # a second process's peak counts too
    return {"times": sorted(times), "tokens": tokens, "peak_mb": peak_kb / 1024}


# ---- the harness ----------------------------------------------------------------------------------

def torch_available() -> bool:
    try:
        import importlib.util

        return importlib.util.find_spec("torch") is not None and TORCH_SCRIPT.exists()
    except ValueError:
        return False


def run_contender(workload: str, kind: str, steps: int, warmup: int) -> dict:
    """One contender in a fresh process; returns its JSON result."""
    if kind in TORCH_KINDS:
        cmd = [sys.executable, str(TORCH_SCRIPT), workload + ("-floor" if kind == "tfloor" else "")]
    else:
        cmd = [sys.executable, "-m", "minilm.fast.bench", "--worker", workload, kind]
    if kind == "plain":
        steps, warmup = min(steps, PLAIN_STEPS), 1
    cmd += ["--steps", str(steps), "--warmup", str(warmup)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)  # the caller's environment, as is
    if done.returncode:
        raise RuntimeError(f"{workload}/{kind} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(workloads, steps: int = 30, warmup: int = 10, rounds: int = 2, use_torch: bool = True, plain: bool = False,
        log=print) -> dict:
    """Every contender of every workload, ``rounds`` times in turn; returns the results by workload."""
    results = {}
    for w in workloads:
        kinds = [k for k in CONTENDERS[w] if (k not in TORCH_KINDS or use_torch) and (k != "plain" or plain)]
        got = {k: {"times": [], "round_ms": [], "peak_mb": 0.0} for k in kinds}
        for _ in range(rounds):
            for k in kinds:
                r = run_contender(w, k, steps, warmup)
                got[k]["times"] += r["times"]
                got[k]["round_ms"].append(1e3 * float(np.median(r["times"])))
                got[k]["peak_mb"] = max(got[k]["peak_mb"], r["peak_mb"])
                got[k]["tokens"] = r["tokens"]
        rows = {}
        for k, g in got.items():
            ms = 1e3 * float(np.median(g["times"]))
            rows[k] = {"ms": ms, "min_ms": 1e3 * min(g["times"]), "tokens_per_s": g["tokens"] / ms * 1e3,
                       "peak_mb": g["peak_mb"], "steps": len(g["times"])}
        for k, row in rows.items():
            for other, key in (("torch", "vs_torch"), ("floor", "vs_floor")):
                if other in rows and k not in (other, "torch") and (other == "torch" or k != "floor"):
                    row[key] = row["ms"] / rows[other]["ms"]
                    # the same ratio within each round (contenders of a round run one after the other)
                    row[key + "_rounds"] = [a / b for a, b in zip(got[k]["round_ms"], got[other]["round_ms"],
                                                                  strict=True)]
        results[w] = rows
        log(format_rows(w, rows), flush=True)
    return results


def format_rows(workload: str, rows: dict) -> str:
    lines = []
    for k, r in rows.items():
        ratios = "  ".join(f"{r[key]:.2f}x {label}" for key, label in (("vs_torch", "torch"), ("vs_floor", "floor"))
                           if key in r)
        lines.append(f"{workload:<12} {k:<6} {r['ms']:9.2f} {r['min_ms']:9.2f} {r['tokens_per_s']:12,.0f} "
                     f"{r['peak_mb']:8.0f}  {ratios}")
    return "\n".join(lines)


HEADER = f"{'workload':<12} {'who':<6} {'ms/step':>9} {'best ms':>9} {'tokens/s':>12} {'peak MB':>8}  ratios"

# (workload, row, figure, label, goal, acceptable): each goal of the performance work, read off one run's results
GOALS = (
    ("transformer", "fast", "vs_torch", "Transformer step, minilm fast / PyTorch eager", 0.80, None),
    ("transformer", "fast", "vs_floor", "Transformer step, minilm fast / its matmul floor", 1.30, None),
    ("lstm", "fast", "vs_torch", "LSTM 128 -> 128 fwd+bwd, minilm fast / nn.LSTM", 1.25, 1.50),
    ("transformer", "fast", "peak_mb", "peak memory of the fast Transformer (both processes), MB", 250, None),
)


def goal_rows(results: dict) -> list[dict]:
    """One row per goal whose figure this run measured: the figure, the goal and whether it is met."""
    rows = []
    for w, who, key, label, goal, acceptable in GOALS:
        figure = results.get(w, {}).get(who, {}).get(key)
        if figure is None:
            continue
        met = "met" if figure <= goal else ("acceptable" if acceptable and figure <= acceptable else "not met")
        per_round = results[w][who].get(key + "_rounds")
        rows.append({"goal": label, "figure": figure, "target": goal, "acceptable": acceptable, "status": met,
                     "rounds": [min(per_round), max(per_round)] if per_round else None})
    return rows


def blas_row(results: dict) -> dict | None:
    """The Transformer's products alone in NumPy (floor) against PyTorch (tfloor), and where the first goal
    would put the fast step against its own floor; None unless this run timed floor, tfloor and torch."""
    rows = results.get("transformer", {})
    if not all(k in rows for k in ("floor", "tfloor", "torch")):
        return None
    return {"floor_vs_tfloor": rows["floor"]["ms"] / rows["tfloor"]["ms"],
            "goal_vs_floor": GOALS[0][4] * rows["torch"]["ms"] / rows["floor"]["ms"]}


def format_goals(rows: list[dict]) -> str:
    """The goals' table; "rounds" is the smallest and largest of the same ratio taken within each round,
    which shows how much the machine's other work moved it during the run."""
    lines = [f"{'goal':<52} {'figure':>8} {'rounds':>11} {'target':>8}  status"]
    for r in rows:
        unit = "" if r["target"] > 10 else "x"
        target = f"<={r['target']:g}{unit}" + (f" (<={r['acceptable']:g}{unit} acceptable)" if r["acceptable"] else "")
        fig = f"{r['figure']:.0f}" if unit == "" else f"{r['figure']:.2f}x"
        spread = f"{r['rounds'][0]:.2f}-{r['rounds'][1]:.2f}x" if r.get("rounds") else ""
        lines.append(f"{r['goal']:<52} {fig:>8} {spread:>11} {target:>8}  {r['status']}")
    return "\n".join(lines)


def cmd_bench(args) -> int:
    workloads = args.only or list(WORKLOADS)
    for w in workloads:
        if w not in WORKLOADS:
            raise SystemExit(f"unknown workload {w!r}; choose from {', '.join(WORKLOADS)}")
    use_torch = not args.no_torch and torch_available()
    log = (lambda *a, **k: print(*a, file=sys.stderr, **k)) if args.json else print
    from minilm.fast import fused

    elementwise = ("elementwise: compiled loops (minilm/fast/loops.c)" if fused.ON else
                   "elementwise: NumPy chains (no C compiler found, or MINILM_FUSED=0)")
    if args.profile:
        from minilm.fast import profile

        log(f"per-op profile (one thread, CPU time; minilm/fast/profile.py); {os.cpu_count()} CPUs, "
            f"load average {os.getloadavg()[0]:.1f}; {elementwise}")
        profile.run(transformer_step, lstm_step, log)
        return 0
    log(f"{len(workloads)} workload(s), {args.rounds} round(s) of {args.steps} steps after {args.warmup} warm-up; "
        f"torch: {'yes' if use_torch else 'not installed, skipped'}; {elementwise}")
    load = os.getloadavg()[0]
    log(f"{os.cpu_count()} CPUs, load average {load:.1f} before the run (other processes slow every contender)")
    log(HEADER)
    results = run(workloads, args.steps, args.warmup, args.rounds, use_torch, args.plain, log)
    goals = goal_rows(results)
    after = os.getloadavg()[0]
    log(f"\ngoals, all figures from this run (load average {load:.1f} before, {after:.1f} after):")
    log(format_goals(goals))
    blas = blas_row(results)
    if blas:
        log(f"\nthe products alone: NumPy's BLAS (floor) takes {blas['floor_vs_tfloor']:.2f}x PyTorch's (tfloor) on "
            f"them; a fast step at {GOALS[0][4]:g}x PyTorch would be {blas['goal_vs_floor']:.2f}x its own floor")
    if args.json:
        print(json.dumps({"steps": args.steps, "warmup": args.warmup, "rounds": args.rounds, "cpus": os.cpu_count(),
                          "load_average": load, "load_average_after": after, "numpy": np.__version__,
                          "results": results, "goals": goals, "blas": blas}, indent=2))
    return 0


def add_subcommand(sub) -> None:
    """Register ``bench`` on the command line's subparsers."""
    b = sub.add_parser("bench", help="time a training step of each model (against PyTorch if installed)")
    b.add_argument("--only", nargs="*", metavar="WORKLOAD", help=f"some of: {', '.join(WORKLOADS)}")
    b.add_argument("--steps", type=int, default=30, help="timed steps per process (default 30)")
    b.add_argument("--warmup", type=int, default=10, help="untimed steps first (default 10)")
    b.add_argument("--rounds", type=int, default=2, help="processes per contender, taking turns (default 2)")
    b.add_argument("--no-torch", action="store_true", help="skip the PyTorch references")
    b.add_argument("--plain", action="store_true", help=f"also time the plain models ({PLAIN_STEPS} steps each)")
    b.add_argument("--json", action="store_true", help="print the results as JSON (the table goes to stderr)")
    b.add_argument("--profile", action="store_true",
                   help="instead: where the fast Transformer step and LSTM call spend their time, op by op")
    b.set_defaults(fn=cmd_bench)


def _worker_main(argv) -> int:
    import argparse

    p = argparse.ArgumentParser()
    p.add_argument("--worker", nargs=2, metavar=("WORKLOAD", "KIND"), required=True)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=10)
    a = p.parse_args(argv)
    print(json.dumps(worker(*a.worker, a.steps, a.warmup)))
    return 0


if __name__ == "__main__":
    sys.exit(_worker_main(sys.argv[1:]))

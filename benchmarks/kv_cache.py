"""KV-cache decoding against recomputing the window: tokens per second, one run, one machine.

    python benchmarks/kv_cache.py [--tokens 500] [--block-size 256] [--width 128] [--layers 4] [--repeats 2]

A causal Transformer with random weights (pre-LN, GELU, learned positions,
vocabulary 65, float32) generates ``--tokens`` tokens from a one-token
prompt, sampling at temperature 1 with one seed, twice:

* cache     minilm.generate.cached_next over minilm.transformer.forward_cached
            (what ``minilm sample`` does by default);
* no cache  minilm.generate.window_next over minilm.transformer.forward
            (``minilm sample --no-cache``), reading the same windows.

Past block_size both crop the window to its last block_size // 2 tokens and
read them again (minilm.generate).  It checks that the two generated the same
tokens, then prints the best of ``--repeats`` times of each, tokens/s, the
ratio, and the load average before and after (other processes slow both
contenders alike; the ratio is measured in one run).  One BLAS thread.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import time  # noqa: E402

import numpy as np  # noqa: E402

from minilm import generate  # noqa: E402
from minilm import transformer as M  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=500)
    ap.add_argument("--block-size", type=int, default=256)
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=2)
    a = ap.parse_args(argv)
    cfg = M.TransformerConfig(vocab_size=65, block_size=a.block_size, n_layer=a.layers, n_head=a.heads,
                              n_embd=a.width, ffn="gelu", norm="pre", pos="learned", scale_embed=False,
                              tie_weights=True)
    params = M.init_params(cfg, np.random.default_rng(0))
    keep = cfg.block_size // 2
    ways = {
        "cache": lambda: generate.cached_next(lambda x, past: M.forward_cached(params, cfg, x, past),
                                              cfg.block_size, keep),
        "no cache": lambda: generate.window_next(lambda x: M.forward(params, cfg, x)[0], cfg.block_size, keep),
    }
    load_before = os.getloadavg()
    best, out = {}, {}
    for _ in range(a.repeats):
        for name, make in ways.items():
            t0 = time.perf_counter()
            out[name] = generate.generate(make(), np.array([0]), a.tokens, np.random.default_rng(1))
            best[name] = min(best.get(name, np.inf), time.perf_counter() - t0)
    load_after = os.getloadavg()
    same = np.array_equal(out["cache"], out["no cache"])
    print(f"{a.tokens} tokens, block_size {cfg.block_size} (crop to the last {keep}), width {cfg.n_embd}, "
          f"{cfg.n_layer} layers, {cfg.n_head} heads, float32, one BLAS thread; best of {a.repeats}")
    for name in ways:
        print(f"  {name:<9} {best[name]:7.2f} s   {a.tokens / best[name]:8.1f} tokens/s")
    print(f"  speed-up with the cache: {best['no cache'] / best['cache']:.1f}x;  same tokens: {same}")
    print(f"  load average before {load_before[0]:.2f}, after {load_after[0]:.2f} ({os.cpu_count()} CPUs)")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())

"""GPT-2 124M-sized generation with the KV cache: minilm's NumPy forward against transformers on the CPU.

    python benchmarks/gpt2_generate.py [--tokens 100] [--prompt 16] [--threads 1] [--repeats 2]

One GPT2LMHeadModel of GPT-2's smallest size (12 layers, 12 heads, width
768, 1,024 positions, vocabulary 50,257: 124M parameters) with transformers'
random initialisation, float32.  minilm reads the same tensors
(minilm.hub.gpt2.from_gpt2, no file in between).  Both decode greedily
``--tokens`` new tokens after the same random ``--prompt`` tokens, each with
its KV cache:

* minilm        minilm.generate.cached_next over minilm.transformer.forward_cached
* transformers  GPT2LMHeadModel.generate(do_sample=False), its own cache

Printed: ms per generated token (the whole call, prompt included, divided
by the new tokens; the best of ``--repeats``), the ratio minilm /
transformers (goal <= 1.5), whether both wrote the same tokens, and the load
average before and after (other processes slow both alike; the ratio is
from one run).  BLAS and torch use ``--threads`` threads.  Needs torch and
transformers (the reference extras of pyproject.toml).
"""

from __future__ import annotations

import argparse
import os
import sys

THREADS = sys.argv[sys.argv.index("--threads") + 1] if "--threads" in sys.argv else "1"
os.environ.setdefault("OPENBLAS_NUM_THREADS", THREADS)  # before NumPy loads
os.environ.setdefault("OMP_NUM_THREADS", THREADS)

import time  # noqa: E402

import numpy as np  # noqa: E402

from minilm import generate  # noqa: E402
from minilm import transformer as M  # noqa: E402
from minilm.hub import gpt2  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=100)
    ap.add_argument("--prompt", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=2)
    a = ap.parse_args(argv)
    try:
        import torch
        import transformers
    except ImportError:
        print("needs torch and transformers: pip install torch==2.13.0 transformers", file=sys.stderr)
        return 2
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(bos_token_id=None, eos_token_id=None)).eval()
    tensors = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    cfg = gpt2.config_from_gpt2(model.config.to_dict(), "GPT2Config()")
    params = gpt2.from_gpt2(tensors, cfg, np.float32, "GPT2LMHeadModel.state_dict()")
    del tensors
    n_params = sum(p.size for p in params.values())
    prompt = np.random.default_rng(0).integers(0, cfg.vocab_size, a.prompt)  # (prompt,)

    def run_minilm():
        step = generate.cached_next(lambda x, past: M.forward_cached(params, cfg, x, past), cfg.block_size)
        return generate.generate(step, prompt, a.tokens, np.random.default_rng(0), temperature=0)

    def run_transformers():
        with torch.no_grad():
            out = model.generate(torch.tensor(prompt[None]), max_new_tokens=a.tokens, min_new_tokens=a.tokens,
                                 do_sample=False, pad_token_id=0, attention_mask=torch.ones(1, a.prompt, dtype=int))
        return out[0].numpy()

    load_before = os.getloadavg()
    best, out = {}, {}
    for _ in range(a.repeats):
        for name, fn in (("minilm", run_minilm), ("transformers", run_transformers)):
            t0 = time.perf_counter()
            out[name] = fn()
            best[name] = min(best.get(name, np.inf), time.perf_counter() - t0)
    load_after = os.getloadavg()
    print(f"GPT-2 124M-sized ({n_params / 1e6:.1f}M parameters, random weights, float32): {a.prompt} prompt tokens, "
          f"{a.tokens} new tokens, greedy, KV cache; {a.threads} thread(s); best of {a.repeats}")
    ms = {k: 1000 * v / a.tokens for k, v in best.items()}
    print(f"  minilm (NumPy {np.__version__})        {ms['minilm']:7.1f} ms/token")
    print(f"  transformers {transformers.__version__} (torch {torch.__version__})  {ms['transformers']:7.1f} ms/token")
    print(f"  minilm / transformers: {ms['minilm'] / ms['transformers']:.2f}x;  same tokens: "
          f"{np.array_equal(out['minilm'], out['transformers'])}")
    print(f"  load average before {load_before[0]:.2f}, after {load_after[0]:.2f} ({os.cpu_count()} CPUs)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

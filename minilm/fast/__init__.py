"""The fast path: the same models as the plain modules, laid out for speed on a CPU.

The plain modules (minilm.transformer, minilm.lstm, minilm.ngram) are written
to be read: one function per formula, fresh arrays for every result.  The
gradient checks run on them.  The modules here compute the same numbers --
tests/test_fast.py compares losses, gradients and whole AdamW steps with the
plain models in float64 -- and each one names the plain function it mirrors.

    threads.py   elementwise chains in cache-sized blocks, on two threads
    blas.py      BLAS on one thread while the fast path splits products itself
    kernels.py   LayerNorm, GELU, causal attention, cross-entropy into buffers
    flat.py      parameters, gradients, AdamW moments: one flat buffer each
    gpt.py       the pre-LN causal Transformer LM (``minilm train --fast``)
    lstm.py      lstm_forward / lstm_backward, drop-in for minilm.lstm's
    ngram.py     the MLP n-gram LM
    training.py  hands minilm.training.loop's step to the fast path (``--fast``)

Why each trick pays is measured by ``python -m minilm bench`` (README,
"Performance").
"""

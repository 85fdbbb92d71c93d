"""The fast path: the same models as the plain modules, laid out for speed on a CPU.

The plain modules (minilm.transformer, minilm.lstm, minilm.ngram) are written
to be read: one function per formula, fresh arrays for every result.  The
gradient checks run on them.  The modules here compute the same numbers --
tests/test_fast.py compares losses, gradients and whole AdamW steps with the
plain models in float64 -- and each one names the plain function it mirrors.

    threads.py   the second thread: elementwise chains in blocks, products beside a loop
    blas.py      BLAS on one thread for a whole step; OpenBLAS's transpose and axpby
    kernels.py   LayerNorm, GELU, causal attention, cross-entropy into buffers
    flat.py      parameters, gradients, AdamW moments: one flat buffer each; the AdamW step
    gpt.py       the Transformer LM, pre- or post-LN, causal or masked (``minilm train --fast``)
    lstm.py      lstm_forward / lstm_backward, drop-in for minilm.lstm's, and stacks of layers
    lstm_lm.py   the LSTM LM of §5.2
    ngram.py     the MLP n-gram LM
    training.py  hands minilm.training.loop's step to the fast path (``--fast``)
    procs.py     a second process for the second core (two threads wait at the interpreter lock):
                 half of a batch, the odd layers of a stack, half of the optimiser step
    peer.py      what that process runs: ``python -m minilm.fast.peer``
    bench.py, profile.py   ``python -m minilm bench`` (and ``--profile``)

Why each trick pays is measured by ``python -m minilm bench`` (README,
"Performance").
"""

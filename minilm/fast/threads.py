"""The fast path's second thread: elementwise chains in cache-sized blocks, and work beside the main loop.

NumPy runs every elementwise operation (exp, multiply, add, ...) on one core,
while a matrix multiply uses all of them.  A chain such as GELU,
``s = 1 / (1 + exp(z))``, ``y = x * s``, makes one pass over memory per
operation; done on a whole (B T, F) array each pass streams megabytes through
the cache.  Two things make such chains cheaper, and ``run_rows`` does both:

* blocks: the rows are cut into blocks of about ``BLOCK`` elements (256 kB of
  float32, which stays in the L2 cache), and the whole chain runs on one block
  before the next, so every pass after the first reads the cache;
* threads: NumPy releases the interpreter lock inside each operation, so a
  second thread can run the chain on the other half of the rows at the same
  time.  The gain is far from half: every call gives the lock up and takes it
  back, and with blocks of a few hundred microseconds the two threads spend
  much of the time handing it over.  It pays for a long chain on a large
  array (AdamW) and little for a short one.

What does pay on the second core is work that holds the lock rarely: a
large matrix product is one call that runs for a millisecond or more.
``Background`` and ``Wavefront`` give the worker such calls while this thread
runs the many small calls of an LSTM's loop over time steps (minilm.fast.lstm)
or of the Transformer's backward chain (minilm.fast.gpt: the weight
gradients).  A half that ``run_rows`` or ``run_halves`` handed the worker, and
that the worker has not started because it is busy with such a call, is run
on this thread instead of waited for.  Two such loops, or two halves of a
whole step, gain little on two threads; minilm.fast.procs runs them in two
processes.

``chain(lo, hi, scratch)`` must touch only rows lo:hi of its arrays, so the
two halves never share memory; ``scratch`` is a per-thread dict for
temporaries.  MINILM_THREADS=1 runs everything on the calling thread.

When NumPy's BLAS is OpenBLAS, its worker threads spin for a while after each
matrix multiply and compete with the second thread for the cores.  The fast
path runs BLAS on one thread for the whole of a step (minilm.fast.blas
.on_one_thread), so they stay asleep.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import numpy as np

BLOCK = 65536  # elements per block: 256 kB of float32

_pool: ThreadPoolExecutor | None = None
_scratch = ({}, {})  # one dict of temporaries for each of the two threads


_CPUS = os.cpu_count() or 1
_alone = False  # set by alone(): this process's part of a step split between two processes


@contextmanager
def alone():
    """Inside: n_threads() is 1 (the other core runs the other process's half of the work)."""
    global _alone
    before, _alone = _alone, True
    try:
        yield
    finally:
        _alone = before


def n_threads() -> int:
    """2 when a second core is there (MINILM_THREADS=1 forces 1; so does alone())."""
    if _alone:
        return 1
    want = int(os.environ.get("MINILM_THREADS", "2"))
    return max(1, min(2, want, _CPUS))


def _worker() -> ThreadPoolExecutor:
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="minilm")
    return _pool


def _blocks(chain, lo: int, hi: int, step: int, scratch: dict) -> None:
    for a in range(lo, hi, step):
        chain(a, min(a + step, hi), scratch)


def run_rows(chain, n_rows: int, row_size: int, min_rows: int = 1) -> None:
    """Call ``chain(lo, hi, scratch)`` over rows 0..n_rows in blocks of about BLOCK elements,
    half of the blocks on a worker thread and half on this one.

    ``row_size`` is the number of elements in one row (it sets the block height);
    arrays smaller than two blocks run on this thread alone.
    """
    step = max(min_rows, BLOCK // max(1, row_size))
    if n_threads() == 1 or n_rows * row_size < 2 * BLOCK or n_rows < 2 * step:
        _blocks(chain, 0, n_rows, step, _scratch[0])
        return
    half = (n_rows // step + 1) // 2 * step  # split on a block boundary
    job = _worker().submit(_blocks, chain, 0, half, step, _scratch[1])
    _blocks(chain, half, n_rows, step, _scratch[0])
    _finish(job, _blocks, chain, 0, half, step, _scratch[1])


def run_halves(fn, n: int) -> None:
    """Call ``fn(lo, hi)`` for the two halves of 0..n, one on a worker thread (used over the batch
    axis for attention, whose many small matrix multiplies each run on one core)."""
    if n_threads() == 1 or n < 2:
        fn(0, n)
        return
    half = n // 2
    job = _worker().submit(fn, 0, half)
    fn(half, n)
    _finish(job, fn, 0, half)


def _finish(job, fn, *args) -> None:
    """Wait for the worker's half, or run it here if the worker has not started it (it is busy with
    Background work: waiting would leave this core idle)."""
    if job.cancel():
        fn(*args)
    else:
        job.result()


class Background:
    """Jobs for the worker thread while this thread works on (minilm.fast.lstm hands it the large
    products of the steps the recurrence has finished, or has not reached yet; minilm.fast.gpt the
    weight gradients of its backward).

    ``submit(fn, *args)`` queues ``fn(*args)`` on the worker and returns a handle; ``wait(handle)``
    returns when that job is done, running it on this thread if the worker has not started it.
    Leaving the ``with`` block runs here, newest first, every job the worker has not started (so the
    two threads share what is left from both ends), then waits for the rest.  With one thread
    (MINILM_THREADS=1 or one core) every job runs at once, inside ``submit``.
    """

    def __init__(self, inline: bool = False):
        self._jobs = []  # [future, fn, args, ran here]
        self._inline = inline  # every job at once, here (the process has a half of the work of its own)

    def __enter__(self):
        return self

    def submit(self, fn, *args):
        if self._inline or n_threads() == 1:
            fn(*args)
            return None
        job = [_worker().submit(fn, *args), fn, args, False]
        self._jobs.append(job)
        return job

    def wait(self, job) -> None:
        if job is None or job[3]:
            return
        if job[0].cancel():  # not started: run it here
            job[3] = True
            job[1](*job[2])
        else:
            job[0].result()

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:  # an error here: drop what has not started, let the rest finish
            for job in self._jobs:
                job[0].cancel()
            for job in self._jobs:
                if not job[0].cancelled():
                    job[0].exception()
            return False
        for job in reversed(self._jobs):  # newest first, while the worker goes on from the oldest
            if not job[3] and job[0].cancel():
                job[3] = True
                job[1](*job[2])
        for job in self._jobs:
            if not job[3]:
                job[0].result()  # raises what the job raised
        return False


class Wavefront:
    """Stages that run one chunk behind each other on two threads (minilm.fast.lstm: a stack of LSTM
    layers, layer l + 1 working on steps t0..t1 once layer l has finished them).

    ``run(fn, stages)`` calls ``fn(stages[0::2], self)`` on this thread and ``fn(stages[1::2], self)`` on
    the worker at the same time (with one thread, ``fn(stages, self)`` here); ``stages`` lists them in the order
    of their dependencies and ``fn`` runs its stages in that order.  Inside, a stage calls
    ``mark(stage, chunk)`` when a chunk's output is ready and ``wait(stage, chunk)`` before it reads
    another stage's.  An exception on either thread wakes the other and is raised here.

    ``defer(fn, *args)`` hands over work that nothing in the wavefront waits for (the LSTM's weight
    gradients): a thread that would wait in ``wait`` runs deferred work first, and each thread, its
    stages done, runs what is left, so the stage with less to do takes over the other's.  ``run``
    returns once all of it has run.
    """

    class Aborted(Exception):
        """The other thread failed: stop waiting."""

    def __init__(self, n_stages: int, n_chunks: int):
        self._ready = [[threading.Event() for _ in range(n_chunks)] for _ in range(n_stages)]
        self._failed = False
        self._deferred = deque()  # (fn, args), oldest first; deque's append and popleft are thread-safe

    def mark(self, stage: int, chunk: int) -> None:
        self._ready[stage][chunk].set()

    def defer(self, fn, *args) -> None:
        self._deferred.append((fn, args))

    def _run_deferred(self, until=None) -> None:
        """Run deferred work, oldest first, until there is none left (or ``until`` is set)."""
        while until is None or not until.is_set():
            try:
                fn, args = self._deferred.popleft()
            except IndexError:
                return
            fn(*args)

    def wait(self, stage: int, chunk: int) -> None:
        event = self._ready[stage][chunk]
        self._run_deferred(until=event)
        event.wait()
        if self._failed:
            raise Wavefront.Aborted

    def _fail(self) -> None:
        self._failed = True
        for row in self._ready:
            for event in row:
                event.set()

    def _guarded(self, fn, arg) -> None:
        try:
            fn(arg, self)
            self._run_deferred()
        except Wavefront.Aborted:
            pass
        except BaseException:
            self._fail()
            raise

    def run(self, fn, stages) -> None:
        if n_threads() == 1 or len(stages) < 2:
            fn(list(stages), self)
            self._run_deferred()
            return
        job = _worker().submit(self._guarded, fn, stages[1::2])
        try:
            self._guarded(fn, stages[0::2])
        finally:
            job.result()  # raises the worker's exception, if it had one (this thread's is on its way up)


def scratch(store: dict, name: str, shape, dtype):
    """A temporary array from a thread's scratch dict, reused while its shape and dtype stay the same."""
    a = store.get(name)
    if a is None or a.shape != tuple(shape) or a.dtype != dtype:
        a = store[name] = np.empty(shape, dtype)
    return a

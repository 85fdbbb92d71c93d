"""A second process for the fast paths' work on the second core.

Two loops over time steps of an LSTM, or two halves of a Transformer step,
can run at the same time, but not on two threads of one process: every
NumPy call takes the interpreter lock and gives it back, and two threads
making many short calls spend their time waiting for each other (the
README's Performance section measures the difference).  So that work runs
in a second Python process, ``python -m minilm.fast.peer``, started once and
kept, for

* the odd layers of a stacked LSTM (minilm.fast.lstm.stack_forward_tm /
  stack_backward_tm), a chunk of steps behind the layer below;
* the second half of the batch of one LSTM layer (lstm_forward with a peer)
  or of a Transformer step without dropout (minilm.fast.gpt), which then sums
  the two halves' gradients over its share of the entries;
* the second half of the rows of a model's optimiser step, the gradient norm
  and AdamW (minilm.fast.flat.FlatParams.share).

How:

* every array of a layer (minilm.fast.lstm.Workspace) lives in one buffer
  that both processes map (a file in /dev/shm, or the temporary directory,
  deleted as soon as both have mapped it: nothing is left behind, even
  after a crash); the peer builds its own Workspace over the same memory;
* a command (minilm.fast.peer lists them) goes over the peer's stdin, its
  reply over its stdout;
* inside a command the two processes tell each other which chunk of which
  layer is done through a pair of pipes: four bytes per chunk, and a wait
  is a blocking read, so neither spins.

An error on either side stops both: the peer sends its exception back and
it is raised here; an error here sends the peer an abort and is raised
once the peer has stopped; a peer that exits is reported.  After any error
the peer is restarted for the next call (``generation`` counts them, and a
Workspace shared with an earlier peer is shared again).  Without a peer
(MINILM_PROCESSES=0, or one that cannot start) the work runs on two threads.
"""

from __future__ import annotations

import atexit
import mmap
import os
import pickle
import select
import struct
import subprocess
import sys
import tempfile
from collections import deque

MARK = struct.Struct("<HH")  # (layer, chunk)
ABORT = (65535, 65535)
_peer = None
_failed = False  # a peer could not be started: do not try again in this process


class Aborted(Exception):
    """The other process stopped this command."""


class PeerError(RuntimeError):
    """The second process failed or exited."""


class _Replied(Exception):
    """The peer replied (with an error, or it exited) while this side waited for a mark."""


def _send(fd: int, obj) -> None:
    data = pickle.dumps(obj)
    _write_all(fd, struct.pack("<Q", len(data)) + data)


def _write_all(fd: int, data: bytes) -> None:
    try:
        while data:
            data = data[os.write(fd, data):]
    except BrokenPipeError:
        raise PeerError("the LSTM's second process has exited") from None


def _read_exactly(fd: int, n: int) -> bytes | None:
    """n bytes from fd, or None at end of file."""
    out = b""
    while len(out) < n:
        chunk = os.read(fd, n - len(out))
        if not chunk:
            return None
        out += chunk
    return out


def _receive(fd: int):
    head = _read_exactly(fd, 8)
    if head is None:
        return None
    return pickle.loads(_read_exactly(fd, struct.unpack("<Q", head)[0]))


class Front:
    """The mark / wait / defer of minilm.fast.threads.Wavefront between two processes.

    mark(l, k) tells the other process that layer l's chunk k is done, when a layer there reads it
    (forward: layer l + 1; backward: layer l - 1); wait(l, k) blocks until the other process has
    marked it, running deferred work of this process while nothing has come; ``watch`` (the peer's
    reply pipe, on the caller's side) ends a wait with the peer's error.
    """

    def __init__(self, read_fd: int, write_fd: int, n_layers: int, direction: int, watch: int | None = None):
        self.read_fd, self.write_fd, self.n, self.direction, self.watch = read_fd, write_fd, n_layers, direction, watch
        self._deferred = deque()

    def mark(self, layer: int, chunk: int) -> None:
        if 0 <= layer + self.direction < self.n:
            _write_all(self.write_fd, MARK.pack(layer, chunk))

    def abort(self) -> None:
        _write_all(self.write_fd, MARK.pack(*ABORT))

    def signal(self) -> None:
        """Mark (0, 0) for the other process, whatever the layers: one point of a command both sides reach
        (a Transformer step's halves: each has its gradients), that the other side waits for with wait(0, 0)."""
        _write_all(self.write_fd, MARK.pack(0, 0))

    def defer(self, fn, *args) -> None:
        self._deferred.append((fn, args))

    def run_deferred(self) -> None:
        while self._deferred:
            fn, args = self._deferred.popleft()
            fn(*args)

    def wait(self, layer: int, chunk: int) -> None:
        fds = [self.read_fd] + ([self.watch] if self.watch is not None else [])
        while True:
            ready = select.select(fds, [], [], 0 if self._deferred else 5.0)[0]
            if self.read_fd in ready:  # first: a peer that has finished wrote its marks before its reply
                break
            if self.watch in ready:
                raise _Replied
            if self._deferred:
                fn, args = self._deferred.popleft()
                fn(*args)
        data = _read_exactly(self.read_fd, MARK.size)
        if data is None:
            raise PeerError("the other LSTM process closed its pipe")
        got = MARK.unpack(data)
        if got == ABORT:
            raise Aborted
        if got != (layer, chunk):
            raise PeerError(f"the LSTM processes are out of step: waiting for layer {layer} chunk {chunk}, got {got}")


class Peer:
    """The second process, seen from here: share() buffers, mirror() Workspaces, run() commands."""

    generation = 0

    def __init__(self):
        Peer.generation += 1
        self.generation = Peer.generation
        to_peer_r, self.marks_out = os.pipe()
        self.marks_in, from_peer_w = os.pipe()
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "MINILM_THREADS": "1",
               "PYTHONPATH": os.pathsep.join([root] + [p for p in [os.environ.get("PYTHONPATH")] if p])}
        self.proc = subprocess.Popen([sys.executable, "-m", "minilm.fast.peer", str(to_peer_r), str(from_peer_w)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0,
                                     pass_fds=(to_peer_r, from_peer_w), env=env,
                                     start_new_session=True)  # Ctrl-C goes to the caller, which stops cleanly
        os.close(to_peer_r), os.close(from_peer_w)
        self.cmd_fd, self.reply_fd = self.proc.stdin.fileno(), self.proc.stdout.fileno()
        self.buffers = 0
        self._released = []  # keys whose owner here has gone (release), forgotten there before the next command
        self.call("ping")

    def call(self, *msg):
        self._forget_released()
        _send(self.cmd_fd, msg)
        return self._reply()

    def release(self, key) -> None:
        """What the peer keeps under ``key`` is no longer needed (its owner here was collected).  Safe to call
        at any moment, from a finalizer too: the peer is told before the next command, not now."""
        self._released.append(key)

    def _forget_released(self) -> None:
        while self._released and self.proc.poll() is None:
            keys = self._released[:]
            del self._released[: len(keys)]
            _send(self.cmd_fd, ("forget", *keys))
            self._reply()

    def _reply(self):
        reply = _receive(self.reply_fd)
        if reply is None:
            raise PeerError(f"the LSTM's second process exited (status {self.proc.wait()})")
        if reply[0] == "error":
            raise reply[1]
        return reply[1] if reply[0] == "ok" else None

    def share(self, nbytes: int):
        """(key, buffer): ``nbytes`` of memory mapped here and in the peer."""
        folder = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
        fd, path = tempfile.mkstemp(prefix="minilm-lstm-", dir=folder)
        try:
            os.ftruncate(fd, max(nbytes, 1))
            buffer = mmap.mmap(fd, max(nbytes, 1))
            self.buffers += 1
            self.call("map", self.buffers, path, max(nbytes, 1))
        finally:
            os.close(fd)
            os.unlink(path)  # both have it mapped: the memory stays until both let it go
        return self.buffers, buffer

    def alive(self) -> bool:
        """Still running, and still the current peer (no restart since)."""
        return _peer is self and self.proc.poll() is None

    def forget(self, key) -> None:
        """The peer lets go of what it keeps under ``key`` (a Workspace or a model replaced here)."""
        if self.alive():
            self.call("forget", key)

    def mirror(self, key: int, shape, layout) -> None:
        self.call("workspace", key, shape, layout)

    def run(self, op: str, keys, peer_layers, here, *args):
        """Command ``op`` on the layers ``peer_layers`` there while ``here(front)`` runs the others here;
        returns the peer's result."""
        self._forget_released()
        _send(self.cmd_fd, (op, keys, peer_layers, *args))
        front = Front(self.marks_in, self.marks_out, len(keys), 1 if op == "forward" else -1, watch=self.reply_fd)
        try:
            here(front)
        except _Replied:  # the peer stopped first: its error is the one to raise
            try:
                self._reply()
                error = PeerError("the LSTM's second process finished a command early")
            except BaseException as peer_error:
                error = peer_error
            _reset(self, error, stopped=True)
            raise error from None
        except BaseException as error:
            _reset(self, error)
            raise
        try:
            return self._reply()
        except BaseException as error:
            _reset(self, error, stopped=True)
            raise

    def close(self) -> None:
        for fd in (self.marks_in, self.marks_out):
            try:
                os.close(fd)
            except OSError:
                pass
        try:
            self.proc.stdin.close()
            self.proc.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
        self.proc.stdout.close()


def _reset(peer: Peer, error: BaseException, stopped: bool = False) -> None:
    """After an error: stop the peer's command if it still runs (``stopped``: it has replied), then
    replace the peer, whose pipes may hold marks of the broken command."""
    global _peer
    if not stopped and peer.proc.poll() is None:
        try:
            Front(peer.marks_in, peer.marks_out, 0, 1).abort()
            ready = select.select([peer.reply_fd], [], [], 10.0)[0]
            if ready:
                _receive(peer.reply_fd)
        except (OSError, PeerError, EOFError, pickle.UnpicklingError):
            pass
    peer.proc.kill()
    peer.close()
    if _peer is peer:
        _peer = None


def peer() -> Peer | None:
    """The second process, started on first use; None with MINILM_PROCESSES=0 or when it cannot start."""
    global _peer, _failed
    if os.environ.get("MINILM_PROCESSES", "1") == "0" or _failed:
        return None
    if _peer is None or _peer.proc.poll() is not None:
        try:
            _peer = Peer()
        except (OSError, PeerError) as error:
            print(f"minilm: no second process for the fast path ({error}); using threads", file=sys.stderr)
            _failed, _peer = True, None
    return _peer


def peak_kb() -> int | None:
    """The running second process's peak resident size in kB (what a benchmark adds to this process's),
    or None when there is none."""
    if _peer is None:
        return None
    try:
        return _peer.call("peak_kb")
    except (PeerError, OSError):
        return None


@atexit.register
def _close() -> None:
    if _peer is not None:
        _peer.close()

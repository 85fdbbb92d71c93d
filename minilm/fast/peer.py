"""The second process of minilm.fast.procs: ``python -m minilm.fast.peer`` answers its commands.

Commands (each a pickled tuple on stdin, each answered on stdout):

    ping, peak_kb, keys     its pid; its peak resident size; the keys of what it keeps
    forget                  drop Workspaces, models or flats (replaced or collected on the other side)
    map, workspace          map a shared buffer; build an LSTM Workspace over it (minilm.fast.lstm)
    forward, backward       the odd layers of a stacked LSTM, marks through the pipes (minilm.fast.procs.Front)
    half_forward, half_backward   one LSTM layer on the second half of a batch (minilm.fast.lstm._split_forward)
    tf_model, tf_half       a FastTransformer over shared parameters; its loss and gradients on the second half
                            of a batch, then the two halves' gradients summed over rows lo..hi, once the
                            other side has its own (minilm.fast.gpt: FastTransformer._split_forward_backward)
    flat, flat_sumsq, flat_adamw   a model's p, g, m, v over a shared buffer; the second half's share of the
                            gradient norm and of the AdamW step (minilm.fast.flat.FlatParams.share)
"""

from __future__ import annotations

import mmap
import os
import resource
import sys
import traceback

import numpy as np

from minilm.fast import kernels as K
from minilm.fast import procs
from minilm.fast.blas import one_thread
from minilm.fast.flat import adamw_rows, combine_halves


def serve(cmd_fd: int, reply_fd: int, marks_in: int, marks_out: int) -> None:
    """Answer commands until the other side closes the command pipe."""
    from minilm.fast import lstm as L

    buffers, workspaces, models, flats = {}, {}, {}, {}
    while (msg := procs._receive(cmd_fd)) is not None:
        op, *args = msg
        try:
            result = None
            if op == "ping":
                result = os.getpid()
            elif op == "keys":  # what it keeps (tests: what a collected model leaves behind)
                result = sorted(set(workspaces) | set(models) | set(flats))
            elif op == "peak_kb":  # this process's peak resident size (a benchmark adds it to the caller's)
                result = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            elif op == "map":
                key, path, nbytes = args
                with open(path, "r+b") as f:
                    buffers[key] = mmap.mmap(f.fileno(), nbytes)
            elif op == "workspace":
                key, (T, B, D, Hd, dtype), layout = args
                workspaces[key] = L.Workspace().attach(buffers.pop(key), T, B, D, Hd, np.dtype(dtype), layout)
            elif op == "half_forward":  # minilm.fast.lstm._split_forward: this process's half of the batch
                ws = workspaces[args[0][0]]
                with one_thread():
                    L.lstm_forward_tm(ws.X, ws.shape[0], ws.H[0], ws.C[0], ws.Wx, ws.Wh, ws.b, ws)
            elif op == "half_backward":
                ws, with_state = workspaces[args[0][0]], args[2]
                with one_thread():
                    L.lstm_backward_tm(ws.dY, (ws, ws.X, ws.Wx, ws.Wh), (ws.dh, ws.dc) if with_state else None)
            elif op in ("forward", "backward"):
                keys, layers, *extra = args
                wss = [workspaces[k] for k in keys]
                inputs = L._layer_inputs(None, wss)
                front = procs.Front(marks_in, marks_out, len(wss), 1 if op == "forward" else -1)
                with one_thread():
                    if op == "forward":
                        L.forward_layers(layers, wss, inputs, front)
                    else:
                        L.backward_layers(layers, wss, inputs, front, *extra)
                        front.run_deferred()
                        for l in layers:
                            L._gradients(wss[l])
            elif op == "forget":  # one key or several
                for key in args:
                    workspaces.pop(key, None), models.pop(key, None), flats.pop(key, None)
            elif op == "flat":  # minilm.fast.flat.FlatParams.share: p, g, m, v over one shared buffer
                key, n, n_decay, dtype = args
                buf, dt = buffers.pop(key), np.dtype(dtype)
                flats[key] = ([np.ndarray(n, dt, buffer=buf, offset=i * n * dt.itemsize) for i in range(4)], n_decay)
            elif op == "flat_sumsq":  # the second half's share of the gradient norm
                key, lo, hi = args[0]
                g = flats[key][0][1][lo:hi]
                with one_thread():
                    result = float(np.dot(g, g))
            elif op == "flat_adamw":  # the second half's rows of the AdamW step
                key, lo, hi, k = args[0]
                (p, g, m, v), n_decay = flats[key]
                adamw_rows(p, g, m, v, n_decay, lo, hi, k)
            elif op == "tf_model":
                from minilm.fast.gpt import FastTransformer

                key, cfg, dtype, flat_key, g_key, io_key = args  # the parameters: p of a shared flat
                models[key] = (FastTransformer(cfg, dtype=np.dtype(dtype), buffers=(flats[flat_key][0][0],
                                                                                    buffers.pop(g_key))),
                               buffers.pop(io_key), flat_key)
            elif op == "tf_half":  # loss and gradients of the second half; then rows lo..hi of g = w1 g + w2 g2
                key, B, T, lo, hi, w1, w2 = args[0]
                model, io, flat_key = models[key]
                ids = np.ndarray((2, B, T), np.int64, buffer=io)
                loss = np.ndarray((1,), np.float64, buffer=io, offset=ids.nbytes)
                with one_thread():
                    loss[0] = model._forward_backward(ids[0], ids[1], None, K.matmul)
                front = procs.Front(marks_in, marks_out, 0, 1)
                front.signal()  # this half's gradients are in model.flat.g
                front.wait(0, 0)  # and the other half's in the caller's g
                g = flats[flat_key][0][1]
                result = combine_halves(g[lo:hi], model.flat.g[lo:hi], w1, w2)  # its share of sum(g^2)
            else:
                raise ValueError(f"unknown command {op!r}")
            procs._send(reply_fd, ("ok", result))
        except procs.Aborted:
            procs._send(reply_fd, ("aborted", None))
        except BaseException as error:  # sent back and raised on the other side, with where it happened
            where = "".join(traceback.format_exception(error)[-3:]).strip()
            try:
                error.add_note(f"in the second process:\n{where}")
                procs._send(reply_fd, ("error", error))
            except Exception:
                procs._send(reply_fd, ("error", procs.PeerError(f"in the second process: {where}")))


if __name__ == "__main__":
    reply = os.dup(1)
    os.dup2(2, 1)  # a stray print must not corrupt the replies
    serve(0, reply, int(sys.argv[1]), int(sys.argv[2]))

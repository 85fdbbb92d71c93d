"""The stacked LSTM's second process (minilm.fast.procs): errors on either side, a peer that dies, a
Workspace kept across a restart.  Agreement with the plain model: tests/test_fast.py (``processes``)."""

from __future__ import annotations

import os
import signal
import types

import numpy as np
import pytest

from minilm import lstm_lm
from minilm.fast import lstm as fast_lstm
from minilm.fast import procs
from minilm.fast.lstm_lm import FastLSTMLM

TOL = 1e-10


@pytest.fixture
def two_processes(monkeypatch):
    monkeypatch.setenv("MINILM_THREADS", "2")
    monkeypatch.setenv("MINILM_PROCESSES", "1")
    if procs.peer() is None:
        pytest.skip("no second process on this machine")


def case(n_layer=2, T=21):
    r = np.random.default_rng(5)
    cfg = lstm_lm.LSTMConfig(vocab_size=9, n_embd=4, n_hidden=5, n_layer=n_layer)
    p = {k: v + 0.1 * r.standard_normal(v.shape) for k, v in lstm_lm.init_params(cfg, r, np.float64).items()}
    x, y = r.integers(0, 9, (2, 3, T))
    return cfg, p, x, y


def agrees(model, cfg, p, x, y) -> bool:
    loss, grads, _ = lstm_lm.loss_grads_and_state(p, cfg, x, y)
    fl, fg, _ = model.loss_grads_and_state(x, y)
    scale = max(float(np.abs(g).max()) for g in grads.values())
    return abs(fl - loss) <= TOL * loss and max(float(np.abs(grads[k] - fg[k]).max()) for k in grads) <= TOL * scale


def test_an_error_in_the_peer_is_raised_here(two_processes):
    with pytest.raises(ValueError, match="unknown command"):
        procs.peer().call("no such command")
    assert procs.peer().call("ping") > 0  # the peer answers the next command
    assert procs.peak_kb() > 1000  # its peak resident size, which the bench adds to this one's


@pytest.mark.parametrize("where", ["forward", "backward"])
def test_the_peer_out_of_step_is_raised_here_and_the_next_call_works(two_processes, monkeypatch, where):
    """This side marks the wrong chunk: the peer's layer stops with an error, which is raised here; the
    peer is replaced and the model's next call gives the plain model's numbers."""
    cfg, p, x, y = case(n_layer=2 if where == "forward" else 3)  # backward: layer 2 here marks for layer 1 there
    model = FastLSTMLM(cfg, p, np.float64)
    assert agrees(model, cfg, p, x, y)
    before = procs.peer().generation
    orig = procs.Front.mark
    direction = 1 if where == "forward" else -1

    def wrong(self, layer, chunk):
        orig(self, layer, chunk + 1 if self.direction == direction else chunk)

    with monkeypatch.context() as m:
        m.setattr(procs.Front, "mark", wrong)
        with pytest.raises(procs.PeerError, match="out of step"):
            model.loss_grads_and_state(x, y)
    assert agrees(model, cfg, p, x, y) and procs.peer().generation > before


@pytest.mark.parametrize("where", ["forward", "backward"])
def test_an_error_here_stops_the_peer(two_processes, monkeypatch, where):
    """An exception in this side's layer (layer 0) is raised once the peer, waiting for that layer's
    chunks, has been stopped; the next call works."""
    cfg, p, x, y = case()
    model = FastLSTMLM(cfg, p, np.float64)
    name = "_steps_forward" if where == "forward" else "_steps_backward"
    orig, calls = getattr(fast_lstm, name), []

    def failing(*a):
        calls.append(1)
        if len(calls) == 2:
            raise FloatingPointError("planted here")
        return orig(*a)

    with monkeypatch.context() as m:
        m.setattr(fast_lstm, name, failing)
        with pytest.raises(FloatingPointError, match="planted here"):
            model.loss_grads_and_state(x, y)
    assert agrees(model, cfg, p, x, y)


def test_a_peer_that_dies_is_reported_and_replaced(two_processes, monkeypatch):
    cfg, p, x, y = case()
    model = FastLSTMLM(cfg, p, np.float64)
    assert agrees(model, cfg, p, x, y)
    pid = procs.peer().proc.pid
    orig, calls = fast_lstm._steps_forward, []

    def killing(*a):
        calls.append(1)
        if len(calls) == 1:
            os.kill(pid, signal.SIGKILL)
        return orig(*a)

    with monkeypatch.context() as m:
        m.setattr(fast_lstm, "_steps_forward", killing)
        with pytest.raises(procs.PeerError):
            model.loss_grads_and_state(x, y)
    assert agrees(model, cfg, p, x, y) and procs.peer().proc.pid != pid


def test_a_backward_after_a_restart_asks_for_the_forward_again(two_processes):
    """A forward's Workspaces shared with a peer that has since been replaced: its backward refuses."""
    cfg, p, x, y = case()
    model = FastLSTMLM(cfg, p, np.float64)
    xt = np.take(model.params["embed"], x.T.reshape(-1), axis=0)
    weights = [(model.params[f"lstm.{l}.Wx"], model.params[f"lstm.{l}.Wh"], model.params[f"lstm.{l}.b"])
               for l in range(2)]
    zero = np.zeros((3, 5))
    layers = fast_lstm.stack_forward_tm(xt, x.shape[1], [(zero, zero)] * 2, weights, model._ws, procs.peer())
    procs._reset(procs.peer(), RuntimeError("restart"), stopped=True)
    with pytest.raises(RuntimeError, match="run the forward again"):
        fast_lstm.stack_backward_tm(np.ones((x.shape[1], 3, 5)), [c for _, c in layers])
    assert agrees(model, cfg, p, x, y)


def test_shared_buffers_leave_no_file_behind(two_processes, tmp_path):
    before = set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()
    key, buffer = procs.peer().share(4096)
    after = set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()
    assert len(buffer) == 4096 and not {f for f in after - before if f.startswith("minilm-")}


@pytest.mark.parametrize("gates", sorted(fast_lstm.GATE_FORMS))
@pytest.mark.parametrize("B", [5, 34])
def test_one_layer_split_over_two_processes_matches_plain(two_processes, monkeypatch, B, gates):
    """lstm_forward / lstm_backward with the batch's second half in the peer (an odd batch: 2 + 3 rows with
    SPLIT_ROWS lowered to 2; 34 rows at the default): the plain LSTM's outputs, final state and every
    gradient, with a carried state's gradient too, twice with the same Workspace."""
    from minilm import lstm

    if B < 2 * fast_lstm.SPLIT_ROWS:
        monkeypatch.setattr(fast_lstm, "SPLIT_ROWS", 2)
    monkeypatch.setattr(fast_lstm, "_gate_form", gates)  # the peer takes the form from the Workspace's layout
    r = np.random.default_rng(2)
    T, D, Hd = 11, 6, 8
    Wx, Wh, b = lstm.lstm_init(r, D, Hd, np.float64)
    b = b + r.standard_normal(4 * Hd)
    x = r.standard_normal((B, T, D))
    h0, c0 = r.standard_normal((2, B, Hd))
    dhs = r.standard_normal((B, T, Hd))
    dstate = tuple(r.standard_normal((2, B, Hd)))
    hs, (h, c), cache = lstm.lstm_forward(x, h0, c0, Wx, Wh, b)
    grads = lstm.lstm_backward(dhs, cache, dstate)
    ws = fast_lstm.Workspace()
    for _ in range(2):
        fhs, (fh, fc), fcache = fast_lstm.lstm_forward(x, h0, c0, Wx, Wh, b, ws, procs.peer())
        assert isinstance(fcache, fast_lstm._Split)
        assert ws.halves[0].form == ws.halves[1].form == gates
        assert max(float(np.abs(a - f).max()) for a, f in ((hs, fhs), (h, fh), (c, fc))) <= TOL
        fgrads = fast_lstm.lstm_backward(dhs, fcache, dstate)
        assert all(float(np.abs(g - f).max()) <= TOL * float(np.abs(g).max()) for g, f in zip(grads, fgrads,
                                                                                                   strict=True))


def test_one_layer_split_lost_half_is_caught(two_processes, monkeypatch):
    """A backward whose peer half never runs (its gradients left at zero): dW_h is caught far off."""
    from minilm import lstm

    monkeypatch.setattr(fast_lstm, "SPLIT_ROWS", 2)
    r = np.random.default_rng(4)
    Wx, Wh, b = lstm.lstm_init(r, 3, 4, np.float64)
    x, dhs = r.standard_normal((6, 5, 3)), r.standard_normal((6, 5, 4))
    h0 = np.zeros((6, 4))
    _, _, cache = lstm.lstm_forward(x, h0, h0, Wx, Wh, b)
    dWh = lstm.lstm_backward(dhs, cache)[4]
    _, _, fcache = fast_lstm.lstm_forward(x, h0, h0, Wx, Wh, b, fast_lstm.Workspace(), procs.peer())
    for a in (fcache.theirs.gWx, fcache.theirs.gWh, fcache.theirs.gb):
        a[...] = 0
    alone = types.SimpleNamespace(signal=lambda: None, wait=lambda layer, chunk: None)  # no peer to wait for
    monkeypatch.setattr(procs.Peer, "run", lambda self, op, keys, layers, here, *args: (here(alone), 0.0)[1])
    fdWh = fast_lstm.lstm_backward(dhs, fcache)[4]
    assert float(np.abs(fdWh - dWh).max()) > 1e-4 * float(np.abs(dWh).max())


def transformer_case(B=4):
    from minilm import transformer as tr

    cfg = tr.TransformerConfig(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=8, norm="pre", ffn="gelu",
                               pos="learned", tie_weights=True)
    r = np.random.default_rng(9)
    p = {k: v + (0.3 * r.standard_normal(v.shape) if v.ndim == 1 else 0) for k, v in
         tr.init_params(cfg, r, np.float64).items()}
    x, y = r.integers(0, 11, (2, B, 7))
    return tr, cfg, p, x, y


def test_transformer_split_lost_half_is_caught(two_processes, monkeypatch):
    """The Transformer's step over two processes with the peer's half never run (its gradients left at
    zero): caught far off the plain gradients."""
    from minilm.fast.gpt import FastTransformer

    tr, cfg, p, x, y = transformer_case()
    _, grads = tr.loss_and_grads(p, cfg, x, y)
    fast = FastTransformer(cfg, p, np.float64)
    fast.loss_and_grads(x, y)
    assert fast._split is not None
    fast._split["g"][...] = 0
    alone = types.SimpleNamespace(signal=lambda: None, wait=lambda layer, chunk: None)  # no peer to wait for
    monkeypatch.setattr(procs.Peer, "run", lambda self, op, keys, layers, here, *args: (here(alone), 0.0)[1])
    _, fg = fast.loss_and_grads(x, y)
    scale = max(float(np.abs(g).max()) for g in grads.values())
    assert max(float(np.abs(grads[k] - fg[k]).max()) for k in grads) > 1e-4 * scale


def test_transformer_half_without_targets_stays_in_one_process(two_processes):
    """A masked-LM batch whose second half has no chosen position: one process (each half's loss is a mean
    over its own targets), still the plain model's numbers."""
    from minilm.fast.gpt import FastTransformer

    tr, cfg, p, x, y = transformer_case()
    y = y.copy()
    y[2:] = tr.IGNORE_INDEX
    loss, grads = tr.loss_and_grads(p, cfg, x, y)
    fast = FastTransformer(cfg, p, np.float64)
    fl, fg = fast.loss_and_grads(x, y)
    scale = max(float(np.abs(g).max()) for g in grads.values())
    assert fast._split is None and abs(fl - loss) <= TOL * loss
    assert max(float(np.abs(grads[k] - fg[k]).max()) for k in grads) <= TOL * scale


def test_transformer_split_follows_the_batch_shape(two_processes):
    """Batches of 4, 6 and 4 rows: the second process's replica is replaced (the old one forgotten) and
    every call gives the plain model's numbers."""
    from minilm.fast.gpt import FastTransformer

    tr, cfg, p, _, _ = transformer_case()
    fast = FastTransformer(cfg, p, np.float64)
    r = np.random.default_rng(3)
    for B in (4, 6, 4):
        x, y = r.integers(0, 11, (2, B, 7))
        loss, grads = tr.loss_and_grads(p, cfg, x, y)
        fl, fg = fast.loss_and_grads(x, y)
        scale = max(float(np.abs(g).max()) for g in grads.values())
        assert fast._split["shape"] == (B - B // 2, 7) and abs(fl - loss) <= TOL * loss
        assert max(float(np.abs(grads[k] - fg[k]).max()) for k in grads) <= TOL * scale


# ---- half of the optimiser step in the second process (minilm.fast.flat.FlatParams.share) ----


def plain_steps(cfg, p, x, y, n, model_kind):
    from minilm import ngram, optim

    plain, opt = {k: v.copy() for k, v in p.items()}, optim.init_state(p)
    for _ in range(n):
        if model_kind == "lstm":
            _, grads, _ = lstm_lm.loss_grads_and_state(plain, cfg, x, y)
        else:
            _, grads = ngram.loss_and_grads(plain, cfg, x, y)
        optim.clip_grad_norm(grads, 0.2)
        optim.adamw_step(plain, grads, opt, 1e-2, 0.9, 0.99, weight_decay=0.1)
    return plain, opt


def ngram_case():
    from minilm import ngram

    r = np.random.default_rng(2)
    cfg = ngram.NgramConfig(vocab_size=13, context=3, n_embd=4, n_hidden=6)
    p = {k: v + 0.1 * r.standard_normal(v.shape) for k, v in ngram.init_params(cfg, r, np.float64).items()}
    return cfg, p, r.integers(0, 13, (7, 3)), r.integers(0, 13, 7)


@pytest.mark.parametrize("model_kind", ["lstm", "ngram"])
def test_optimiser_step_in_two_halves_matches_plain(two_processes, monkeypatch, model_kind):
    """Every model shares its flat buffers from SHARE_MIN entries (0 here): the gradient norm and the AdamW
    step in two halves, one per process, give minilm.optim's parameters and moments; a peer killed between
    steps leaves the buffers to this side, which goes on alone, and then shares them with the new peer."""
    from minilm.fast import flat
    from minilm.fast.ngram import FastNgram

    monkeypatch.setattr(flat, "SHARE_MIN", 0)
    if model_kind == "lstm":
        cfg, p, x, y = case(n_layer=1)
        fast, step = FastLSTMLM(cfg, p, np.float64), lambda m: m.step(x, y, 1e-2, 0.9, 0.99, 1e-8, 0.1, 0.2)
    else:
        cfg, p, x, y = ngram_case()
        fast, step = FastNgram(cfg, p, np.float64), lambda m: m.step(x, y, 1e-2, 0.9, 0.99, 1e-8, 0.1, 0.2)
    sizes = fast.flat.size, fast.flat.half()
    assert 0 < sizes[1] < sizes[0] and fast.flat.n_decay > sizes[1]  # the peer's half has decayed rows too
    for _ in range(2):
        step(fast)
    first = fast.flat.peer
    assert fast.flat._shared() is first
    os.kill(first.proc.pid, signal.SIGKILL)
    first.proc.wait()
    assert fast.flat._shared() is None
    step(fast)  # alone
    assert fast.flat._shared() is not None and fast.flat.peer is not first  # shared again, with the new peer
    step(fast)
    plain, opt = plain_steps(cfg, p, x, y, 4, model_kind)
    assert max(float(np.abs(plain[k] - fast.params[k]).max()) for k in plain) <= TOL
    state = fast.opt_state()
    assert state["t"] == 4 and max(float(np.abs(opt["v"][k] - state["v"][k]).max()) for k in plain) <= TOL


def test_optimiser_half_catches_a_wrong_peer_half(two_processes, monkeypatch):
    """The comparison above fails when the peer's half of the step is left out (its rows keep their values)."""
    from minilm.fast import flat
    from minilm.fast.ngram import FastNgram

    monkeypatch.setattr(flat, "SHARE_MIN", 0)
    cfg, p, x, y = ngram_case()
    fast = FastNgram(cfg, p, np.float64)
    orig = flat.FlatParams.adamw_step

    def here_only(self, *a, **k):
        peer, self.peer = self.peer, None  # the peer's rows are skipped ...
        try:
            h = self.half()
            self.size, size = h, self.size  # ... and this side updates only its own
            return orig(self, *a, **k)
        finally:
            self.peer, self.size = peer, size

    fast.step(x, y, 1e-2, 0.9, 0.99, 1e-8, 0.1, 0.2)  # shares
    monkeypatch.setattr(flat.FlatParams, "adamw_step", here_only)
    fast.step(x, y, 1e-2, 0.9, 0.99, 1e-8, 0.1, 0.2)
    plain, _ = plain_steps(cfg, p, x, y, 2, "ngram")
    assert max(float(np.abs(plain[k] - fast.params[k]).max()) for k in plain) > 1e-4


def test_a_collected_model_leaves_nothing_in_the_peer(two_processes, monkeypatch):
    """What a model shares with the peer (its optimiser's buffers, a Transformer's replica, an LSTM's
    Workspaces) is forgotten there once the model here is collected, before the peer's next command."""
    import gc

    from minilm import transformer as tr
    from minilm.fast import flat
    from minilm.fast.gpt import FastTransformer
    from minilm.fast.ngram import FastNgram

    monkeypatch.setattr(flat, "SHARE_MIN", 0)
    peer = procs.peer()
    gc.collect()
    peer.call("ping")
    before = peer.call("keys")
    cfg, p, x, y = ngram_case()
    gcfg = tr.TransformerConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=8)
    r = np.random.default_rng(0)
    models = [FastNgram(cfg, p, np.float64), FastTransformer(gcfg, tr.init_params(gcfg, r)),
              FastLSTMLM(*case(n_layer=2)[:2], np.float64)]
    models[0].step(x, y, 1e-2)
    models[1].step(r.integers(0, 11, (4, 8)), r.integers(0, 11, (4, 8)), 1e-2)
    lx, ly = case(n_layer=2)[2:]
    models[2].step(lx, ly, 1e-2)
    during = peer.call("keys")
    assert len(during) >= len(before) + 5  # two flats, a replica, two Workspaces
    del models
    gc.collect()
    assert peer.call("keys") == before

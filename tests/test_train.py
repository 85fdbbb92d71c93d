"""The training loop: every model learns, resume is bit-identical, Ctrl-C and NaN are handled."""

import dataclasses
import math
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from minilm.training import adapters as models
from minilm.training import checkpoint
from minilm.training.loop import TrainingDiverged, TrainOptions, train

ROOT = Path(__file__).resolve().parents[1]
QUIET = dict(log=lambda *a, **k: None, progress=False, plot=False)

# tiny configurations and the steps each needs to learn the grammar below (the masked LM sees only 15% of
# the positions as targets, so it needs more)
STEPS = {"transformer": 200, "mlm": 400, "ngram": 300, "lstm": 200}
TINY = {
    "transformer": dict(layers=1, heads=2, width=32, block_size=16, batch_size=16, lr=1e-2),
    "mlm": dict(layers=1, heads=2, width=32, block_size=8, batch_size=32, lr=1e-2),
    "ngram": dict(context=4, width=8, hidden=64, batch_size=64, lr=1e-2),
    "lstm": dict(width=16, hidden=48, block_size=16, batch_size=8, lr=1e-2),
}
MODEL_MODULE = {"transformer": "minilm.transformer", "mlm": "minilm.mlm", "ngram": "minilm.ngram",
                "lstm": "minilm.lstm_lm"}


def needs(model):
    pytest.importorskip(MODEL_MODULE[model])


def synthetic_text(n_sentences: int = 600, seed: int = 0) -> str:
    """Sentences from a tiny grammar: 4 x 3 x 3 choices, so about 3.6 nats of information per ~25 characters."""
    rng = np.random.default_rng(seed)
    subj, verb, obj = ["the cat", "a dog", "my bird", "the fox"], ["sees", "likes", "chases"], ["the mouse",
                                                                                               "a ball", "the sun"]
    return "".join(f"{rng.choice(subj)} {rng.choice(verb)} {rng.choice(obj)}.\n" for _ in range(n_sentences))


def unigram_baseline(text: str) -> float:
    """Cross-entropy (nats/char) of the validation tenth under the training part's character frequencies."""
    cut = int(len(text) * 0.9)
    counts, val = Counter(text[:cut]), text[cut:]
    total = sum(counts.values())
    return -sum(math.log(counts[c] / total) for c in val) / len(val)


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "grammar.txt"
    path.write_text(synthetic_text())
    return path


def opts_for(model, corpus, out, **kw):
    return TrainOptions(model=model, data=str(corpus), out=str(out), **{**TINY[model], **kw})


@pytest.mark.parametrize("model", ["transformer", "mlm", "ngram", "lstm"])
def test_every_model_learns_well_below_the_unigram_baseline(model, corpus, tmp_path):
    needs(model)
    baseline = unigram_baseline(corpus.read_text())
    assert baseline > 2.0  # the characters alone carry a lot of uncertainty
    n = STEPS[model]
    m = train(opts_for(model, corpus, tmp_path / model, steps=n, eval_every=n), **QUIET)
    assert m["steps"] == n and m["val_loss"] is not None
    assert m["val_loss"] < 0.5 * baseline, (model, m["val_loss"], baseline)
    assert m["val_perplexity"] == pytest.approx(math.exp(m["val_loss"]))
    assert {p.name for p in (tmp_path / model).iterdir()} == {"checkpoint.npz", "metrics.json"}  # loss.png: test_cli


@pytest.mark.parametrize("model,extra", [("transformer", dict(dropout=0.1)), ("mlm", {}), ("ngram", {}),
                                         ("lstm", {})])
def test_resume_gives_the_same_result_as_an_uninterrupted_run(model, extra, corpus, tmp_path):
    needs(model)
    straight = train(opts_for(model, corpus, tmp_path / "a", steps=12, eval_every=5, **extra), **QUIET)
    paused = train(opts_for(model, corpus, tmp_path / "b", steps=12, eval_every=5, stop_after=7, **extra), **QUIET)
    assert paused["steps"] == 7 and not paused["finished"]
    resumed = train(TrainOptions(out=str(tmp_path / "b")), resume=True, **QUIET)
    a, b = checkpoint.load(tmp_path / "a" / "checkpoint.npz"), checkpoint.load(tmp_path / "b" / "checkpoint.npz")
    assert a["meta"]["step"] == b["meta"]["step"] == 12
    for k in a["params"]:
        assert np.array_equal(a["params"][k], b["params"][k]), k
        assert np.array_equal(a["opt_state"]["m"][k], b["opt_state"]["m"][k]), k
    timeless = [{k: v for k, v in m["meta"]["history"].items() if k != "train_seconds"} for m in (a, b)]
    assert timeless[0] == timeless[1]  # train_seconds, the time spent so far at each evaluation, is the clock's
    assert a["meta"]["rng"] == b["meta"]["rng"]
    assert straight["val_loss"] == resumed["val_loss"]


@pytest.mark.parametrize("model", ["transformer", "lstm", "ngram"])
def test_fast_resume_continues_the_run(model, corpus, tmp_path, monkeypatch):
    """--fast, paused and resumed: the parameters and AdamW moments of the uninterrupted run, to float32
    rounding (the fast path's sums are not bit for bit those of a fresh start), with the optimiser step split
    over two processes from the first step (its moments move into shared memory: the checkpoint must hold
    the moved ones)."""
    from minilm.fast import flat

    monkeypatch.setattr(flat, "SHARE_MIN", 0)
    needs(model)
    train(opts_for(model, corpus, tmp_path / "a", steps=12, eval_every=5, fast=True), **QUIET)
    train(opts_for(model, corpus, tmp_path / "b", steps=12, eval_every=5, stop_after=7, fast=True), **QUIET)
    train(TrainOptions(out=str(tmp_path / "b")), resume=True, **QUIET)
    a, b = checkpoint.load(tmp_path / "a" / "checkpoint.npz"), checkpoint.load(tmp_path / "b" / "checkpoint.npz")
    assert a["meta"]["step"] == b["meta"]["step"] == 12 and a["opt_state"]["t"] == b["opt_state"]["t"] == 12
    for k in a["params"]:
        if k.endswith("attn.b_k"):  # a gradient of exactly 0 in theory: rounding noise, which Adam turns into steps
            continue
        scale = float(np.abs(a["params"][k]).max()) + 1e-3
        assert float(np.abs(a["params"][k] - b["params"][k]).max()) <= 1e-5 * scale, k
        for moment in ("m", "v"):
            ref = a["opt_state"][moment][k]
            err = float(np.abs(ref - b["opt_state"][moment][k]).max())
            assert err <= 1e-4 * (float(np.abs(ref).max()) + 1e-12), (moment, k)


def test_resume_refuses_changed_settings_and_changed_data(corpus, tmp_path):
    needs("ngram")
    train(opts_for("ngram", corpus, tmp_path, steps=6, eval_every=3, stop_after=3), **QUIET)
    before = (tmp_path / "checkpoint.npz").read_bytes()
    with pytest.raises(ValueError, match="--lr 0.5 differs from the checkpoint's 0.01"):
        train(TrainOptions(out=str(tmp_path), lr=0.5), resume=True, explicit={"lr"}, **QUIET)
    corpus.write_text(synthetic_text(seed=1))
    with pytest.raises(ValueError, match="not the one checkpoint"):
        train(TrainOptions(out=str(tmp_path)), resume=True, **QUIET)
    with pytest.raises(ValueError, match="exists; continue it with --resume"):
        train(opts_for("ngram", corpus, tmp_path, steps=6), **QUIET)
    assert (tmp_path / "checkpoint.npz").read_bytes() == before


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(corpus, tmp_path, monkeypatch):
    needs("ngram")
    adapter = models.ADAPTERS["ngram"]
    calls = {"n": 0}

    def poisoned(*args):
        calls["n"] += 1
        loss, grads, carry = adapter.step(*args)
        return (float("nan") if calls["n"] == 12 else loss), grads, carry

    monkeypatch.setitem(models.ADAPTERS, "ngram", dataclasses.replace(adapter, step=poisoned))
    with pytest.raises(TrainingDiverged, match=r"loss is nan at step 12.*last good checkpoint, step 10, is kept"):
        train(opts_for("ngram", corpus, tmp_path, steps=30, eval_every=5), **QUIET)
    ck = checkpoint.load(tmp_path / "checkpoint.npz")
    assert ck["meta"]["step"] == 10
    assert all(np.isfinite(p).all() for p in ck["params"].values())


def test_sigint_saves_a_checkpoint_and_exits_cleanly(corpus, tmp_path):
    needs("ngram")
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "minilm", "train", "--model", "ngram", "--data", str(corpus), "--out", str(out),
           "--steps", "1000000", "--eval-every", "1000000", "--context", "3", "--width", "8", "--hidden", "16",
           "--quiet"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    try:
        first = proc.stdout.readline()  # "training ngram ..." is printed just before the first step
        assert first.startswith("training ngram"), first + proc.stderr.read()
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode in (0, 130), stderr
    assert "interrupted: checkpoint saved" in stdout
    assert "Traceback" not in stderr
    ck = checkpoint.load(out / "checkpoint.npz")
    step = ck["meta"]["step"]
    assert 0 < step < 1_000_000
    m = train(TrainOptions(out=str(out), stop_after=step + 2), resume=True, **QUIET)  # and it resumes
    assert m["steps"] == step + 2

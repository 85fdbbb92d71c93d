"""Checkpoints round-trip exactly, are written atomically, and damaged ones are named as such."""

import numpy as np
import pytest

from minilm import optim
from minilm.training import checkpoint


def sample(rng):
    params = {"W": rng.standard_normal((3, 4)).astype(np.float32), "b": np.zeros(4, np.float32)}
    state = optim.init_state(params)
    optim.adamw_step(params, {k: np.ones_like(v) for k, v in params.items()}, state, lr=0.1)
    meta = {"model": "m", "config": {"vocab_size": 4}, "tokenizer": {"kind": "char", "itos": list("abcd")},
            "step": 7, "rng": rng.bit_generator.state}
    return meta, params, state


def test_round_trip_is_exact(tmp_path, rng):
    meta, params, state = sample(rng)
    carry = [np.arange(6.0).reshape(2, 3), np.ones((2, 3))]
    checkpoint.save(tmp_path / "c.npz", meta, params, state, carry)
    ck = checkpoint.load(tmp_path / "c.npz")
    assert ck["meta"]["step"] == 7 and ck["meta"]["rng"] == meta["rng"] and ck["meta"]["format"] == checkpoint.FORMAT
    for k in params:
        assert np.array_equal(ck["params"][k], params[k]) and ck["params"][k].dtype == np.float32
        assert np.array_equal(ck["opt_state"]["m"][k], state["m"][k])
        assert np.array_equal(ck["opt_state"]["v"][k], state["v"][k])
    assert ck["opt_state"]["t"] == 1
    assert all(np.array_equal(a, b) for a, b in zip(ck["carry"], carry, strict=True))


def test_a_failed_write_leaves_the_old_checkpoint_whole(tmp_path, rng, monkeypatch):
    meta, params, state = sample(rng)
    path = tmp_path / "c.npz"
    checkpoint.save(path, meta, params, state)
    before = path.read_bytes()

    def crash(f, **arrays):
        f.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", crash)
    with pytest.raises(OSError, match="disk full"):
        checkpoint.save(path, {**meta, "step": 8}, params, state)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["c.npz"]  # no temporary file left behind


def test_damaged_files_are_named(tmp_path, rng):
    with pytest.raises(ValueError, match="no such checkpoint"):
        checkpoint.load(tmp_path / "none.npz")
    (tmp_path / "junk.npz").write_bytes(b"this is not a zip archive")
    with pytest.raises(ValueError, match="corrupt checkpoint .*not a readable .npz"):
        checkpoint.load(tmp_path / "junk.npz")
    meta, params, state = sample(rng)
    checkpoint.save(tmp_path / "c.npz", meta, params, state)
    raw = (tmp_path / "c.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match="corrupt checkpoint"):
        checkpoint.load(tmp_path / "cut.npz")
    np.savez(tmp_path / "plain.npz", W=np.zeros(2))
    with pytest.raises(ValueError, match="no metadata"):
        checkpoint.load(tmp_path / "plain.npz")
    np.savez(tmp_path / "other.npz", meta=np.array('{"format": "something else"}'))
    with pytest.raises(ValueError, match="not a minilm checkpoint"):
        checkpoint.load(tmp_path / "other.npz")


def test_parameters_must_match_the_config(rng):
    want = {"W": np.zeros((3, 4)), "b": np.zeros(4)}
    checkpoint.check_params({"W": np.zeros((3, 4)), "b": np.zeros(4)}, want, "c.npz")
    with pytest.raises(ValueError, match=r"W has shape \(4, 3\), expected \(3, 4\)"):
        checkpoint.check_params({"W": np.zeros((4, 3)), "b": np.zeros(4)}, want, "c.npz")
    with pytest.raises(ValueError, match=r"missing parameters \['b'\]"):
        checkpoint.check_params({"W": np.zeros((3, 4))}, want, "c.npz")

"""The spoken-digit task: transcripts, utterances from one split, and the verified download served on loopback."""

import functools
import http.server
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest

from minilm.tasks import digits

SHARED_FSDD = next((p / "shared" / "data" / "fsdd" / "recordings" for p in Path(__file__).resolve().parents
                    if (p / "shared" / "data" / "fsdd" / "recordings").is_dir()), Path("/nonexistent"))
needs_fsdd = pytest.mark.skipif(not SHARED_FSDD.is_dir(), reason="the shared FSDD copy (../shared) is absent")


def test_transcripts_round_trip():
    ids = digits.encode("three one four")
    assert ids[-1] == digits.EOS and len(ids) == len("three one four") + 1
    assert digits.decode(ids) == "three one four"
    assert digits.words_of((3, 1, 4)) == "three one four"
    with pytest.raises(ValueError, match="outside a-z"):
        digits.encode("Three")


def test_pad_batch_shifts_the_targets():
    x, lengths, y_in, y_out = digits.pad_batch([np.ones((3, 2)), np.ones((1, 2))],
                                               [digits.encode("on"), digits.encode("o")])
    assert x.shape == (2, 3, 2) and list(lengths) == [3, 1] and x[1, 1:].sum() == 0
    o, n = digits.ALPHABET.index("o") + 1, digits.ALPHABET.index("n") + 1
    np.testing.assert_array_equal(y_in, [[0, o, n], [0, o, 0]])
    np.testing.assert_array_equal(y_out, [[o, n, 0], [o, 0, -100]])


@needs_fsdd
def test_recordings_and_the_official_split():
    folder = digits.open_recordings(SHARED_FSDD.parent)
    assert len(digits.recordings(folder)) == 3000
    test, train = digits.recordings(folder, "test"), digits.recordings(folder, "train")
    assert len(test) == 300 and len(train) == 2700
    assert {r.index for r in test} == set(range(5)) and {r.speaker for r in test} == set(digits.SPEAKERS)
    assert len(digits.recordings(folder, "test", exclude_speakers=("theo",))) == 250


@needs_fsdd
def test_utterances_are_deterministic_from_one_split_with_noise_gaps():
    recs = digits.recordings(SHARED_FSDD, "test")
    a, b = digits.utterances(recs, 20, seed=3), digits.utterances(recs, 20, seed=3)
    assert [u.digits for u in a] == [u.digits for u in b]
    assert all(np.array_equal(u.audio, v.audio) for u, v in zip(a, b, strict=True))
    assert [u.digits for u in digits.utterances(recs, 20, seed=4)] != [u.digits for u in a]
    assert {len(u.digits) for u in a} == {1, 2, 3}
    for u in a:
        assert {r.split for r in u.sources} == {"test"}
        assert u.digits == tuple(r.digit for r in u.sources) and u.text == digits.words_of(u.digits)
        gaps = len(u.audio) - sum(len(digits.read_wav(r.path)) for r in u.sources)
        k = len(u.digits) - 1
        assert 400 * k <= gaps <= 1600 * k  # 50-200 ms at 8 kHz between each two digits
        for r, start in zip(u.sources, u.starts, strict=True):
            clip = digits.read_wav(r.path)
            np.testing.assert_array_equal(u.audio[start : start + len(clip)], clip)
        first = digits.read_wav(u.sources[0].path)
        np.testing.assert_array_equal(u.audio[: len(first)], first)
        if k:
            noise = u.audio[len(first) : len(first) + 400]
            assert 0 < noise.std() < 3 * digits.NOISE  # low-level noise, not silence and not speech
    with pytest.raises(ValueError, match="one split only"):
        digits.utterances(digits.recordings(SHARED_FSDD, "train")[:10] + recs[:1], 2, seed=0)


# ---- the verified download, served on loopback ----

@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The shared recordings zipped as the tag archive is laid out, and a corrupt copy, on 127.0.0.1."""
    if not SHARED_FSDD.is_dir():
        pytest.skip("the shared FSDD copy (../shared) is absent")
    root = tmp_path_factory.mktemp("www")
    names = sorted(p.name for p in SHARED_FSDD.iterdir())
    with zipfile.ZipFile(root / "v1.0.10.zip", "w") as z:
        z.writestr("free-spoken-digit-dataset-1.0.10/README.md", "FSDD\n")
        for n in names:
            z.write(SHARED_FSDD / n, f"free-spoken-digit-dataset-1.0.10/recordings/{n}")
    with zipfile.ZipFile(root / "bad.zip", "w") as z:
        for i, n in enumerate(names):
            data = (SHARED_FSDD / n).read_bytes()
            z.writestr(f"free-spoken-digit-dataset-1.0.10/recordings/{n}", data + b"\0" if i == 7 else data)
    (root / "notzip.zip").write_bytes(b"<html>not found</html>")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_download_unpacks_verifies_and_is_reused(served, tmp_path):
    logs = []
    folder = digits.fetch(url=served + "/v1.0.10.zip", cache=tmp_path, log=logs.append)
    assert folder == tmp_path / "fsdd-v1.0.10" / "recordings" and len(list(folder.iterdir())) == 3000
    assert (folder.parent / "SHA256SUMS").read_text() == (SHARED_FSDD.parent / "SHA256SUMS").read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["fsdd-v1.0.10"]  # no temporary left behind
    assert len(logs) == 1
    again = digits.fetch(url="http://127.0.0.1:9/unreachable.zip", cache=tmp_path, log=logs.append)
    assert again == folder and len(logs) == 1  # verified in the cache: no second download


def test_a_corrupt_download_never_lands_in_the_cache(served, tmp_path):
    with pytest.raises(ValueError, match="corrupt.*deleted"):
        digits.fetch(url=served + "/bad.zip", cache=tmp_path, log=lambda m: None)
    with pytest.raises(ValueError, match="not a zip archive"):
        digits.fetch(url=served + "/notzip.zip", cache=tmp_path, log=lambda m: None)
    with pytest.raises(ValueError, match="could not download"):
        digits.fetch(url=served + "/missing.zip", cache=tmp_path, log=lambda m: None)
    assert list(tmp_path.iterdir()) == []


def test_a_damaged_cache_is_downloaded_again(served, tmp_path):
    folder = digits.fetch(url=served + "/v1.0.10.zip", cache=tmp_path, log=lambda m: None)
    (folder / "0_george_0.wav").write_bytes(b"RIFF")
    logs = []
    digits.fetch(url=served + "/v1.0.10.zip", cache=tmp_path, log=logs.append)
    assert "damaged" in logs[0]
    digits.verify(folder)


def test_data_dir_is_checked(tmp_path):
    with pytest.raises(ValueError, match="no such folder"):
        digits.open_recordings(tmp_path / "nowhere")
    (tmp_path / "0_george_0.wav").write_bytes(b"RIFF")
    with pytest.raises(ValueError, match="does not hold the FSDD v1.0.10 recordings: 1 recordings"):
        digits.open_recordings(tmp_path)


def test_spec_augment_masks_one_band_and_one_stretch_inside_each_row():
    from minilm.training.speech import spec_augment

    x = np.ones((3, 20, 10), np.float32)
    x[2, 12:] = 0  # row 2 has 12 frames
    lengths = np.array([20, 20, 12])
    y = spec_augment(x, lengths, np.random.default_rng(0), max_bands=3, max_frames=4)
    assert (x[:2] == 1).all()  # the input is not changed
    for b, L in enumerate(lengths):
        zero = y[b, :L] == 0  # (L, M)
        bands = np.flatnonzero(zero.all(axis=0))
        frames = np.flatnonzero(zero.all(axis=1))
        assert len(bands) <= 3 and len(frames) <= 4
        assert np.array_equal(zero, zero.all(axis=0)[None, :] | zero.all(axis=1)[:, None])  # nothing else
        for idx in (bands, frames):
            assert len(idx) == 0 or np.array_equal(idx, np.arange(idx[0], idx[0] + len(idx)))  # contiguous
    assert (y[2, 12:] == 0).all()
    np.testing.assert_array_equal(y, spec_augment(x, lengths, np.random.default_rng(0), 3, 4))  # seeded

"""Log-mel features on signals whose answer is known, and WAV reading with its bad inputs."""

import wave

import numpy as np
import pytest

from minilm import audio

CFG = audio.FeatureConfig()


def tone(f, seconds=0.5, rate=audio.RATE, amp=0.5):
    return (amp * np.sin(2 * np.pi * f * np.arange(int(seconds * rate)) / rate)).astype(np.float32)


def test_frame_and_hop_lengths_at_8khz():
    assert (CFG.frame_len, CFG.hop) == (200, 80)


@pytest.mark.parametrize("N,T", [(1, 1), (200, 1), (201, 2), (280, 2), (281, 3), (3520, 43), (8000, 99)])
def test_frame_count_follows_the_formula(N, T):
    assert audio.n_frames(N, 200, 80) == T  # 1 + ceil(max(0, N - 200) / 80), worked by hand
    fr = audio.frames(np.arange(1, N + 1, dtype=np.float32), 200, 80)
    assert fr.shape == (T, 200)
    assert fr[-1, -1] == 0 or N == 200 + 80 * (T - 1)  # the last frame is padded with zeros unless it fits
    assert fr[T - 1, 0] == 80 * (T - 1) + 1  # frame t starts at sample t H
    np.testing.assert_array_equal(np.unique(fr[fr > 0]), np.arange(1, N + 1))  # every sample is covered


def test_preemphasis_by_hand():
    np.testing.assert_allclose(audio.preemphasis(np.array([1.0, 1.0, 2.0, 0.0], np.float32)),
                               [1.0, 0.03, 1.03, -1.94], rtol=1e-6)


def test_hann_window():
    w = audio.hann(201)
    assert w[0] == 0 and w[-1] == 0 and w[100] == pytest.approx(1.0)
    np.testing.assert_allclose(w, w[::-1], atol=1e-7)  # symmetric
    np.testing.assert_allclose(audio.hann(5), [0, 0.5, 1, 0.5, 0], atol=1e-7)


def test_power_spectrum_of_a_tone_on_a_bin_peaks_at_that_bin():
    k0 = 32  # 32 * 8000 / 256 = 1000 Hz
    fr = audio.frames(tone(1000), 256, 128)
    P = audio.power_spectrum(fr, 256)  # no window: all energy in bin k0
    assert P.shape == (fr.shape[0], 129)
    assert (P.argmax(axis=1) == k0).all()
    # Parseval: sum_n x^2 = (1/n) sum_k |X_k|^2, with the rfft's bins 1 .. n/2-1 counted twice
    full = P[0].copy()
    full[1:-1] *= 2
    assert full.sum() == pytest.approx((fr[0].astype(np.float64) ** 2).sum(), rel=1e-5)


def test_mel_scale_is_htk():
    assert audio.hz_to_mel(700) == pytest.approx(2595 * np.log10(2))
    assert audio.hz_to_mel(1000) == pytest.approx(1000, abs=0.1)  # the scale's anchor: 1000 Hz ~ 1000 mel
    f = np.array([0.0, 123.0, 4000.0])
    np.testing.assert_allclose(audio.mel_to_hz(audio.hz_to_mel(f)), f, atol=1e-9)


def test_filterbank_triangles():
    F = audio.mel_filterbank(40, 256, 8000)
    assert F.shape == (40, 129)
    assert (F.max(axis=1) > 0).all()  # no empty band at 40 bands and 31.25 Hz bins
    assert F.max() <= 1
    e = audio.mel_edges(40, 8000)
    assert e[0] == 0 and e[-1] == pytest.approx(4000)
    centres = np.diff(audio.hz_to_mel(e)[1:-1])
    np.testing.assert_allclose(centres, centres[0])  # equally spaced in mel


@pytest.mark.parametrize("f", [300.0, 1000.0, 2500.0])
def test_a_tone_lands_in_the_band_that_contains_its_frequency(f):
    S = audio.features(tone(f), normalised=False)  # (T, 40)
    band = int(np.median(S.argmax(axis=1)))
    e = audio.mel_edges(40, 8000)
    assert e[band] < f < e[band + 2]  # band m covers edges m .. m+2
    assert abs(e[band + 1] - f) == min(abs(e[1:-1] - f))  # and its centre is the nearest to f


def test_silence_gives_the_floor_and_normalises_to_zero():
    S = audio.features(np.zeros(4000, np.float32), normalised=False)
    assert S.shape == (49, 40)
    np.testing.assert_allclose(S, np.log(np.float32(audio.FLOOR)))
    np.testing.assert_array_equal(audio.features(np.zeros(4000, np.float32)), 0)


def test_normalised_features_have_zero_mean_unit_variance_per_band():
    rng = np.random.default_rng(0)
    Z = audio.features((0.1 * rng.standard_normal(4000)).astype(np.float32))
    assert Z.dtype == np.float32
    np.testing.assert_allclose(Z.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(Z.std(axis=0), 1, atol=1e-3)


def test_wav_round_trip(tmp_path):
    x = tone(440, 0.25)
    audio.write_wav(tmp_path / "a.wav", x)
    y = audio.read_wav(tmp_path / "a.wav")
    assert y.dtype == np.float32 and y.shape == x.shape
    np.testing.assert_allclose(y, x, atol=1 / 32768)


def _write(path, rate=8000, channels=1, width=2, n=100):
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(b"\0" * (n * channels * width))


@pytest.mark.parametrize("kw,match", [(dict(rate=16000), "16000 Hz"), (dict(channels=2), "2 channel"),
                                      (dict(width=1), "8-bit"), (dict(n=0), "no samples")])
def test_other_formats_are_refused_in_one_line(tmp_path, kw, match):
    p = tmp_path / "x.wav"
    _write(p, **kw)
    with pytest.raises(ValueError, match=match) as e:
        audio.read_wav(p)
    assert "\n" not in str(e.value)


def test_missing_empty_non_wav_and_truncated_files(tmp_path):
    with pytest.raises(ValueError, match="no such file"):
        audio.read_wav(tmp_path / "missing.wav")
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(ValueError, match="file is empty"):
        audio.read_wav(tmp_path / "empty.wav")
    (tmp_path / "text.wav").write_text("hello, not audio\n")
    with pytest.raises(ValueError, match="not a PCM WAV file"):
        audio.read_wav(tmp_path / "text.wav")
    _write(tmp_path / "full.wav", n=1000)
    raw = (tmp_path / "full.wav").read_bytes()
    (tmp_path / "cut.wav").write_bytes(raw[: len(raw) - 500])
    with pytest.raises(ValueError, match="truncated WAV file"):
        audio.read_wav(tmp_path / "cut.wav")


@pytest.mark.parametrize("x,match", [(np.zeros(0), "non-empty"), (np.zeros((2, 3)), "1-D"),
                                     (np.array([0.0, np.nan]), "NaN")])
def test_features_refuse_bad_arrays(x, match):
    with pytest.raises(ValueError, match=match):
        audio.features(x)

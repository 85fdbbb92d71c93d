"""From a waveform to log-mel features, the input of speech recognition (§6.2 语音识别).

Forward only: the features are fixed, nothing below the model learns, so no
step needs a backward.  With x[n] the samples at rate f_s (8 kHz here):

    pre-emphasis     y[n] = x[n] - a x[n-1],  y[0] = x[0]          (a = 0.97: lifts the weak high frequencies)
    framing          frame t = y[t H .. t H + L-1],  L = 25 ms, H = 10 ms (200 and 80 samples at 8 kHz);
                     T = 1 + ceil(max(0, N - L) / H) frames, the last one padded with zeros
    Hann window      w[n] = 0.5 - 0.5 cos(2 pi n / (L - 1)),  n = 0 .. L-1   (the symmetric Hann window)
    power spectrum   P_t[k] = |sum_n w[n] frame_t[n] e^{-2 pi i k n / n_fft}|^2 / n_fft,  k = 0 .. n_fft/2
                     (np.fft.rfft with n_fft = 256 >= L: the frame zero-padded)
    mel filterbank   M_t[m] = sum_k F[m, k] P_t[k]: M triangles equally spaced on the HTK mel scale
                     mel(f) = 2595 log10(1 + f / 700)   (O'Shaughnessy 1987, as in HTK), between 0 and f_s / 2
    log              S_t[m] = log(max(M_t[m], FLOOR))     FLOOR = 1e-10: silence gives log(FLOOR), not -inf
    normalisation    Z_t[m] = (S_t[m] - mean_t S[m]) / (std_t S[m] + 1e-5)   per utterance and band

Shapes: N samples; T frames; L frame length; K = n_fft / 2 + 1 frequency bins; M mel bands.

WAV files are read with the standard library's ``wave``.  Only 8 kHz mono
16-bit PCM is accepted (the format of the spoken-digit recordings); any other
format is refused with a one-line error naming it, never resampled silently.
"""

from __future__ import annotations

import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

RATE = 8000  # f_s, samples per second
FLOOR = 1e-10  # smallest mel energy taken to the log


@dataclass(frozen=True)
class FeatureConfig:
    """The feature pipeline's settings; the defaults are the ones the model is trained with."""

    rate: int = RATE  # f_s
    frame_ms: float = 25.0  # L = 200 samples at 8 kHz
    hop_ms: float = 10.0  # H = 80 samples
    n_fft: int = 256  # >= L, a power of two
    n_mels: int = 40  # M
    preemphasis: float = 0.97  # a

    @property
    def frame_len(self) -> int:
        return int(round(self.rate * self.frame_ms / 1000))

    @property
    def hop(self) -> int:
        return int(round(self.rate * self.hop_ms / 1000))


# ---- reading ----

def read_wav(path) -> np.ndarray:
    """The samples of an 8 kHz mono 16-bit PCM WAV file as float32 in [-1, 1): x (N,).

    A ValueError in one line names the problem: missing, empty, not a WAV
    file, another format (rate, channels, sample width), or truncated.
    """
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"no such file: {p}")
    if p.stat().st_size == 0:
        raise ValueError(f"file is empty: {p}")
    try:
        with wave.open(str(p), "rb") as w:
            rate, channels, width, n = w.getframerate(), w.getnchannels(), w.getsampwidth(), w.getnframes()
            raw = w.readframes(n)
    except (wave.Error, EOFError) as e:
        raise ValueError(f"not a PCM WAV file: {p} ({e})") from None
    if (rate, channels, width) != (RATE, 1, 2):
        raise ValueError(f"{p} is {rate} Hz, {channels} channel(s), {8 * width}-bit; only 8000 Hz mono 16-bit "
                         f"PCM is accepted (convert it first, e.g. sox IN -r 8000 -c 1 -b 16 OUT.wav)")
    if len(raw) != 2 * n:
        raise ValueError(f"truncated WAV file: {p} declares {n} samples but holds {len(raw) // 2}")
    if n == 0:
        raise ValueError(f"WAV file holds no samples: {p}")
    return (np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0)  # (N,)


def write_wav(path, x: np.ndarray, rate: int = RATE) -> None:
    """Write x (N,) in [-1, 1] as mono 16-bit PCM (clipped), for examples and tests."""
    q = np.clip(np.round(np.asarray(x, dtype=np.float64) * 32768.0), -32768, 32767).astype("<i2")  # (N,)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(q.tobytes())


# ---- the steps ----

def preemphasis(x: np.ndarray, a: float = 0.97) -> np.ndarray:
    """y[n] = x[n] - a x[n-1], y[0] = x[0]:  x (N,) -> y (N,)."""
    return np.concatenate([x[:1], x[1:] - x.dtype.type(a) * x[:-1]])  # (N,)


def n_frames(N: int, L: int, H: int) -> int:
    """T = 1 + ceil(max(0, N - L) / H): enough frames to cover every sample."""
    return 1 + -(-max(0, N - L) // H)


def frames(y: np.ndarray, L: int, H: int) -> np.ndarray:
    """Frame t = y[t H .. t H + L-1], zero-padded at the end:  y (N,) -> (T, L)."""
    T = n_frames(len(y), L, H)
    padded = np.zeros((T - 1) * H + L, dtype=y.dtype)  # (N',), N' >= N
    padded[: len(y)] = y
    idx = np.arange(T)[:, None] * H + np.arange(L)[None, :]  # (T, L) sample index of each frame entry
    return padded[idx]  # (T, L)


def hann(L: int, dtype=np.float32) -> np.ndarray:
    """w[n] = 0.5 - 0.5 cos(2 pi n / (L-1)), n = 0 .. L-1 (symmetric: w[0] = w[L-1] = 0):  (L,)."""
    n = np.arange(L)
    return (0.5 - 0.5 * np.cos(2 * np.pi * n / (L - 1))).astype(dtype)  # (L,)


def power_spectrum(framed: np.ndarray, n_fft: int) -> np.ndarray:
    """P[t, k] = |rfft(frame_t, n_fft)[k]|^2 / n_fft:  (T, L) -> (T, K), K = n_fft / 2 + 1."""
    spec = np.fft.rfft(framed, n=n_fft, axis=-1)  # (T, K) complex
    return (spec.real**2 + spec.imag**2) / n_fft  # (T, K)


def hz_to_mel(f):
    """mel(f) = 2595 log10(1 + f / 700), the HTK mel scale."""
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def mel_to_hz(m):
    """f(mel) = 700 (10^(mel / 2595) - 1), the inverse of hz_to_mel."""
    return 700.0 * (10.0 ** (np.asarray(m, dtype=np.float64) / 2595.0) - 1.0)


def mel_edges(n_mels: int, rate: int) -> np.ndarray:
    """The M + 2 edge frequencies in Hz, equally spaced in mel from 0 to f_s / 2: band m rises from
    edge m to its peak at edge m+1 and falls to 0 at edge m+2."""
    return mel_to_hz(np.linspace(0.0, hz_to_mel(rate / 2), n_mels + 2))  # (M + 2,)


def mel_filterbank(n_mels: int, n_fft: int, rate: int, dtype=np.float32) -> np.ndarray:
    """F (M, K): triangle m evaluated at each bin's frequency f_k = k f_s / n_fft,

        F[m, k] = max(0, min((f_k - e_m) / (e_{m+1} - e_m), (e_{m+2} - f_k) / (e_{m+2} - e_{m+1})))

    a peak of 1 at its centre frequency e_{m+1} (no area normalisation).
    """
    e = mel_edges(n_mels, rate)  # (M + 2,)
    f = np.arange(n_fft // 2 + 1) * rate / n_fft  # (K,) bin frequencies
    lo, mid, hi = e[:-2, None], e[1:-1, None], e[2:, None]  # (M, 1) each
    rise = (f[None, :] - lo) / (mid - lo)  # (M, K)
    fall = (hi - f[None, :]) / (hi - mid)  # (M, K)
    return np.maximum(0.0, np.minimum(rise, fall)).astype(dtype)  # (M, K)


def log_mel(power: np.ndarray, fbank: np.ndarray) -> np.ndarray:
    """S[t, m] = log(max(sum_k F[m, k] P[t, k], FLOOR)):  (T, K), (M, K) -> (T, M)."""
    return np.log(np.maximum(power @ fbank.T, power.dtype.type(FLOOR)))  # (T, K) x (K, M) -> (T, M)


def normalise(S: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    """Z[t, m] = (S[t, m] - mean_t S[., m]) / (std_t S[., m] + eps):  (T, M) -> (T, M)."""
    S64 = S.astype(np.float64)  # float32 sums of equal values need not give that value back
    return ((S64 - S64.mean(axis=0)) / (S64.std(axis=0) + eps)).astype(S.dtype)  # (T, M)


def features(x: np.ndarray, cfg: FeatureConfig | None = None, normalised: bool = True) -> np.ndarray:
    """The whole pipeline:  x (N,) float samples -> Z (T, M) float32 normalised log-mel features."""
    cfg = cfg or FeatureConfig()
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"audio must be a non-empty 1-D array of samples, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("audio holds NaN or infinite samples")
    y = preemphasis(x, cfg.preemphasis)  # (N,)
    fr = frames(y, cfg.frame_len, cfg.hop) * hann(cfg.frame_len)  # (T, L)
    P = power_spectrum(fr, cfg.n_fft).astype(np.float32)  # (T, K)
    S = log_mel(P, mel_filterbank(cfg.n_mels, cfg.n_fft, cfg.rate))  # (T, M)
    return normalise(S) if normalised else S

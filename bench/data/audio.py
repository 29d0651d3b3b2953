"""Shared signal helpers of the dataset builders: decoding to 16 kHz mono, fitting to a fixed length,
and the numpy augmentation (gain, position, coloured noise, synthetic reverb).

All randomness comes from `clip_rng(seed, clip_id)`, a generator keyed on the clip's identity, so a
clip's augmentation does not depend on build order and a rebuild reproduces every sample (sox's
noise is not reproducible unless seeded, which is why none of this uses sox).
"""

from __future__ import annotations

import functools
import hashlib
import io

import numpy as np
import soundfile
import torch

SAMPLE_RATE = 16000


def clip_rng(seed: int, clip_id: str) -> np.random.Generator:
    digest = hashlib.sha256(f"{seed}/{clip_id}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def decode(data: bytes | str) -> np.ndarray:
    """WAV/OGG bytes or a path -> 16 kHz mono float32."""
    samples, sr = soundfile.read(io.BytesIO(data) if isinstance(data, bytes) else data, dtype="float32",
                                 always_2d=True)
    return resample(samples.mean(axis=1), sr)


def resample(x: np.ndarray, sr: int) -> np.ndarray:
    if sr == SAMPLE_RATE:
        return np.asarray(x, dtype=np.float32)
    with torch.no_grad():
        y = _resampler(sr)(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)))
    return y.numpy()


@functools.lru_cache(maxsize=8)
def _resampler(sr: int):
    """torchaudio's sinc resampler with its kernel built once per rate (44.1 kHz -> 16 kHz: ~70 ms)."""
    import torchaudio  # only the builders need it

    return torchaudio.transforms.Resample(sr, SAMPLE_RATE)


def trim(x: np.ndarray, threshold_db: float = -35.0, frame: int = 160) -> np.ndarray:
    """Cut leading and trailing frames quieter than `threshold_db` below the loudest frame."""
    n = len(x) // frame
    if n == 0:
        return x
    energy = np.sqrt((x[: n * frame].reshape(n, frame) ** 2).mean(axis=1) + 1e-12)
    loud = np.nonzero(20 * np.log10(energy / energy.max()) > threshold_db)[0]
    if len(loud) == 0:
        return x
    return x[loud[0] * frame: (loud[-1] + 1) * frame]


def place(x: np.ndarray, length: int, rng: np.random.Generator | None) -> np.ndarray:
    """Put `x` at a random offset (centred when rng is None) in `length` zeros; crop the middle if longer."""
    if len(x) >= length:
        start = (len(x) - length) // 2
        return x[start: start + length].astype(np.float32)
    slack = length - len(x)
    offset = slack // 2 if rng is None else int(rng.integers(0, slack + 1))
    out = np.zeros(length, dtype=np.float32)
    out[offset: offset + len(x)] = x
    return out


def peak_normalise(x: np.ndarray, peak: float = 0.5) -> np.ndarray:
    m = np.abs(x).max()
    return (x * (peak / m)).astype(np.float32) if m > 0 else x.astype(np.float32)


def coloured_noise(n: int, colour: str, rng: np.random.Generator) -> np.ndarray:
    """White, pink (1/f power) or brown (1/f^2) noise of unit RMS."""
    white = rng.standard_normal(n)
    if colour != "white":
        spec = np.fft.rfft(white)
        f = np.arange(len(spec), dtype=np.float64)
        f[0] = 1.0
        spec /= np.sqrt(f) if colour == "pink" else f
        white = np.fft.irfft(spec, n)
    return (white / (np.sqrt((white ** 2).mean()) + 1e-12)).astype(np.float32)


def reverb(x: np.ndarray, rng: np.random.Generator, rt60: float) -> np.ndarray:
    """Convolve with a synthetic room response: a direct path plus exponentially decaying noise."""
    n = int(min(rt60, 0.5) * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    rir = rng.standard_normal(n) * np.exp(-6.9 * t / rt60) * 0.3  # -60 dB at rt60
    rir[0] = 1.0
    wet = np.fft.irfft(np.fft.rfft(x, len(x) + n) * np.fft.rfft(rir, len(x) + n), len(x) + n)[: len(x)]
    return (wet / (np.abs(wet).max() + 1e-9) * np.abs(x).max()).astype(np.float32)


def augment(x: np.ndarray, rng: np.random.Generator, *, noise_prob: float = 0.5, snr_db=(5.0, 30.0),
            reverb_prob: float = 0.3, rt60=(0.15, 0.6), gain_db=(-12.0, 0.0)) -> tuple[np.ndarray, dict]:
    """Reverb, noise at a random SNR and gain, each drawn from `rng`; returns the clip and what was done."""
    info: dict = {}
    if rng.random() < reverb_prob:
        info["rt60"] = round(float(rng.uniform(*rt60)), 3)
        x = reverb(x, rng, info["rt60"])
    if rng.random() < noise_prob:
        colour = ["white", "pink", "brown"][int(rng.integers(3))]
        snr = float(rng.uniform(*snr_db))
        signal_rms = np.sqrt((x ** 2).mean()) + 1e-9
        x = x + coloured_noise(len(x), colour, rng) * signal_rms / (10 ** (snr / 20))
        info.update(noise=colour, snr_db=round(snr, 2))
    gain = float(rng.uniform(*gain_db))
    info["gain_db"] = round(gain, 2)
    x = x * (10 ** (gain / 20))
    return np.clip(x, -1.0, 1.0).astype(np.float32), info

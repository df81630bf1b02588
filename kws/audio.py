"""Read and validate wav clips: 16 kHz mono int16, padded or cropped to the clip length.

Bad files raise `BadAudio` with the path and what was expected, so a loader can count and
report them instead of silently training on garbage.
"""
from math import gcd

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly


class BadAudio(ValueError):
    pass


def read_clip(path, sample_rate=16000, clip_samples=16000, resample=True):
    """int16 [clip_samples]. Wrong rates are resampled (or refused with resample=False); stereo,
    empty, truncated and corrupt files are refused."""
    data, rate = read_raw(path)
    if data.shape[1] != 1:
        raise BadAudio(f"{path}: {data.shape[1]} channels, expected mono")
    wave = data[:, 0]
    if len(wave) == 0:
        raise BadAudio(f"{path}: no samples")
    if rate != sample_rate:
        if not resample:
            raise BadAudio(f"{path}: sample rate {rate} Hz, expected {sample_rate} Hz")
        wave = resample_int16(wave, rate, sample_rate)
    return fit_length(wave, clip_samples)


def read_raw(path):
    try:
        return sf.read(str(path), dtype="int16", always_2d=True)
    except Exception as e:  # soundfile raises several types for truncated/corrupt files
        raise BadAudio(f"{path}: unreadable wav ({e})") from None


def resample_int16(wave, rate_in, rate_out):
    g = gcd(rate_in, rate_out)
    y = resample_poly(wave.astype(np.float32), rate_out // g, rate_in // g)
    return np.clip(np.round(y), -32768, 32767).astype(np.int16)


def fit_length(wave, n):
    """Zero-pad at the end (short GSC clips) or crop the centre (long recordings) to n samples."""
    if len(wave) >= n:
        start = (len(wave) - n) // 2
        return wave[start:start + n]
    return np.pad(wave, (0, n - len(wave)))


def read_long(path, sample_rate=16000):
    """A whole recording (background noise) as int16, resampled if needed."""
    data, rate = read_raw(path)
    wave = data.mean(axis=1).astype(np.int16) if data.shape[1] > 1 else data[:, 0]
    return resample_int16(wave, rate, sample_rate) if rate != sample_rate else wave


def write_clip(path, wave, sample_rate=16000):
    sf.write(str(path), np.asarray(wave, dtype=np.int16), sample_rate, subtype="PCM_16")

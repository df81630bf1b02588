"""Read and validate wav clips: 16 kHz mono int16, padded or cropped to the clip length.

Bad files raise `BadAudio` with the path and what was wrong, so a loader can count and report
them instead of silently training on garbage.
"""
import wave as wavfile
from math import gcd
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly


class BadAudio(ValueError):
    """A file that cannot be used as a clip; `reason` says why ("truncated: ...", "empty file")."""

    def __init__(self, path, reason):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = str(path), reason


def kind_of(reason):
    """A `BadAudio` reason without its details, for counting: "truncated", "empty file", ..."""
    return reason.split(":")[0]


def read_clip(path, sample_rate=16000, clip_samples=16000, resample=True):
    """(int16 [clip_samples], the file's own sample rate). Other rates are resampled (or refused
    with resample=False); stereo, empty, truncated and corrupt files are refused."""
    data, rate = read_raw(path)
    check_complete(path, len(data))
    if data.shape[1] != 1:
        raise BadAudio(path, f"not mono: {data.shape[1]} channels")
    clip = data[:, 0]
    if len(clip) == 0:
        raise BadAudio(path, "no samples: a header without audio")
    if rate != sample_rate:
        if not resample:
            raise BadAudio(path, f"wrong sample rate: {rate} Hz, expected {sample_rate} Hz")
        clip = resample_int16(clip, rate, sample_rate)
    return fit_length(clip, clip_samples), rate


def read_raw(path):
    try:
        return sf.read(str(path), dtype="int16", always_2d=True)
    except Exception as e:  # soundfile raises several types for truncated/corrupt files
        if Path(path).is_file() and Path(path).stat().st_size == 0:
            raise BadAudio(path, "empty file") from None
        raise BadAudio(path, f"unreadable: {e}") from None


def check_complete(path, frames_read):
    """Refuse a wav whose header promises more audio than the file holds (a cut-off copy).

    libsndfile quietly shortens the data chunk to what is there, so the promise is read from the
    header with the stdlib `wave` module; files it cannot parse (not PCM WAV) are not checked."""
    try:
        with wavfile.open(str(path)) as w:
            promised, frame_bytes = w.getnframes(), w.getsampwidth() * w.getnchannels()
    except (wavfile.Error, EOFError):
        return
    if promised > frames_read:
        raise BadAudio(path, f"truncated: header says {promised * frame_bytes} data bytes, "
                             f"file holds {frames_read * frame_bytes}")


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

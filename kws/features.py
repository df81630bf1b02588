"""Log-mel / MFCC front end with torch.stft and a hand-built mel filterbank.

Hand-written because torchaudio does not import beside CPU torch here; tests check it against
the textbook (HTK) definitions. The feature config is a plain dict that travels inside every
model checkpoint and beside every exported model, so the front end can never drift.
"""
import math

import torch

DEFAULT_CONFIG = {
    "sample_rate": 16000, "clip_samples": 16000, "kind": "logmel", "n_mels": 40, "n_mfcc": 40,
    "win_ms": 30.0, "hop_ms": 10.0, "n_fft": 512, "f_min": 20.0, "f_max": 7600.0,
    "log_offset": 1e-6, "mean": 0.0, "std": 1.0,
}
KINDS = ("logmel", "mfcc")
# STFT framing, named once: the front end uses it and describe() hands it to firmware.
PERIODIC_WINDOW = True  # Hann, periodic (torch.hann_window's default, librosa's too)
CENTER, PAD_MODE = True, "constant"  # frames centred on t * hop: the clip zero-padded by n_fft // 2 each side


def make_config(**overrides):
    """Full, validated feature config from params (unknown keys and bad values raise)."""
    unknown = set(overrides) - set(DEFAULT_CONFIG)
    if unknown:
        raise ValueError(f"features: unknown parameter(s) {sorted(unknown)}; expected {sorted(DEFAULT_CONFIG)}")
    cfg = {**DEFAULT_CONFIG, **overrides}
    if cfg["kind"] not in KINDS:
        raise ValueError(f"features.kind must be one of {KINDS}, got {cfg['kind']!r}")
    win, hop = win_length(cfg), hop_length(cfg)
    if not 0 < hop <= win <= cfg["n_fft"]:
        raise ValueError(f"features: need 0 < hop ({hop}) <= window ({win}) <= n_fft ({cfg['n_fft']}) samples")
    if not 0 <= cfg["f_min"] < cfg["f_max"] <= cfg["sample_rate"] / 2:
        raise ValueError(f"features: need 0 <= f_min < f_max <= {cfg['sample_rate'] / 2} Hz")
    if cfg["kind"] == "mfcc" and not 0 < cfg["n_mfcc"] <= cfg["n_mels"]:
        raise ValueError("features.n_mfcc must be in 1..n_mels")
    return cfg


def win_length(cfg):
    return int(round(cfg["sample_rate"] * cfg["win_ms"] / 1000))


def hop_length(cfg):
    return int(round(cfg["sample_rate"] * cfg["hop_ms"] / 1000))


def n_channels(cfg):
    return cfg["n_mfcc"] if cfg["kind"] == "mfcc" else cfg["n_mels"]


def n_frames(cfg):
    return 1 + cfg["clip_samples"] // hop_length(cfg)


def hz_to_mel(f):
    """HTK mel of f Hz, a float or a tensor."""
    return 2595.0 * (torch.log10 if torch.is_tensor(f) else math.log10)(1.0 + f / 700.0)


def mel_to_hz(m):
    return 700.0 * (10 ** (m / 2595.0) - 1.0)


def mel_edges(f_min, f_max, n_mels):
    """The n_mels + 2 band edges in Hz, evenly spaced in mel (float64): band k rises from edge k,
    peaks at edge k + 1 (its centre) and falls to edge k + 2."""
    return mel_to_hz(torch.linspace(hz_to_mel(f_min), hz_to_mel(f_max), n_mels + 2, dtype=torch.float64))


def mel_filterbank(cfg):
    """[n_mels, n_fft//2+1] triangular HTK-mel filters, peak 1, edges evenly spaced in mel."""
    n_bins = cfg["n_fft"] // 2 + 1
    fft_hz = torch.linspace(0, cfg["sample_rate"] / 2, n_bins, dtype=torch.float64)
    edges = mel_edges(cfg["f_min"], cfg["f_max"], cfg["n_mels"])
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    up = (fft_hz - lo) / (mid - lo)
    down = (hi - fft_hz) / (hi - mid)
    return torch.clamp(torch.minimum(up, down), min=0).float()


def dct_matrix(n_mfcc, n_mels):
    """Orthonormal DCT-II, [n_mfcc, n_mels]."""
    n = torch.arange(n_mels, dtype=torch.float64)
    k = torch.arange(n_mfcc, dtype=torch.float64)[:, None]
    d = torch.cos(math.pi / n_mels * (n + 0.5) * k) * math.sqrt(2.0 / n_mels)
    d[0] /= math.sqrt(2.0)
    return d.float()


class FrontEnd(torch.nn.Module):
    """waveform [B, samples] float in [-1, 1] -> normalized features [B, channels, frames], in two
    halves: `power` (STFT -> mel power) and `finish` (log, DCT, normalization). Training
    augments in between, so the STFT runs once per clip instead of once per clip and epoch."""

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.register_buffer("window", torch.hann_window(win_length(cfg), periodic=PERIODIC_WINDOW))
        self.register_buffer("mel", mel_filterbank(cfg))
        if cfg["kind"] == "mfcc":
            self.register_buffer("dct", dct_matrix(cfg["n_mfcc"], cfg["n_mels"]))

    def power(self, wave, center=CENTER):
        """center=False: frames start at sample 0 with no padding (kws.stream pads the stream's
        start itself and frames it block by block)."""
        c = self.cfg
        spec = torch.stft(wave, c["n_fft"], hop_length(c), win_length(c), self.window,
                          center=center, pad_mode=PAD_MODE, return_complex=True)
        return torch.matmul(self.mel, spec.real ** 2 + spec.imag ** 2)

    def finish(self, power):
        c = self.cfg
        feats = torch.log(power + c["log_offset"])
        if c["kind"] == "mfcc":
            feats = torch.matmul(self.dct, feats)
        return (feats - c["mean"]) / c["std"]

    def forward(self, wave):
        return self.finish(self.power(wave))


def describe(cfg):
    """The front end as a port needs it, every choice spelt out, with its constant matrices as
    numbers: what FrontEnd computes, written for someone who will not read this file."""
    win, n_fft = win_length(cfg), cfg["n_fft"]
    spec = {
        "sample_rate": cfg["sample_rate"], "clip_samples": cfg["clip_samples"],
        "input": "int16 PCM, mono; x = pcm / 32768.0",
        "window": {"type": "hann", "periodic": PERIODIC_WINDOW, "length": win,
                   "formula": "w[n] = 0.5 - 0.5 * cos(2 * pi * n / length), n = 0..length-1",
                   "placement": f"centred in the n_fft frame: zero-padded by {(n_fft - win) // 2} samples on the left "
                                f"and {n_fft - win - (n_fft - win) // 2} on the right"},
        "win_length": win, "hop_length": hop_length(cfg), "n_fft": n_fft, "n_frames": n_frames(cfg),
        "center": CENTER, "pad_mode": PAD_MODE,
        "framing": f"frame t covers samples [t * hop - n_fft / 2, t * hop + n_fft / 2) of the clip; samples "
                   f"outside the clip are 0 ({PAD_MODE} padding); frames t = 0..n_frames-1",
        "spectrum": "power: |rfft(frame * window, n_fft)|^2, n_fft // 2 + 1 bins, no scaling",
        "mel": {"scale": "htk", "hz_to_mel": "2595 * log10(1 + f / 700)", "n_mels": cfg["n_mels"],
                "f_min": cfg["f_min"], "f_max": cfg["f_max"],
                "filters": "triangular, edges evenly spaced in mel between f_min and f_max, peak 1, "
                           "no area (Slaney) normalization; bin k is at k * sample_rate / n_fft Hz",
                "matrix": mel_filterbank(cfg).tolist()},
        "log": {"function": "natural log", "offset": cfg["log_offset"], "formula": "log(mel_power + offset)"},
        "kind": cfg["kind"],
        "normalization": {"mean": cfg["mean"], "std": cfg["std"],
                          "formula": "(feature - mean) / std, one scalar pair over all channels and frames"},
        "layout": f"[channels, frames] = [{n_channels(cfg)}, {n_frames(cfg)}], row-major: "
                  f"element (c, t) at c * {n_frames(cfg)} + t",
    }
    if cfg["kind"] == "mfcc":
        spec["dct"] = {"type": "DCT-II, orthonormal, applied after the log over the mel axis", "n_mfcc": cfg["n_mfcc"],
                       "matrix": dct_matrix(cfg["n_mfcc"], cfg["n_mels"]).tolist()}
    return spec


def in_batches(fn, wave, channels, cfg, batch_size=256):
    """fn applied to many clips (int16 or float array [N, samples]) batch by batch, concatenated
    into [N, channels, frames]. Batches of 256 run fastest here (larger ones fall out of cache)."""
    if len(wave) == 0:
        return torch.empty(0, channels, n_frames(cfg))
    with torch.no_grad():
        return torch.cat([fn(to_float(torch.as_tensor(wave[i:i + batch_size]))) for i in range(0, len(wave), batch_size)])


def compute(wave, cfg):
    """Normalized features of many clips, as a float tensor."""
    return in_batches(FrontEnd(cfg), wave, n_channels(cfg), cfg)


def mel_power(wave, cfg):
    """Mel power spectra of many clips [N, n_mels, frames]: the un-augmented start of training."""
    return in_batches(FrontEnd(cfg).power, wave, cfg["n_mels"], cfg)


def to_float(wave):
    """int16 PCM -> float in [-1, 1); float passes through."""
    return wave.float() / 32768.0 if wave.dtype == torch.int16 else wave.float()


def norm_stats(power, cfg, batch_size=4096):
    """Global mean and std of the un-normalized features of many mel power spectra (float64 sums)."""
    front, total, sq, n = FrontEnd(make_config(**{**cfg, "mean": 0.0, "std": 1.0})), 0.0, 0.0, 0
    with torch.no_grad():
        for i in range(0, len(power), batch_size):
            f = front.finish(power[i:i + batch_size]).double()
            total, sq, n = total + f.sum().item(), sq + (f * f).sum().item(), n + f.numel()
    mean = total / n
    return mean, max((sq / n - mean * mean) ** 0.5, 1e-6)

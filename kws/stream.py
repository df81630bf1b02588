"""Streaming keyword detection, run as firmware runs it: audio arrives in blocks, the front end
turns each block into new feature frames (a frame is computed once, never again for the next
window), a window of the last second's frames is scored every hop, posteriors are averaged over
the last few windows, and a keyword fires when its smoothed posterior reaches its threshold, then
stays quiet for a refractory period.

Framing: frame t of a stream covers samples [t * hop - n_fft / 2, t * hop + n_fft / 2), zeros
before the stream starts: the clip front end's framing (kws.features) with the clip replaced by
the whole stream, so the stream's frames are the clip-level front end's frames of the same audio.
A window starting at frame f therefore equals the clip-level features of the 1-s excerpt at
sample f * hop in all but its first and last two frames, where the excerpt's front end sees zero
padding and the stream sees the neighbouring audio (as a firmware ring buffer does).

Keywords fire independently (each its own threshold and refractory timer), so a keyword's miss
rate and false accepts depend on its own threshold only: its DET curve is exact, and per-keyword
thresholds are a point on every keyword's curve.
"""
import json
from pathlib import Path

import numpy as np
import torch
from scipy.special import softmax

from kws import checkpoint, features
from kws.sources import CLASSES, KEYWORDS

BLOCK_S = 10.0  # audio per block when scoring files: windows are batched per block, memory stays small


def model_config(model_path) -> dict:
    """The feature config a model was trained with: inside a .pt checkpoint, or the
    feature_config.json the export and QAT stages write beside every .onnx."""
    path = Path(model_path)
    if not path.is_file():
        raise FileNotFoundError(f"model {path} not found; expected a .pt checkpoint or an .onnx file")
    if path.suffix == ".pt":
        return checkpoint.load(path)[1]["feature_config"]
    if path.suffix != ".onnx":
        raise ValueError(f"model {path}: expected a .pt checkpoint or an .onnx file")
    beside = path.parent / "feature_config.json"
    if not beside.is_file():
        raise FileNotFoundError(f"{beside} not found: an .onnx model needs the feature config it was "
                                "trained with beside it (the export and qat stages write one)")
    return json.loads(beside.read_text())


def start(cfg: dict) -> dict:
    """A fresh front-end state: the samples not yet framed, starting with the stream's zero padding."""
    return {"front": features.FrontEnd(cfg), "pending": torch.zeros(cfg["n_fft"] // 2)}


def push(state: dict, samples) -> torch.Tensor:
    """Append samples (int16 or float in [-1, 1]); return the normalized features of every frame
    they complete, [channels, new frames] (possibly none)."""
    front = state["front"]
    n_fft, hop = front.cfg["n_fft"], features.hop_length(front.cfg)
    buf = torch.cat([state["pending"], features.to_float(torch.as_tensor(np.asarray(samples)))])
    n = 0 if len(buf) < n_fft else 1 + (len(buf) - n_fft) // hop
    state["pending"] = buf[n * hop:]
    if n == 0:
        return torch.empty(features.n_channels(front.cfg), 0)
    with torch.no_grad():
        return front.finish(front.power(buf[:(n - 1) * hop + n_fft], center=False))


def flush(state: dict) -> torch.Tensor:
    """The last frames of a finished stream: its end padded as the clip front end pads a clip's."""
    return push(state, torch.zeros(state["front"].cfg["n_fft"] // 2))


def stream_features(wave, cfg: dict, block_samples: int) -> torch.Tensor:
    """Features [channels, frames] of a whole recording pushed `block_samples` at a time, flushed."""
    state = start(cfg)
    frames = [push(state, wave[i:i + block_samples]) for i in range(0, len(wave), block_samples)]
    return torch.cat(frames + [flush(state)], dim=1)


def hop_frames(cfg: dict, hop_ms: float) -> int:
    """Front-end frames per detector hop; the hop must be a whole number of frames."""
    step = hop_ms / cfg["hop_ms"]
    if step < 1 or abs(step - round(step)) > 1e-9:
        raise ValueError(f"hop_ms={hop_ms} must be a positive multiple of the front end's {cfg['hop_ms']} ms frame hop")
    return int(round(step))


def posteriors(scorers: dict, wave, cfg: dict, hop_ms: float, block_s: float = BLOCK_S):
    """(end times in s [K], {name: class posteriors [K, classes] float64}) of the 1-s windows every
    hop_ms over a recording (int16 or float, any length; shorter than a clip: padded like a clip),
    for each of `scorers` {name: features -> logits} (models sharing one front end share its
    frames). The audio is pushed a block at a time; each block's complete windows are scored as
    one batch."""
    wave = np.asarray(wave)
    if len(wave) < cfg["clip_samples"]:
        wave = np.pad(wave, (0, cfg["clip_samples"] - len(wave)))
    width, step = features.n_frames(cfg), hop_frames(cfg, hop_ms)
    block = max(1, int(block_s * cfg["sample_rate"]))
    state, kept, first = start(cfg), torch.empty(features.n_channels(cfg), 0), 0  # kept[:, 0] is frame `first`
    starts, probs = [], {name: [] for name in scorers}
    for i in range(0, len(wave) + block, block):
        new = push(state, wave[i:i + block]) if i < len(wave) else flush(state)
        kept = torch.cat([kept, new], dim=1)
        n = 0 if kept.shape[1] < width else 1 + (kept.shape[1] - width) // step
        if n:
            x = kept.unfold(1, width, step)[:, :n].permute(1, 0, 2).contiguous()  # [n, channels, width]
            for name, score in scorers.items():
                probs[name].append(softmax(np.asarray(score(x), np.float64), axis=1))
            starts.append(first + step * np.arange(n))
            kept, first = kept[:, n * step:], first + n * step
    starts = np.concatenate(starts)
    hop = features.hop_length(cfg)
    return (starts * hop + cfg["clip_samples"]) / cfg["sample_rate"], {n: np.concatenate(p) for n, p in probs.items()}


def smooth(probs: np.ndarray, windows: int) -> np.ndarray:
    """Causal moving average of posteriors over the last `windows` windows (fewer at the start)."""
    if windows < 1:
        raise ValueError(f"smoothing windows must be >= 1, got {windows}")
    c = np.cumsum(np.vstack([np.zeros((1, probs.shape[1])), probs]), axis=0)
    idx = np.arange(1, len(probs) + 1)
    lo = np.maximum(idx - windows, 0)
    return (c[idx] - c[lo]) / (idx - lo)[:, None]


def triggers(trace: np.ndarray, threshold: float, refractory: int) -> np.ndarray:
    """Window indices where one keyword fires: its smoothed posterior >= threshold and at least
    `refractory` windows after its previous trigger."""
    above = np.flatnonzero(trace >= threshold)
    fired, i = [], 0
    while i < len(above):
        fired.append(above[i])
        i = np.searchsorted(above, above[i] + refractory)
    return np.array(fired, dtype=int)


def refractory_windows(refractory_s: float, hop_ms: float) -> int:
    return max(1, int(np.ceil(refractory_s * 1000 / hop_ms - 1e-9)))


def detect(times: np.ndarray, smoothed: np.ndarray, thresholds: dict, refractory_s: float, hop_ms: float) -> list:
    """Detections [{time_s, keyword, score}] in time order: `times` are window end times (when a
    device would fire), `smoothed` the smoothed posteriors, `thresholds` {keyword: threshold}."""
    check_thresholds(thresholds)
    r = refractory_windows(refractory_s, hop_ms)
    found = [{"time_s": float(times[i]), "keyword": k, "score": float(smoothed[i, CLASSES.index(k)])}
             for k, thr in thresholds.items() for i in triggers(smoothed[:, CLASSES.index(k)], thr, r)]
    return sorted(found, key=lambda d: (d["time_s"], d["keyword"]))


def check_thresholds(thresholds: dict) -> None:
    """{keyword: threshold} names keywords only, each with a posterior threshold in (0, 1]."""
    unknown = set(thresholds) - set(KEYWORDS)
    if unknown:
        raise ValueError(f"thresholds for {sorted(unknown)}: not keywords; expected some of {KEYWORDS}")
    bad = {k: v for k, v in thresholds.items() if not 0 < v <= 1}
    if bad:
        raise ValueError(f"thresholds {bad}: expected posteriors in (0, 1]")

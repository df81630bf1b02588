"""Keyword detections in a recording of any length, with the streaming detector (kws.stream):

    python -m kws.detect MODEL AUDIO.wav [--thresholds metrics/stream.json] [--threshold 0.9]

MODEL is a .pt checkpoint or an .onnx file with its feature_config.json beside it. Audio: any
format libsndfile reads, any sample rate (resampled to the model's with scipy's polyphase
filter), mono or multichannel (channels are averaged to mono). Prints one line per detection:
the time it fires (end of the 1-s window, seconds from the start), the keyword and its smoothed
posterior. `--thresholds` takes a {keyword: threshold} JSON file, or the stream stage's
metrics/stream.json, whose operating point (thresholds chosen on validation streams, hop,
smoothing, refractory period) is used for the model at the same path.
"""
import argparse
import json
import sys
from pathlib import Path

import numpy as np

from kws import audio, evaluation, stream
from kws.sources import KEYWORDS

# the stream stage's defaults (params.yaml `stream`; tests/test_detect.py holds them together), so a plain
# thresholds file runs the detector its thresholds were chosen with
DEFAULTS = {"hop_ms": 100.0, "smooth_windows": 3, "refractory_s": 1.0}
DEFAULT_THRESHOLD = 0.9


def read_audio(path, sample_rate: int) -> np.ndarray:
    """int16 mono at `sample_rate`: channels averaged, other rates resampled; unreadable or empty
    files raise audio.BadAudio naming the file."""
    if not Path(path).is_file():
        raise audio.BadAudio(path, "no such file")
    wave = audio.read_long(path, sample_rate)
    if len(wave) == 0:
        raise audio.BadAudio(path, "no samples")
    return wave


def operating_point(path, model_path) -> dict:
    """{thresholds, hop_ms, smooth_windows, refractory_s} from a thresholds file: a plain
    {keyword: threshold} mapping, or metrics/stream.json (the entry for this model's path)."""
    try:
        d = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"--thresholds {path}: not a readable JSON file ({e})") from None
    if "models" not in d:
        return {**DEFAULTS, "thresholds": {k: float(v) for k, v in d.items()}}
    for m in d["models"].values():
        if Path(m["path"]).resolve() == Path(model_path).resolve():
            return {**{k: d["detector"][k] for k in DEFAULTS}, "thresholds": m["thresholds"]}
    raise ValueError(f"--thresholds {path} holds operating points for {[m['path'] for m in d['models'].values()]}, "
                     f"not for {model_path}")


def run(model_path, audio_path, point: dict) -> tuple:
    """(detections, seconds of audio) of one recording."""
    cfg = stream.model_config(model_path)
    wave = read_audio(audio_path, cfg["sample_rate"])
    times, probs = stream.posteriors({"model": evaluation.logits_fn(model_path, cfg)}, wave, cfg, point["hop_ms"])
    smoothed = stream.smooth(probs["model"], point["smooth_windows"])
    found = stream.detect(times, smoothed, point["thresholds"], point["refractory_s"], point["hop_ms"])
    return found, len(wave) / cfg["sample_rate"]


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m kws.detect", description=__doc__.split("\n\n")[0])
    ap.add_argument("model", help=".pt checkpoint or .onnx model (feature_config.json beside it)")
    ap.add_argument("audio", help="recording, any length, sample rate and channel count")
    ap.add_argument("--thresholds", help="JSON {keyword: threshold}, or metrics/stream.json")
    ap.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD,
                    help=f"one threshold for every keyword, without --thresholds (default {DEFAULT_THRESHOLD})")
    for k, v in DEFAULTS.items():
        ap.add_argument(f"--{k.replace('_', '-')}", type=type(v), help=f"(default {v}, or the thresholds file's)")
    a = ap.parse_args(argv)
    try:
        point = (operating_point(a.thresholds, a.model) if a.thresholds
                 else {**DEFAULTS, "thresholds": dict.fromkeys(KEYWORDS, a.threshold)})
        point.update({k: getattr(a, k) for k in DEFAULTS if getattr(a, k) is not None})
        stream.check_thresholds(point["thresholds"])
        found, seconds = run(a.model, a.audio, point)
    except (audio.BadAudio, FileNotFoundError, ValueError) as e:
        sys.exit(f"kws.detect: {e}")
    print(f"# {a.audio}: {seconds:.1f} s, {len(found)} detections (hop {point['hop_ms']:g} ms, "
          f"smoothing {point['smooth_windows']} windows, refractory {point['refractory_s']:g} s)")
    print("# time_s\tkeyword\tscore")
    for d in found:
        print(f"{d['time_s']:.2f}\t{d['keyword']}\t{d['score']:.3f}")
    return found


if __name__ == "__main__":
    main()

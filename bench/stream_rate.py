"""Benchmark: how long the streaming detector (kws.stream) takes per hour of audio: incremental
front end, one 1-s window every hop, windows batched per block, INT8 ONNX scoring. The audio is
noise (the rate does not depend on what is said). Figures are noisy on a shared machine.

    python bench/stream_rate.py [MODEL] [--minutes 10] [--hop-ms 100] [--threads 2]

MODEL defaults to the deployed INT8 model of metrics/summary.json."""
import argparse
import os
import time

import numpy as np

from kws import chain, detect, evaluation, features, io, stream


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model", nargs="?")
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--hop-ms", type=float, default=detect.DEFAULTS["hop_ms"])
    ap.add_argument("--threads", type=int, default=2, help="torch threads (ORT uses its own pool)")
    a = ap.parse_args()
    import torch
    torch.set_num_threads(a.threads)
    model = a.model or chain.MODELS[io.read_json("metrics/summary.json")["deployed"]][0]
    cfg = stream.model_config(model)
    wave = np.random.default_rng(0).normal(0, 1000, int(a.minutes * 60 * cfg["sample_rate"])).astype(np.int16)
    score = evaluation.logits_fn(model, cfg)
    t0 = time.perf_counter()
    feats = stream.stream_features(wave, cfg, int(stream.BLOCK_S * cfg["sample_rate"]))
    t_feat = time.perf_counter() - t0
    t0 = time.perf_counter()
    times, _ = stream.posteriors({"model": score}, wave, cfg, a.hop_ms)
    t_all = time.perf_counter() - t0
    per_hour = 60 / a.minutes
    print(f"{model}: {a.minutes:g} min of audio, hop {a.hop_ms:g} ms -> {len(times)} windows "
          f"({features.n_channels(cfg)}x{feats.shape[1]} frames), {os.cpu_count()} CPUs visible")
    print(f"front end alone: {t_feat:.2f} s; front end + scoring: {t_all:.2f} s "
          f"({len(times) / t_all:.0f} windows/s) = {t_all * per_hour:.1f} s per hour of audio")


if __name__ == "__main__":
    main()

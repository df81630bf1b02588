"""features: feature config with train-set normalization, clean val/test/calibration features."""
import time

import numpy as np
import torch

from kws import dataset, features, io


def main():
    p = io.params("features")
    t0 = time.time()
    wave, manifest, _ = dataset.load("data/dataset")
    cfg = features.make_config(**{k: v for k, v in p.items() if k != "calib_clips"})
    train = dataset.split_index(manifest, "train")
    cfg["mean"], cfg["std"] = features.norm_stats(wave[train], cfg)
    io.FEATURES.mkdir(parents=True, exist_ok=True)
    io.write_json(io.FEATURES / "config.json", cfg)
    # Calibration clips for post-training quantization: a fixed random train subset.
    rng = np.random.default_rng(0)
    calib = np.sort(rng.choice(train, size=min(p["calib_clips"], len(train)), replace=False))
    splits = {"val": dataset.split_index(manifest, "val"), "test": dataset.split_index(manifest, "test"), "calib": calib}
    labels = manifest["label_index"].to_numpy()
    for name, idx in splits.items():
        x = features.compute(wave[idx], cfg)
        torch.save({"x": x, "y": torch.as_tensor(labels[idx])}, io.FEATURES / f"{name}.pt")
        print(f"[features] {name:5s} {tuple(x.shape)}", flush=True)
    print(f"[features] {cfg['kind']} {features.n_channels(cfg)}x{features.n_frames(cfg)}, "
          f"mean {cfg['mean']:.3f} std {cfg['std']:.3f}, {time.time() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    main()

"""features: feature config with train-set normalization, clean val/test/calibration features,
and the train split's mel power spectra (with the noise chunks') that training augments."""
import time

import numpy as np
import torch

from kws import dataset, features, io, sources


def main():
    p = io.params("features")
    t0 = time.time()
    wave, manifest, noise = dataset.load("data/dataset")
    labels = manifest["label_index"].to_numpy()
    cfg = features.make_config(**{k: v for k, v in p.items() if k != "calib_clips"})
    train = dataset.split_index(manifest, "train")
    power = features.mel_power(wave[train], cfg)
    cfg["mean"], cfg["std"] = features.norm_stats(power, cfg)
    io.FEATURES.mkdir(parents=True, exist_ok=True)
    io.write_json(io.FEATURES / "config.json", cfg)
    synthetic = torch.as_tensor(manifest["source"].to_numpy()[train] == sources.SYNTHETIC)
    io.save_train(power, torch.as_tensor(labels[train]), features.mel_power(noise, cfg), synthetic)
    print(f"[features] train mel power {tuple(power.shape)}, {len(noise)} noise chunks", flush=True)
    # Calibration clips for post-training quantization: a fixed random train subset.
    rng = np.random.default_rng(0)
    calib = np.sort(rng.choice(train, size=min(p["calib_clips"], len(train)), replace=False))
    splits = {"val": dataset.split_index(manifest, "val"), "test": dataset.split_index(manifest, "test"), "calib": calib}
    for name, idx in splits.items():
        x = features.compute(wave[idx], cfg)
        io.save_split(name, x, torch.as_tensor(labels[idx]))
        print(f"[features] {name:5s} {tuple(x.shape)}", flush=True)
    print(f"[features] {cfg['kind']} {features.n_channels(cfg)}x{features.n_frames(cfg)}, "
          f"mean {cfg['mean']:.3f} std {cfg['std']:.3f}, {time.time() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    main()

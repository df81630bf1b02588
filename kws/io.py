"""Small file helpers the stage scripts share: params blocks, JSON metrics, feature tensors."""
import json
from pathlib import Path

import torch
import yaml

from kws import atomic
from kws.params import check

PARAMS = "params.yaml"
FEATURES = Path("data/features")


def params(block):
    """One block of params.yaml (a stage's own parameters), checked against kws.params.SCHEMA:
    stages call this first, so a bad value stops them before any work."""
    return check(yaml.safe_load(Path(PARAMS).read_text()), block, PARAMS)


def write_json(path, obj):
    atomic.write_text(path, json.dumps(obj, indent=2, default=float) + "\n")


def read_json(path):
    return json.loads(Path(path).read_text())


def feature_config():
    return read_json(FEATURES / "config.json")


def save_split(split, x, y):
    atomic.torch_save({"x": x, "y": y}, FEATURES / f"{split}.pt")


def load_split(split):
    """(features [N, C, T] float, labels [N] long) of a precomputed split: val, test or calib."""
    d = torch.load(FEATURES / f"{split}.pt", weights_only=True)
    return d["x"], d["y"]


def save_train(power, y, noise_power, synthetic):
    atomic.torch_save({"power": power, "y": y, "noise_power": noise_power, "synthetic": synthetic}, FEATURES / "train.pt")


def load_train():
    """(mel power [N, n_mels, T], labels [N], noise mel power [M, n_mels, T], synthetic [N] bool:
    espeak-ng speech) of the train split, memory-mapped: at Speech Commands scale the spectra are
    about a gigabyte."""
    d = torch.load(FEATURES / "train.pt", weights_only=True, mmap=True)
    return d["power"], d["y"], d["noise_power"], d["synthetic"]

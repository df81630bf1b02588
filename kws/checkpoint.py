"""A model file carries what is needed to use it: architecture and exact widths, class list,
feature config, and where it came from."""
from pathlib import Path

import torch

from kws import atomic, features, models
from kws.sources import CLASSES


def save(path, model, arch, kwargs, feature_config, **info):
    atomic.torch_save({"arch": arch, "kwargs": kwargs, "classes": CLASSES, "feature_config": feature_config,
                "state_dict": model.state_dict(), "info": info}, path)


def load(path, feature_config=None):
    """(model in eval mode, checkpoint dict). Refuses a file that does not fit this pipeline:
    other classes, other input shape, or (when given) another feature config."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"model checkpoint {path} not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"{path}: not a checkpoint this pipeline can read ({e})") from None
    missing = {"arch", "kwargs", "classes", "feature_config", "state_dict"} - set(ckpt)
    if missing:
        raise ValueError(f"{path}: checkpoint lacks {sorted(missing)}; expected one written by kws.checkpoint.save")
    if list(ckpt["classes"]) != CLASSES:
        raise ValueError(f"{path}: classes {ckpt['classes']} differ from the pipeline's {CLASSES}")
    if feature_config is not None and ckpt["feature_config"] != feature_config:
        diff = {k: (ckpt["feature_config"].get(k), v) for k, v in feature_config.items() if ckpt["feature_config"].get(k) != v}
        raise ValueError(f"{path}: feature config differs from data/features/config.json: {diff} (checkpoint, data)")
    model = models.build(ckpt["arch"], ckpt["kwargs"])
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as e:
        raise ValueError(f"{path}: weights do not fit {ckpt['arch']} {ckpt['kwargs']}: {e}") from None
    bad = [k for k, v in model.state_dict().items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:  # every stage reads its models here: a diverged model goes no further
        raise ValueError(f"{path}: weights are not finite (NaN/inf in {bad[:3]}): a diverged training run; "
                         "expected a trained model")
    return model.eval(), ckpt


def adopt(path, feature_config):
    """A trained model we received: it must load (finite weights, our classes and feature config)
    and map one clip of our features to one finite score per class."""
    model, ckpt = load(path, feature_config)
    with torch.no_grad():
        out = model(torch.zeros(1, features.n_channels(feature_config), features.n_frames(feature_config)))
    if tuple(out.shape) != (1, len(CLASSES)):
        raise ValueError(f"{path}: output shape {tuple(out.shape)} for one clip, expected (1, {len(CLASSES)})")
    if not torch.isfinite(out).all():
        raise ValueError(f"{path}: outputs are not finite on a silent clip (overflow in its weights?); "
                         "expected a trained model")
    return model, ckpt

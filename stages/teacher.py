"""teacher: train TC-ResNet8 (or validate and adopt a received checkpoint) -> models/teacher.pt.
teacher replicas: distill.teacher_replicas more teachers of the same recipe, seeds teacher.seed + 1,
+ 2, ... -> models/teacher_replicas/ (more independent soft targets for distill.teachers=ensemble)."""
import sys
import time
from pathlib import Path

from kws import chain, checkpoint, features, io, models, train
from kws.sources import CLASSES

OUT = "models/teacher.pt"
REPLICAS = Path(chain.TEACHER_REPLICAS)


def train_teacher(p, augment, cfg, seed, name, curves=True):
    """(model, arch, kwargs, training result) of the teacher block's recipe from `seed`."""
    arch, kwargs = models.preset(p["model"], p["width"], features.n_channels(cfg), len(CLASSES))
    model = models.build(arch, kwargs, seed)
    print(f"[{name}] training {p['model']} x{p['width']} ({models.n_params(model)} parameters, seed {seed})",
          flush=True)
    result = train.train_on_dataset(model, {**p, "seed": seed}, augment, name, pretrain_epochs=p["pretrain_epochs"],
                                    curves=curves)
    return model, arch, kwargs, result


def main():
    p, augment, cfg = io.params("teacher"), io.params("augment"), io.feature_config()
    t0 = time.time()
    if p["checkpoint"]:
        model, ckpt = checkpoint.adopt(p["checkpoint"], cfg)
        arch, kwargs = ckpt["arch"], ckpt["kwargs"]
        result = {"val_acc": train.validate_adopted(model, p["checkpoint"], "teacher"), "kept": "adopted",
                  "clip_epochs": 0, "wall_s": 0.0}
        print(f"[teacher] adopted {p['checkpoint']} ({arch}, {models.n_params(model)} parameters), validation "
              f"accuracy {result['val_acc']:.4f}", flush=True)
    else:
        model, arch, kwargs, result = train_teacher(p, augment, cfg, p["seed"], "teacher")
    checkpoint.save(OUT, model, arch, kwargs, cfg, stage="teacher")
    io.write_json("metrics/teacher.json", {
        "params": models.n_params(model), "fp32_bytes": 4 * models.n_params(model),
        "val_acc": result["val_acc"], "kept": result["kept"], "pretrain": result.get("pretrain"),
        "effort": {"clip_epochs": result["clip_epochs"], "wall_s": time.time() - t0, "train_wall_s": result["wall_s"]}})
    print(f"[teacher] wrote {OUT}", flush=True)


def replicas():
    p, augment, cfg = io.params("teacher"), io.params("augment"), io.feature_config()
    d = io.params("distill")
    n = d["teacher_replicas"]
    if n and d["teachers"] != "ensemble":
        raise ValueError(f"distill.teacher_replicas = {n} adds teachers to distill.teachers=ensemble, but "
                         f"distill.teachers is {d['teachers']!r}; set teacher_replicas to 0 or teachers to ensemble")
    t0 = time.time()
    REPLICAS.mkdir(parents=True, exist_ok=True)
    for stale in REPLICAS.glob("*.pt"):  # DVC clears the folder first; a run by hand must not keep old ones
        stale.unlink()
    rows, clip_epochs = [], 0
    for seed in range(p["seed"] + 1, p["seed"] + 1 + n):
        # no curves: dvclive/ folders of a count set by a parameter cannot be declared in dvc.yaml
        model, arch, kwargs, result = train_teacher(p, augment, cfg, seed, f"teacher_seed{seed}", curves=False)
        checkpoint.save(REPLICAS / f"seed{seed}.pt", model, arch, kwargs, cfg, stage="teacher_replicas", seed=seed)
        rows.append({"seed": seed, "val_acc": result["val_acc"], "kept": result["kept"]})
        clip_epochs += result["clip_epochs"]
    io.write_json("metrics/teacher_replicas.json", {"replicas": rows,
                                                    "effort": {"clip_epochs": clip_epochs, "wall_s": time.time() - t0}})
    print(f"[teacher_replicas] wrote {n} teachers to {REPLICAS}/", flush=True)


if __name__ == "__main__":
    if sys.argv[1:] not in ([], ["replicas"]):
        sys.exit("usage: python stages/teacher.py [replicas]")
    replicas() if sys.argv[1:] else main()

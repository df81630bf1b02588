"""teacher: train TC-ResNet8 (or validate and adopt a received checkpoint) -> models/teacher.pt."""
import time

from kws import checkpoint, features, io, models, train
from kws.sources import CLASSES

OUT = "models/teacher.pt"


def main():
    p, augment, cfg = io.params("teacher"), io.params("augment"), io.feature_config()
    t0 = time.time()
    if p["checkpoint"]:
        model, ckpt = checkpoint.adopt(p["checkpoint"], cfg)
        arch, kwargs = ckpt["arch"], ckpt["kwargs"]
        result = {"best_val_acc": train.validate_adopted(model, p["checkpoint"], "teacher"), "clip_epochs": 0,
                  "wall_s": 0.0}
        print(f"[teacher] adopted {p['checkpoint']} ({arch}, {models.n_params(model)} parameters), validation "
              f"accuracy {result['best_val_acc']:.4f}", flush=True)
    else:
        arch, kwargs = models.preset(p["model"], p["width"], features.n_channels(cfg), len(CLASSES))
        model = models.build(arch, kwargs, p["seed"])
        print(f"[teacher] training {p['model']} x{p['width']} ({models.n_params(model)} parameters)", flush=True)
        result = train.train_on_dataset(model, p, augment, "teacher", pretrain_epochs=p["pretrain_epochs"])
    checkpoint.save(OUT, model, arch, kwargs, cfg, stage="teacher")
    io.write_json("metrics/teacher.json", {
        "params": models.n_params(model), "fp32_bytes": 4 * models.n_params(model),
        "best_val_acc": result["best_val_acc"], "pretrain": result.get("pretrain"),
        "effort": {"clip_epochs": result["clip_epochs"], "wall_s": time.time() - t0, "train_wall_s": result["wall_s"]}})
    print(f"[teacher] wrote {OUT}", flush=True)


if __name__ == "__main__":
    main()

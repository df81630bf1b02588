"""distill kd|nokd: train the student under the INT8 flash budget, with knowledge from the
pruned teachers (kd) or from hard labels only (nokd, the twin that shows what KD buys)."""
import sys
import time
from pathlib import Path

from kws import budget, chain, checkpoint, distill, features, io, models, train
from kws.sources import CLASSES

# the chain's models that teach, each file as kws.chain spells it
TEACHERS = {name: [chain.MODELS[model][0] for model in models]
            for name, models in {"chain": ["pruned_narrow"],  # teacher -> wide -> narrow -> student
                                 "ensemble": ["teacher", "pruned_wide", "pruned_narrow"]}.items()}
REPLICAS = Path(chain.TEACHER_REPLICAS)  # the teacher_replicas stage's (distill.teacher_replicas) join the ensemble


def teacher_files(p):
    """The checkpoints whose soft targets the student learns from, for distill block `p`."""
    files = TEACHERS[p["teachers"]]
    if p["teachers"] == "ensemble":
        replicas = sorted(map(str, REPLICAS.glob("*.pt")))
        if len(replicas) != p["teacher_replicas"]:
            raise ValueError(f"{REPLICAS}/ holds {len(replicas)} teachers, distill.teacher_replicas asks for "
                             f"{p['teacher_replicas']}: run `dvc repro teacher_replicas` first")
        files = files + replicas
    return files


def main(mode):
    p, augment, cfg = io.params("distill"), io.params("augment"), io.feature_config()
    t0 = time.time()
    arch, kwargs = models.preset(p["student"], p["width"], features.n_channels(cfg), len(CLASSES))
    student = models.build(arch, kwargs, p["seed"])
    flash, arena = budget.check_measured(student, p["budget_bytes"], p["arena_budget_bytes"], features.n_channels(cfg),
                                         features.n_frames(cfg), f"student {p['student']} x{p['width']}")
    device = train.resolve_device(p["device"])
    teachers, adapter, extra = [], None, ()
    if mode == "kd":
        teachers = [checkpoint.load(path, cfg)[0].to(device) for path in teacher_files(p)]
        if p["feature_weight"] > 0:
            shape = features.n_channels(cfg), features.n_frames(cfg)
            adapter = distill.FeatureAdapter(distill.feature_channels(student, *shape),
                                             distill.feature_channels(teachers[-1], *shape)).to(device)
            extra = tuple(adapter.parameters())
    loss = distill.make_loss(teachers, p["alpha"] if mode == "kd" else 0.0, p["temperature"], p["mixup"],
                             p["feature_weight"], adapter)
    print(f"[distill@{mode}] {p['student']} x{p['width']}: {models.n_params(student)} parameters, {flash} B as "
          f".tflite (budget {p['budget_bytes']}), {arena} B TFLM arena (budget {p['arena_budget_bytes']}); "
          f"teachers: {teacher_files(p) if teachers else 'none (hard labels)'}", flush=True)
    result = train.train_on_dataset(student, p, augment, f"distill_{mode}", loss, extra_params=extra)
    checkpoint.save(f"models/student_{mode}.pt", student, arch, kwargs, cfg, stage=f"distill@{mode}")
    io.write_json(f"metrics/distill/{mode}.json", {
        "params": models.n_params(student), "int8_bytes_estimate": budget.int8_bytes(student)["total"],
        "tflite_bytes": flash, "tflm_arena_bytes": arena, "val_acc": result["val_acc"],
        "kept": result["kept"],
        "effort": {"clip_epochs": result["clip_epochs"], "wall_s": time.time() - t0}})


if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in ("kd", "nokd"):
        sys.exit("usage: python stages/distill.py kd|nokd")
    main(sys.argv[1])

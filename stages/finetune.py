"""finetune KEY: recover the accuracy a pruned model lost -> models/finetuned_<key>.pt, from the
labels and (finetune.alpha > 0) the unpruned teacher's soft targets."""
import sys
import time

from kws import chain, checkpoint, distill, io, models, train

TEACHER = chain.MODELS["teacher"][0]


def make_loss(p, cfg):
    """Fine-tuning's loss(model, x, y): labels only, or with finetune.alpha of the unpruned teacher's
    softened outputs (kws.distill.kd_loss). The teacher for both widths: the narrow model's own
    input, the fine-tuned wide model, is weaker."""
    teachers = [checkpoint.load(TEACHER, cfg)[0].to(train.resolve_device(p["device"]))] if p["alpha"] > 0 else []
    return distill.make_loss(teachers, p["alpha"], p["temperature"])


def main(key):
    p, augment, cfg = io.params("finetune"), io.params("augment"), io.feature_config()
    t0 = time.time()
    model, ckpt = checkpoint.load(f"models/pruned_{key}.pt", cfg)
    result = train.train_on_dataset(model, p, augment, f"finetune_{key}", make_loss(p, cfg))
    checkpoint.save(f"models/finetuned_{key}.pt", model, ckpt["arch"], ckpt["kwargs"], cfg,
                    stage=f"finetune@{key}", width=ckpt["info"]["width"])
    io.write_json(f"metrics/finetune/{key}.json", {
        "width": ckpt["info"]["width"], "params": models.n_params(model), "val_acc": result["val_acc"],
        "kept": result["kept"],
        "effort": {"clip_epochs": result["clip_epochs"], "wall_s": time.time() - t0}})
    print(f"[finetune@{key}] val acc {result['val_acc']:.4f} -> models/finetuned_{key}.pt", flush=True)


if __name__ == "__main__":
    main(sys.argv[1])

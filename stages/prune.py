"""prune KEY (wide|narrow): structured channel pruning to the width prune.ratio (narrow) or prune.wide_ratio gives KEY ->
models/pruned_<key>.pt, with the accuracy right after pruning. Progressive: wide is cut from
the teacher, narrow from the fine-tuned wide model (the teacher-assistant chain)."""
import sys
import time

from kws import checkpoint, features, io, models, prune, train

SOURCE = {"wide": "models/teacher.pt", "narrow": "models/finetuned_wide.pt"}


def main(key):
    p, cfg = io.params("prune"), io.feature_config()
    width = prune.widths(p["ratio"], p["wide_ratio"])[key]
    t0 = time.time()
    model, ckpt = checkpoint.load(SOURCE[key], cfg)
    before = prune.macs_and_params(model, features.n_frames(cfg))
    val_x, val_y = io.load_split("val")
    source_width = ckpt["info"].get("width", 1.0)
    # Taylor importance needs gradients: the calibration clips (train split), never test data.
    calib = io.load_split("calib") if p["importance"] == "taylor" else None
    prune.prune(model, width / source_width, features.n_frames(cfg), p["importance"], p["steps"], calib)
    after = prune.macs_and_params(model, features.n_frames(cfg))
    kwargs = models.arch_kwargs(model)
    checkpoint.save(f"models/pruned_{key}.pt", model, "tc_resnet", kwargs, cfg, stage=f"prune@{key}", width=width)
    acc = train.accuracy(model, val_x, val_y)
    io.write_json(f"metrics/prune/{key}.json", {
        "width": width, "source": SOURCE[key], "params": after[1], "macs": after[0],
        "source_params": before[1], "source_macs": before[0],
        "val_acc_after_prune": acc, "effort": {"wall_s": time.time() - t0, "clip_epochs": 0}})
    print(f"[prune@{key}] width {width:.2f}: {before[1]} -> {after[1]} parameters, {before[0]} -> {after[0]} MACs, "
          f"val acc right after pruning {acc:.4f}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1])

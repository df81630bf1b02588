"""Train the params.yaml student (no KD) on the workspace's features and compare it with its INT8
forms on validation: top-1 and FAR@1%FRR of fp32, ONNX PTQ and .tflite (TFLM), their top-1
agreement, the graphs' float ops and the measured flash and arena. A quick check of a student
family's quantization before a full chain run, through the chain's own functions:

    python stages/fetch.py && python stages/features.py    # in a workspace with its params.yaml
    python scripts/int8_agreement.py [--epochs 8] [--out int8_agreement.json]

Writes its ONNX and .tflite files beside --out.
"""
import argparse
import json
from pathlib import Path

from kws import export, features, firmware, io, metrics, models, quant, train
from kws.sources import CLASSES


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=None, help="override distill.epochs (a short schedule)")
    ap.add_argument("--out", default="int8_agreement.json")
    a = ap.parse_args()
    p, cfg = io.params("distill"), io.feature_config()
    if a.epochs is not None:
        p = {**p, "epochs": a.epochs, "warmup_epochs": min(p["warmup_epochs"], a.epochs)}
    net = models.build(*models.preset(p["student"], p["width"], features.n_channels(cfg), len(CLASSES)), p["seed"])
    fit = train.train_on_dataset(net, p, io.params("augment"), "int8_agreement")
    net.eval()
    calib, _ = io.load_split("calib")
    val_x, val_y = io.load_split("val")
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fp32 = export.to_onnx(net, calib[:8], out.with_suffix(".fp32.onnx"))
    int8 = quant.ptq(fp32, out.with_suffix(".int8.onnx"), calib.numpy())
    tflite = firmware.to_tflite(quant.ptq_reference(net, calib), calib[:8], out.with_suffix(".int8.tflite")).read_bytes()
    logits = {"fp32": models.logits(net, val_x).numpy(), "onnx_int8": export.ort_logits(int8, val_x),
              "tflite_int8": firmware.run(tflite, val_x.numpy())}
    report = {"student": p["student"], "width": p["width"], "epochs": p["epochs"], "train_wall_s": fit["wall_s"],
              "onnx_float_nodes": quant.float_nodes(int8), "tflite_float_ops": firmware.float_ops(tflite),
              "flash_bytes": len(tflite), "arena_bytes": firmware.smallest_arena(tflite, val_x[:4].numpy())}
    for name, z in logits.items():
        m = metrics.evaluate(z, val_y.numpy(), z, val_y.numpy())[0]["validation"]
        report[name] = {"val_top1": m["top1"], "val_top1_ci": m["top1_ci"], "val_far_macro": m["far_at_frr"]["far_macro"],
                        "top1_agreement": metrics.top1_agreement(z, {k: v for k, v in logits.items() if k != name})}
    io.write_json(out, report)
    print(json.dumps(report, indent=1, default=float))


if __name__ == "__main__":
    main()

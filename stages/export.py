"""export: fp32 ONNX and post-training-quantized ONNX (QDQ) of every trained model, and the feature
config beside them -> models/onnx/; per model, what INT8 costs on validation and whether it went
to 16-bit activations (16x8, kws.mixed), the per-layer sensitivity of the chain's PTQ models and a calibration sweep on
the distilled student (kws.sensitivity) -> metrics/export.json, metrics/quantize.json."""
import time
from pathlib import Path

import torch

from kws import chain, checkpoint, export, io, metrics, mixed, sensitivity

OUT = Path("models/onnx")
SWEPT = "student_kd"  # the calibration sweep's model: the distilled student, the one PTQ ships


def ptq_models():
    """The fp32 models whose PTQ copies are models of the chain (the others are exported for reference)."""
    return [chain.fp32_source(n) for n in chain.INT8 if chain.MODELS[n][0] == chain.int8_file(chain.fp32_source(n))]


def calibration_sweep(fp32, calib, val_x, val_y, q, max_frr):
    """Validation top-1 (Wilson 95% interval) and FAR of the PTQ copy for each calibration method x
    clip count, all else as configured."""
    rows = []
    for method in q["sweep_methods"]:
        for n in q["sweep_calib_clips"]:
            _, s = sensitivity.Quantizer(fp32, calib[:n], val_x, val_y, max_frr, method, q["per_channel"]).quantize()
            lo, hi = metrics.wilson(round(s["top1"] * len(val_y)), len(val_y))
            rows.append({"method": method, "calib_clips": min(n, len(calib)), "val_top1": s["top1"],
                         "val_top1_lo": lo, "val_top1_hi": hi, "val_far": s["far"]})
    return rows


def main():
    q, cfg, max_frr = io.params("quantize"), io.feature_config(), io.params("evaluate")["max_frr"]
    t0 = time.time()
    calib_x, _ = io.load_split("calib")
    if not 0 < q["calib_clips"] <= len(calib_x):
        raise ValueError(f"quantize.calib_clips must be in [1, {len(calib_x)}] (the calib split holds "
                         f"features.calib_clips={len(calib_x)} clips), got {q['calib_clips']}")
    calib = calib_x[:q["calib_clips"]].numpy()
    val_x, val_y = (t.numpy() for t in io.load_split("val"))
    test_x, _ = io.load_split("test")
    OUT.mkdir(parents=True, exist_ok=True)
    io.write_json(OUT / "feature_config.json", cfg)
    headline, details = {}, {"settings": q, "models": {}, "sensitivity": {}}
    diagnostics_s = 0.0  # sensitivity tables and the calibration sweep: reports, not part of making a model
    for name in chain.FP32:
        model, _ = checkpoint.load(chain.checkpoint_file(name), cfg)
        fp32, int8 = OUT / f"{name}.fp32.onnx", OUT / f"{name}.int8.onnx"
        report = mixed.quantize_model(model, calib_x[:8], fp32, int8, calib, val_x, val_y, max_frr,
                                      equalize=q["equalize"], max_int8_loss=q["max_int8_loss"], method=q["method"],
                                      per_channel=q["per_channel"], activations=q["activations"])
        mixed.check_precision(int8, report["precision"])  # the file carries the precision chosen
        agree = metrics.top1_agreement(export.ort_logits(int8, test_x), {"fp32": export.ort_logits(fp32, test_x)})["fp32"]
        headline[name] = {"ptq_top1_agreement_with_fp32": agree, "val_top1_fp32": report["fp32"]["top1"],
                          "val_top1_int8": report["int8"]["top1"], "val_top1_shipped": report["final"]["top1"],
                          "activation_bits": 16 if report["precision"] == "16x8" else 8,
                          "arena_extra_bytes": report["bytes"]["arena_extra"],
                          "flash_extra_bytes": report["bytes"]["flash_extra"]}
        details["models"][name] = report
        print(f"[export] {name}: {fp32.name}, {int8.name}: validation top-1 fp32 {report['fp32']['top1']:.2%}, "
              f"INT8 {report['int8']['top1']:.2%}, shipped {report['final']['top1']:.2%} as {report['precision']}; "
              f"it agrees with fp32 on {agree:.1%} of test clips",
              flush=True)
        if q["sensitivity"] and name in ptq_models():
            t_diag = time.time()
            quantizer = sensitivity.Quantizer(fp32, calib, val_x, val_y, max_frr, q["method"], q["per_channel"])
            table = sensitivity.layer_sensitivity(quantizer)
            details["sensitivity"][name] = {**table, "most_sensitive": sensitivity.most_sensitive(table)}
            print(f"[export] {name}: most sensitive layers {details['sensitivity'][name]['most_sensitive']}",
                  flush=True)
            diagnostics_s += time.time() - t_diag
    t_diag = time.time()
    sweep = calibration_sweep(OUT / f"{SWEPT}.fp32.onnx", calib_x.numpy(), val_x, val_y, q, max_frr)
    diagnostics_s += time.time() - t_diag
    details["calibration_sweep"] = {"model": SWEPT, "rows": sweep}
    io.write_json("metrics/quantize.json", details)
    # the effort the PTQ models' curve points add up: quantizing, not the reports beside it
    io.write_json("metrics/export.json", {**headline, "effort": {"wall_s": time.time() - t0 - diagnostics_s,
                                                                 "clip_epochs": 0, "diagnostics_s": diagnostics_s}})


if __name__ == "__main__":
    with torch.no_grad():
        main()

"""export: fp32 ONNX and post-training-quantized INT8 ONNX (QDQ) of every trained model, and the
feature config beside them -> models/onnx/."""
import time
from pathlib import Path

import numpy as np
import torch

from kws import chain, checkpoint, export, io, quant

OUT = Path("models/onnx")


def main():
    cfg = io.feature_config()
    t0 = time.time()
    calib_x, _ = io.load_split("calib")
    test_x, _ = io.load_split("test")
    OUT.mkdir(parents=True, exist_ok=True)
    io.write_json(OUT / "feature_config.json", cfg)
    report = {}
    for name in chain.FP32:
        model, _ = checkpoint.load(chain.checkpoint_file(name), cfg)
        fp32 = export.to_onnx(model, calib_x[:8], OUT / f"{name}.fp32.onnx")
        int8 = quant.ptq(fp32, OUT / f"{name}.int8.onnx", calib_x.numpy())
        agree = float(np.mean(export.ort_logits(int8, test_x).argmax(1) == export.ort_logits(fp32, test_x).argmax(1)))
        report[name] = {"ptq_top1_agreement_with_fp32": agree}
        print(f"[export] {name}: {fp32.name}, {Path(int8).name} (INT8 agrees with fp32 on {agree:.1%} of test clips)",
              flush=True)
    io.write_json("metrics/export.json", {**report, "effort": {"wall_s": time.time() - t0, "clip_epochs": 0}})


if __name__ == "__main__":
    with torch.no_grad():
        main()

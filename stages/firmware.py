"""firmware: an integer .tflite of every INT8 model in the chain (litert-torch, from its PT2E torch
quantized reference: the QAT student as trained, the PTQ copies calibrated on the export stage's
clips at the precision it chose, int8 or 16x8), top-1 parity with its ONNX model and with the
reference on the test split (TFLM runs the .tflite), and flash, tensor arena and ops measured by
TFLite Micro -> models/tflite/, metrics/firmware.json."""
import time

import torch

from kws import chain, checkpoint, equalize, export, firmware, io, metrics, models, quant

QAT_REFERENCE = ("student_qat", "models/qat/student_qat.pt2")  # written by the qat stage


def references(cfg, calib_x, q, quantized):
    """(chain model name, precision, torch quantized reference) of every INT8 model: the PTQ copy
    of each fp32 model (equalized and calibrated as the export stage did, `quantize` block `q`,
    at the precision it chose, from `quantized`: metrics/quantize.json's `models`; min/max ranges:
    the parity check below says whether that stands in for an ONNX file calibrated otherwise),
    then the QAT student (int8)."""
    for name in chain.FP32:
        model, _ = checkpoint.load(chain.checkpoint_file(name), cfg)
        model = equalize.equalize(model) if q["equalize"] else model
        precision = quantized[name]["precision"]
        yield name, precision, quant.ptq_reference(model, calib_x[:q["calib_clips"]],
                                                   int16_activations=precision == "16x8")
    name, path = QAT_REFERENCE
    yield name, "int8", quant.load_reference(path)


def top1(logits, labels):
    return metrics.accuracy_report(logits, labels)[0]["top1"]


def main():
    p, cfg = io.params("firmware"), io.feature_config()
    t0 = time.time()
    calib_x, _ = io.load_split("calib")
    test_x, test_y = io.load_split("test")
    quantized = io.read_json("metrics/quantize.json")["models"]
    report = {}
    for name, precision, reference in references(cfg, calib_x, io.params("quantize"), quantized):
        onnx_path = chain.int8_file(name)
        tflite = firmware.to_tflite(reference, calib_x[:8], chain.tflite_file(name))
        model_bytes = tflite.read_bytes()
        if firmware.precision(model_bytes) != precision:
            raise SystemExit(f"[firmware] {tflite} has {firmware.precision(model_bytes)} input/output, but the "
                             f"export stage chose {precision} for {name} (metrics/quantize.json)")
        got = firmware.run(model_bytes, test_x.numpy())
        want = {"onnx": export.ort_logits(onnx_path, test_x), "torch": models.logits(reference, test_x).numpy()}
        parity = metrics.top1_agreement(got, want)
        _, (out_step, _) = firmware.io_quantization(model_bytes)
        clear = metrics.top1_agreement(got, want, tie_margin=firmware.NEAR_TIE_STEPS * out_step)
        figures = firmware.measure(tflite, test_x[:p["probe_clips"]].numpy())
        steps = {n: firmware.output_steps(got, w, out_step) for n, w in want.items()}
        report[firmware.model_key(tflite)] = {**figures, "precision": precision, "parity": parity,
                                              "parity_clear": clear, "output_diff_steps": steps}
        print(f"[firmware] {tflite} ({precision}): flash {figures['flash_bytes']} B, arena {figures['arena_bytes']} B, "
              f"top-1 agrees with ONNX {parity['onnx']:.2%} ({clear['onnx']:.2%} of clear clips), "
              f"torch {parity['torch']:.2%} ({clear['torch']:.2%})", flush=True)
        worst = min(clear, key=clear.get)
        if clear[worst] < p["min_parity"]:
            raise SystemExit(f"[firmware] {name}: {tflite} (TFLM) agrees with the {worst} {precision} model on "
                             f"{clear[worst]:.2%} of the test clips whose decision is clear (its top-1 ahead by "
                             f"more than {firmware.NEAR_TIE_STEPS} output steps; {parity[worst]:.2%} of all), "
                             f"below firmware.min_parity={p['min_parity']:.2%}. Test top-1: TFLM "
                             f"{top1(got, test_y):.2%}, {worst} {top1(want[worst], test_y):.2%}; "
                             f"outputs {steps[worst]['mean']:.1f} output steps apart on average (largest "
                             f"{steps[worst]['max']:.0f}). A TFLM top-1 well under the reference's is a conversion "
                             "fault; the same top-1 with outputs several steps apart is rounding accumulated through "
                             "many requantizing ops (measured so for BC-ResNet on real speech: README, BC-ResNet "
                             "student), which a lower firmware.min_parity accepts")
    io.write_json("metrics/firmware.json", {"measured_on": firmware.MEASURED_ON, "models": report,
                                            "effort": {"wall_s": time.time() - t0, "clip_epochs": 0}})


if __name__ == "__main__":
    with torch.no_grad():
        main()

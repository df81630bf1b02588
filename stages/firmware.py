"""firmware: an INT8 .tflite of every INT8 model in the chain (litert-torch, from its PT2E torch
quantized reference: the QAT student as trained, the PTQ copies calibrated on the export stage's
clips), top-1 parity with its ONNX INT8 model and with the reference on the test split (TFLM
runs the .tflite), and flash, tensor arena and ops measured by TFLite Micro
-> models/tflite/, metrics/firmware.json."""
import time

import torch

from kws import chain, checkpoint, equalize, export, firmware, io, metrics, models, quant

QAT_REFERENCE = ("student_qat", "models/qat/student_qat.pt2")  # written by the qat stage


def references(cfg, calib_x, q):
    """(chain model name, torch quantized reference) of every INT8 model: the PTQ copy of each
    fp32 model (equalized and calibrated as the export stage did, `quantize` block `q`; min/max
    ranges and int8 activations only: the parity check below says whether that stands in for an
    ONNX file calibrated otherwise or with 16-bit lifts), then the QAT student."""
    for name in chain.FP32:
        model, _ = checkpoint.load(chain.checkpoint_file(name), cfg)
        model = equalize.equalize(model) if q["equalize"] else model
        yield name, quant.ptq_reference(model, calib_x[:q["calib_clips"]])
    name, path = QAT_REFERENCE
    yield name, quant.load_reference(path)


def gated(parity, int16_tensors):
    """The agreements the min_parity gate holds a .tflite to: with its ONNX INT8 model and its torch
    reference, but not with an ONNX model the export stage lifted to 16-bit activations, which is a
    different model by design (the summary never deploys it)."""
    return {k: v for k, v in parity.items() if not (k == "onnx" and int16_tensors)}


def main():
    p, cfg = io.params("firmware"), io.feature_config()
    t0 = time.time()
    calib_x, _ = io.load_split("calib")
    test_x, _ = io.load_split("test")
    quantized = io.read_json("metrics/quantize.json")["models"]
    report = {}
    for name, reference in references(cfg, calib_x, io.params("quantize")):
        onnx_path = chain.int8_file(name)
        tflite = firmware.to_tflite(reference, calib_x[:8], chain.tflite_file(name))
        model_bytes = tflite.read_bytes()
        got = firmware.run(model_bytes, test_x.numpy())
        want = {"onnx": export.ort_logits(onnx_path, test_x), "torch": models.logits(reference, test_x).numpy()}
        parity = metrics.top1_agreement(got, want)
        _, (out_step, _) = firmware.io_quantization(model_bytes)
        clear = metrics.top1_agreement(got, want, tie_margin=firmware.NEAR_TIE_STEPS * out_step)
        figures = firmware.measure(tflite, test_x[:p["probe_clips"]].numpy())
        int16 = firmware.lifted_tensors(quantized, tflite)
        report[firmware.model_key(tflite)] = {**figures, "parity": parity, "parity_clear": clear,
                                              "onnx_int16_tensors": int16}
        print(f"[firmware] {tflite}: flash {figures['flash_bytes']} B, arena {figures['arena_bytes']} B, "
              f"top-1 agrees with ONNX {parity['onnx']:.2%} ({clear['onnx']:.2%} of clear clips)"
              f"{' (16-bit lifts in the ONNX: not gated)' * bool(int16)}, torch {parity['torch']:.2%} "
              f"({clear['torch']:.2%})", flush=True)
        checked = gated(clear, int16)
        worst = min(checked, key=checked.get)
        if checked[worst] < p["min_parity"]:
            raise SystemExit(f"[firmware] {name}: {tflite} (TFLM) agrees with the {worst} INT8 model on "
                             f"{clear[worst]:.2%} of the test clips whose decision is clear (its top-1 ahead by "
                             f"more than {firmware.NEAR_TIE_STEPS} output steps; {parity[worst]:.2%} of all), "
                             f"below firmware.min_parity={p['min_parity']:.2%}: a conversion fault, not rounding")
    io.write_json("metrics/firmware.json", {"measured_on": firmware.MEASURED_ON, "models": report,
                                            "effort": {"wall_s": time.time() - t0, "clip_epochs": 0}})


if __name__ == "__main__":
    with torch.no_grad():
        main()

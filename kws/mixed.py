"""Post-training quantization as the pipeline ships it: cross-layer equalization (kws.equalize)
before export, INT8 PTQ, and, when that costs more validation top-1 than a budget, 16-bit
activations with int8 weights (TFLite's "16x8" scheme) on the whole model. What 16x8 costs in
bytes is counted on the graph, and the firmware stage measures it on the .tflite.

Why the whole model and not the few most sensitive tensors: the precision a model is scored at
must be the one its .tflite carries, and TFLite's 16x8 is a whole-graph scheme (TFLite's own
converter offers it only so; TFLM's int16 kernels want int16 on every input and output of an op).
Measured here with litert-torch 0.10: a per-tensor mix converts only for a region that starts at
the model input and ends on a conv output, and then only through private converter flags; other
mixes fail to convert, leave float ops, or run wrong in TFLM. The per-layer sensitivity table
(kws.sensitivity) still names the layers that need the range."""
import shutil
from pathlib import Path

import onnx

from kws import atomic, export, footprint, models, sensitivity
from kws import equalize as kws_equalize


def runs_16x8(model):
    """Whether the 16x8 .tflite route holds for this model: TC-ResNets (convs, same-shape ADD,
    MEAN, FULLY_CONNECTED) convert and match their torch reference in TFLM to ~2 output steps.
    BC-ResNet's broadcast ADDs do not: litert-torch 0.10 refuses an implicitly broadcast int16
    ADD, and with an explicit BROADCAST_TO TFLM's int16 result is off by orders of magnitude."""
    return isinstance(model, models.TCResNet)


def ptq_within_budget(fp32_onnx_path, int8_onnx_path, calib, val_x, val_y, max_int8_loss, max_frr,
                      method="minmax", per_channel=True, activations="auto", allow_16x8=True):
    """Quantize `fp32_onnx_path` to `int8_onnx_path` at `activations`: 'int8', '16x8', or 'auto':
    INT8, or 16x8 when INT8 loses more than `max_int8_loss` of validation top-1 against fp32 and
    16x8 wins some back (`allow_16x8`: the model's family has a 16x8 .tflite route).
    Returns the report: fp32, INT8, 16x8 (when tried) and final validation scores, the precision
    chosen and its byte cost against INT8."""
    if activations == "16x8" and not allow_16x8:
        raise ValueError(f"quantize.activations=16x8: {Path(fp32_onnx_path).name} has no 16x8 .tflite route "
                         "(TC-ResNets only, see kws.mixed.runs_16x8); use auto or int8")
    q = sensitivity.Quantizer(fp32_onnx_path, calib, val_x, val_y, max_frr, method, per_channel)
    fp32 = q.score(fp32_onnx_path)
    _, int8 = q.quantize(int8_onnx_path)
    report = {"fp32": fp32, "int8": int8, "max_int8_loss": max_int8_loss, "precision": "int8", "16x8": None}
    over = fp32["top1"] - int8["top1"] > max_int8_loss
    if activations == "16x8" or (activations == "auto" and over and allow_16x8):
        path_16x8, report["16x8"] = q.quantize(int16_activations=True)
        if activations == "16x8" or report["16x8"]["top1"] > int8["top1"]:
            report["precision"] = "16x8"
            with atomic.writing(int8_onnx_path) as tmp:  # the scored file itself, not a second quantization
                shutil.copyfile(path_16x8, tmp)
    report["final"] = report["16x8"] if report["precision"] == "16x8" else int8
    report["within_budget"] = fp32["top1"] - report["final"]["top1"] <= max_int8_loss
    report["bytes"] = byte_cost(int8_onnx_path)
    return report


def byte_cost(onnx_path):
    """What a QDQ model's activation precision costs on an MCU (batch 1) against all-int8: arena,
    the greedy-planned activation arena at its precision and at 1 byte an element; flash, the
    16x8 kernels' int64 biases over int32 ones (0 for an int8 model)."""
    model = onnx.load(str(onnx_path))  # read once for the three footprint calls
    tensors, steps = footprint.activation_graph(model, bytes_per_element=1)
    wide = footprint.precision(model) == "16x8"
    arena_int8 = footprint.peak_sram_planned(tensors, steps)[0]
    arena = footprint.peak_sram_planned({t: b * (1 + wide) for t, b in tensors.items()}, steps)[0]
    flash = footprint.flash_bytes(model)["biases"] // 2 if wide else 0
    return {"arena_int8": arena_int8, "arena": arena, "arena_extra": arena - arena_int8, "flash_extra": flash}


def check_precision(onnx_path, want):
    """Raise unless the file's activation precision is `want` ('int8' or '16x8')."""
    got = footprint.precision(onnx_path)
    if got != want:
        raise RuntimeError(f"{Path(onnx_path)} carries {got} activations, expected {want}")
    return True


def quantize_model(model, example_input, fp32_onnx_path, int8_onnx_path, calib, val_x, val_y, max_frr, *,
                   equalize, max_int8_loss, method, per_channel, activations="auto"):
    """The pipeline's PTQ of a torch model (the `quantize` params block): cross-layer equalization
    when `equalize`, fp32 ONNX export (the same function, checked against torch), then
    `ptq_within_budget`, with 16x8 where the model's family `runs_16x8`. Returns its report."""
    if equalize:
        model = kws_equalize.equalize(model)
    export.to_onnx(model, example_input, fp32_onnx_path)
    return ptq_within_budget(fp32_onnx_path, int8_onnx_path, calib, val_x, val_y, max_int8_loss, max_frr,
                             method, per_channel, activations, allow_16x8=runs_16x8(model))

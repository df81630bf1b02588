"""Post-training quantization as the pipeline ships it: cross-layer equalization (kws.equalize)
before export, INT8 PTQ, and, when that costs more validation top-1 than a budget, 16-bit
activations on the tensors whose lifting buys most back, added one at a time until the loss is
within budget (weights stay int8: TFLite's "16x8" scheme). What the lifts cost in bytes is
counted on the graph.

The .tflite route (litert-torch from a PT2E reference) carries int8 activations only: a model
with lifted tensors has its ONNX file as the reference, and the firmware stage's parity check
(TFLM .tflite vs this ONNX) is what tells whether the int8 .tflite may stand in for it."""
from pathlib import Path

import onnx

from kws import equalize as kws_equalize
from kws import export, footprint, sensitivity

TFLITE_16X8_BIAS_BYTES = 4  # 16x8 kernels take int64 biases where int8 ones take int32


def ptq_within_budget(fp32_onnx_path, int8_onnx_path, calib, val_x, val_y, max_int8_loss, max_frr,
                      method="minmax", per_channel=True):
    """Quantize `fp32_onnx_path` to `int8_onnx_path` (INT8, or mixed INT8/INT16 activations when
    INT8 loses more than `max_int8_loss` of validation top-1 against fp32). Returns the report:
    fp32, INT8 and final validation scores, the lifted tensors in the order chosen, each
    candidate's score when lifted alone, and the byte cost."""
    q = sensitivity.Quantizer(fp32_onnx_path, calib, val_x, val_y, max_frr, method, per_channel)
    fp32 = q.score(fp32_onnx_path)
    path, int8 = q.quantize(int8_onnx_path)
    report = {"fp32": fp32, "int8": int8, "max_int8_loss": max_int8_loss, "int16_tensors": [], "candidates": {}}
    final = int8
    if fp32["top1"] - int8["top1"] > max_int8_loss:
        candidates = sensitivity.activation_tensors(path, fp32_onnx_path)
        report["candidates"] = {t: q.quantize(int16_tensors=[t])[1] for t in candidates}
        # only tensors that help on their own, most helpful first
        gains = {t: r for t, r in report["candidates"].items() if r["top1"] > int8["top1"]}
        for tensor in sorted(gains, key=lambda t: (-gains[t]["top1"], gains[t]["far"])):
            report["int16_tensors"].append(tensor)
            _, final = q.quantize(int8_onnx_path, int16_tensors=report["int16_tensors"])
            if fp32["top1"] - final["top1"] <= max_int8_loss:
                break
    report["final"] = final
    report["within_budget"] = fp32["top1"] - final["top1"] <= max_int8_loss
    report["bytes"] = byte_cost(int8_onnx_path, report["int16_tensors"])
    return report


def byte_cost(onnx_path, int16_tensors):
    """What 16-bit activations on `int16_tensors` of a QDQ model cost on an MCU (batch 1): arena,
    the greedy-planned activation arena with those tensors at 2 bytes an element against all at
    1; flash, the 16x8 kernels' wider biases of every Conv/Gemm reading a lifted tensor."""
    tensors, steps = footprint.activation_graph(onnx_path, bytes_per_element=1)
    lifted = set(int16_tensors)
    wide = {t: b * (2 if t in lifted else 1) for t, b in tensors.items()}
    arena_int8 = footprint.peak_sram_planned(tensors, steps)[0]
    arena_mixed = footprint.peak_sram_planned(wide, steps)[0]
    graph = onnx.load(str(onnx_path)).graph
    producer = {o: n for n in graph.node for o in n.output}
    consts = {t.name: t for t in graph.initializer}

    def unquantized(name):  # the tensor behind a chain of QuantizeLinear / DequantizeLinear
        while name in producer and producer[name].op_type in ("QuantizeLinear", "DequantizeLinear"):
            name = producer[name].input[0]
        return name

    flash = sum(TFLITE_16X8_BIAS_BYTES * int(onnx.numpy_helper.to_array(consts[unquantized(n.input[2])]).size)
                for n in graph.node if n.op_type in ("Conv", "Gemm") and len(n.input) > 2
                and unquantized(n.input[0]) in lifted)
    return {"arena_int8": arena_int8, "arena_mixed": arena_mixed, "arena_extra": arena_mixed - arena_int8,
            "flash_extra": flash, "int16_tensor_bytes": sum(tensors[t] for t in lifted if t in tensors)}


def exported_precision(onnx_path):
    """tensor -> 'int16' for every activation a QDQ file quantizes to 16 bits: what a parity check
    reads back to confirm the file carries the chosen precision."""
    graph = onnx.load(str(onnx_path)).graph
    consts = {t.name: t for t in graph.initializer}
    out = {}
    for n in graph.node:
        if n.op_type == "QuantizeLinear" and n.input[0] not in consts and len(n.input) > 2:
            zero_point = consts.get(n.input[2])
            if zero_point is not None and zero_point.data_type in (onnx.TensorProto.INT16, onnx.TensorProto.UINT16):
                out[n.input[0]] = "int16"
    return out


def check_precision(onnx_path, int16_tensors):
    """Raise unless the file's 16-bit activations are exactly `int16_tensors`."""
    got = set(exported_precision(onnx_path))
    if got != set(int16_tensors):
        raise RuntimeError(f"{Path(onnx_path)} carries 16-bit activations on {sorted(got)}, "
                           f"expected {sorted(int16_tensors)}")
    return True



def quantize_model(model, example_input, fp32_onnx_path, int8_onnx_path, calib, val_x, val_y, max_frr, *,
                   equalize, max_int8_loss, method, per_channel):
    """The pipeline's PTQ of a torch model (the `quantize` params block): cross-layer equalization
    when `equalize`, fp32 ONNX export (the same function, checked against torch), then
    `ptq_within_budget`. Returns its report."""
    if equalize:
        model = kws_equalize.equalize(model)
    export.to_onnx(model, example_input, fp32_onnx_path)
    return ptq_within_budget(fp32_onnx_path, int8_onnx_path, calib, val_x, val_y, max_int8_loss, max_frr,
                             method, per_channel)

"""ONNX export and onnxruntime inference, shared by PTQ, QAT and evaluation.

Export goes through torch.export (the dynamo exporter): in eval mode its graph optimizer folds
every BatchNorm into the preceding Conv, so the fp32 file is already the folded model that PTQ
quantizes, and the same exporter turns a PT2E-quantized model into QuantizeLinear /
DequantizeLinear (QDQ) nodes.
"""
import os

import numpy as np
import onnxruntime as ort
import torch

from kws import atomic, models

OPSET = 18
INPUT, OUTPUT = "features", "logits"


def dynamic_batch(example_input):
    """(args, dynamic_shapes) for torch.export with a dynamic batch dim. A batch of 1 would be
    specialised to a constant, so such an example is doubled; min=1 still lets batch 1 run."""
    x = example_input if len(example_input) >= 2 else torch.cat([example_input, example_input])
    return (x,), ({0: torch.export.Dim("batch", min=1)},)


def to_onnx(model, example_input, path, atol=1e-4):
    """Export `model` (eval mode) to one self-contained ONNX file and load it in onnxruntime.
    With `atol` set, also require its logits on `example_input` to match torch (fp32 models);
    atol=None skips that (quantized models differ by rounding; check them with quant.parity).
    The file holds the model's deployable form (models.deployable), so the check also checks its folding."""
    model.eval()
    args, dynamic_shapes = dynamic_batch(example_input)
    with atomic.writing(path) as tmp:  # checked before it replaces the previous file
        # external_data=False: torch 2.13 otherwise writes the weights to a separate .onnx.data file.
        torch.onnx.export(models.deployable(model), args, tmp, dynamo=True, external_data=False, opset_version=OPSET,
                          input_names=[INPUT], output_names=[OUTPUT], dynamic_shapes=dynamic_shapes,
                          verbose=False)
        if os.path.exists(f"{tmp}.data"):
            os.remove(f"{tmp}.data")
            raise RuntimeError(f"ONNX export of {path} wrote external data; expected a single file")
        check_export(model, tmp, path, example_input, atol)
    return path


def check_export(model, onnx_file, path, example_input, atol):
    """The exported file loads in onnxruntime and, with `atol`, its logits match torch's."""
    got = ort_logits(onnx_file, example_input.numpy())
    if atol is not None:
        with torch.no_grad():
            want = model(example_input).numpy()
        if not np.isfinite(want).all():
            raise RuntimeError(f"ONNX export of {path}: the model's own outputs are not finite (NaN/inf weights: "
                               "a diverged training run?)")
        err = float(np.abs(got - want).max())
        if not err <= atol:  # NaN compares false either way: it must fail, not pass
            raise RuntimeError(f"ONNX export of {path}: onnxruntime differs from torch by {err:.2e} > {atol:.0e}")


def session(path, save_optimized_to=None):
    """onnxruntime session at the basic (hardware-independent) optimization level. Higher levels
    fuse INT8 QDQ groups into x86 u8s8 kernels whose int16 intermediate sums saturate on AVX2
    CPUs without VNNI (onnxruntime's documented caveat): BC-ResNet top-1 then agreed with the
    torch reference on 61% of clips, and results would depend on the CPU. At this level ORT
    computes the QDQ graph as specified (int8 tensors, int32 bias, requantize after each op),
    which is the arithmetic of an MCU runtime up to rounding ties."""
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    if save_optimized_to is not None:
        opts.optimized_model_filepath = str(save_optimized_to)
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def ort_logits(path_or_session, features, batch_size=256):
    """Run an ONNX model over features [N, n_mels, T] in batches; returns float32 logits [N, C]."""
    sess = path_or_session if isinstance(path_or_session, ort.InferenceSession) else session(path_or_session)
    name = sess.get_inputs()[0].name
    features = np.asarray(features, dtype=np.float32)
    out = [sess.run(None, {name: features[i:i + batch_size]})[0] for i in range(0, len(features), batch_size)]
    return np.concatenate(out).astype(np.float32)

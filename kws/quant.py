"""INT8 quantization the way microcontroller runtimes (TFLite Micro / CMSIS-NN) run a model:
int8 weights, symmetric per output channel in [-127, 127]; int8 activations, per tensor, with a
zero point; int32 bias at scale s_in * s_w; Conv+BN(+ReLU) folded.

Both routes end in a QDQ ONNX file that onnxruntime runs:
- PTQ: onnxruntime.quantization.quantize_static on the fp32 export (BN already folded by it).
- QAT: PyTorch 2 export (PT2E) QAT from torchao: the traced model trains with fake-quant and
  BN folded into the conv weights, `convert_pt2e` gives the torch quantized reference, and the
  dynamo exporter writes that same graph as QDQ ONNX, so the learned ranges carry over as is.
The firmware .tflite starts from a PT2E reference too: the QAT one as saved, and for PTQ one
calibrated like quantize_static (`ptq_reference`).
"""
import copy
import dataclasses
import logging
import operator
import warnings

import numpy as np
import torch

# torchao's CPU wheel logs a warning for each CUDA-only kernel library it cannot load, and torch
# one for an enum it registers; neither matters here and both read like failures in a stage log.
logging.getLogger("torchao").setLevel(logging.ERROR)
logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)

from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                      quantize_static)
from torchao.quantization.pt2e import allow_exported_model_train_eval, disable_observer, enable_observer
from torchao.quantization.pt2e.observer import MinMaxObserver
from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e, prepare_qat_pt2e

from kws import atomic, export, models

# torchao 0.18 ships the XNNPACK quantizer only under torchao.testing (its maintained copy lives
# in executorch, too heavy a dependency). Its scheme is exactly the TFLite int8 one above; the
# x86/arm inductor quantizers in torchao proper use uint8 activations or per-tensor weights.
from torchao.testing.pt2e._xnnpack_quantizer import XNNPACKQuantizer, get_symmetric_quantization_config


class _Features(CalibrationDataReader):
    """Feeds calibration clips to quantize_static in batches."""

    def __init__(self, features, input_name, batch_size):
        features = np.asarray(features, dtype=np.float32)
        self.batches = iter([{input_name: features[i:i + batch_size]} for i in range(0, len(features), batch_size)])

    def get_next(self):
        return next(self.batches, None)


def ptq(fp32_onnx_path, int8_onnx_path, calib_features, batch_size=64, method=CalibrationMethod.MinMax):
    """Post-training static INT8 quantization of an fp32 ONNX model (from export.to_onnx).
    Activation ranges come from running `calib_features` [N, n_mels, T] through the model.
    quant_pre_process is skipped: the dynamo export is already shape-inferred and BN-folded,
    and the quantized graph came out identical with it."""
    if len(calib_features) == 0:
        raise ValueError("ptq: calib_features is empty")
    input_name = export.session(fp32_onnx_path).get_inputs()[0].name
    with atomic.writing(int8_onnx_path) as tmp:
        quantize_static(str(fp32_onnx_path), str(tmp), _Features(calib_features, input_name, batch_size),
                        quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QInt8,
                        weight_type=QuantType.QInt8, calibrate_method=method)
    return int8_onnx_path


def _quantizer(is_qat):
    """The XNNPACK symmetric per-channel scheme. For PTQ the activation observers are min/max,
    as in `ptq`'s CalibrationMethod.MinMax, so both PTQ routes pick the same ranges from the same
    clips (the scheme's default histogram observer searches for narrower, clipping ones)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "XNNPACKQuantizer is deprecated")  # see the import
        quantizer = XNNPACKQuantizer()
    config = get_symmetric_quantization_config(is_per_channel=True, is_qat=is_qat)
    if not is_qat:
        act = dataclasses.replace(config.input_activation,
                                  observer_or_fake_quant_ctr=MinMaxObserver.with_args(eps=2**-12))
        config = dataclasses.replace(config, input_activation=act, output_activation=act)
    return quantizer.set_global(config)


def _export(model, example_input, train):
    """torch.export graph of a copy of `model` (torch.export would share its parameters)."""
    args, dynamic_shapes = export.dynamic_batch(example_input)
    return torch.export.export(copy.deepcopy(model).train(train), args, dynamic_shapes=dynamic_shapes).module()


def prepare_qat(model, example_input):
    """fp32 model -> PT2E graph with fake-quant on weights and activations, BN folded into the
    conv weights during training (BN keeps updating its statistics). Train it like the fp32
    model, switching modes with set_train_mode. `model` is not modified."""
    qat_model = prepare_qat_pt2e(_export(model, example_input, train=True), _quantizer(is_qat=True))
    allow_exported_model_train_eval(qat_model)
    return qat_model


def set_train_mode(qat_model, on):
    """train(on) for a QAT graph (its patched train() swaps BN between batch and running
    statistics), with the range observers on only while training: in eval the fake-quant ranges
    stay fixed, so validation passes neither move them nor see ranges that move."""
    qat_model.train(on)
    qat_model.apply(enable_observer if on else disable_observer)


def _round_bias_to_int32(reference):
    """Round every Conv/Linear bias fed by quantized input and weights to its int32 grid
    (scale s_in * s_w per output channel). The XNNPACK scheme leaves bias float, but MCU kernels,
    ORT's quantize_static and onnxruntime at load (WeightBiasQuantization) use int32; without
    this the torch reference drifts from them (BC-ResNet parity 0.96 instead of 1.0).
    Hand-written: torchao's bias qspec only covers a bias the conv had before BN folding."""
    qd = torch.ops.quantized_decomposed
    for node in reference.graph.nodes:
        if node.target not in (torch.ops.aten.conv1d.default, torch.ops.aten.conv2d.default,
                               torch.ops.aten.linear.default) or len(node.args) < 3 or node.args[2] is None:
            continue
        x, w, b = node.args[:3]
        if x.target != qd.dequantize_per_tensor.default or w.target != qd.dequantize_per_channel.default:
            continue
        bias = operator.attrgetter(b.target)(reference)
        scale = x.args[1] * operator.attrgetter(w.args[1].target)(reference)
        with torch.no_grad():
            bias.copy_(torch.round(bias / scale) * scale)


def convert(prepared):
    """Trained QAT graph or calibrated PTQ graph -> torch quantized reference: int8 weights
    with BN folded in, the activation ranges, int32-grid bias, quantize/dequantize ops that
    simulate the integer arithmetic. Weights stay float behind quantize/dequantize
    (fold_quantize=False): litert-torch's converter needs that pair, and the ONNX export comes
    out the same either way. Fixed cost ~20-30 s on 2 cores: torchao traces its conv+BN patterns."""
    reference = convert_pt2e(_eval_mode(prepared), fold_quantize=False)
    _round_bias_to_int32(reference)
    return _eval_mode(reference)


def _eval_mode(reference):
    allow_exported_model_train_eval(reference)
    reference.eval()
    reference.training = False  # the patched eval() leaves the flag the ONNX and TFLite exporters warn on
    return reference


def qat(model, example_input, train_fn):
    """Quantization-aware training from a (trained) fp32 model: `train_fn(qat_model)` runs the
    training loop in place (optimizer over qat_model.parameters(), modes via set_train_mode);
    returns the torch quantized reference."""
    qat_model = prepare_qat(model, example_input)
    train_fn(qat_model)
    return convert(qat_model)


def ptq_reference(model, calib_features, batch_size=64):
    """Post-training quantization of an fp32 torch model in PT2E: the same scheme and min/max
    ranges over the same calibration clips [N, n_mels, T] as `ptq`, as a torch quantized reference."""
    if len(calib_features) == 0:
        raise ValueError("ptq_reference: calib_features is empty")
    calib = torch.as_tensor(np.asarray(calib_features, dtype=np.float32))
    prepared = prepare_pt2e(_export(model, calib[:8], train=False), _quantizer(is_qat=False))
    with torch.no_grad():
        for i in range(0, len(calib), batch_size):
            prepared(calib[i:i + batch_size])
    return convert(prepared)


def save_reference(reference, example_input, path):
    """Save a torch quantized reference (dynamic batch) for later stages: torch.export's .pt2."""
    args, dynamic_shapes = export.dynamic_batch(example_input)
    with atomic.writing(path) as tmp:
        torch.export.save(torch.export.export(reference, args, dynamic_shapes=dynamic_shapes), str(tmp))
    return path


def load_reference(path):
    return _eval_mode(torch.export.load(str(path)).module())


def to_int8_onnx(reference, example_input, path):
    """Write the torch quantized reference as a single-file QDQ ONNX model, saved after
    onnxruntime's basic (hardware-independent) rewrites: they store each float Conv/Gemm bias as
    int32 + DequantizeLinear at scale s_in * s_w, as ORT's PTQ output and MCU kernels have it
    (lossless: convert already rounded the bias to that grid)."""
    export.to_onnx(reference, example_input, path, atol=None)
    with atomic.writing(path) as tmp:
        export.session(path, save_optimized_to=tmp)
    return path


def parity(int8_onnx_path, reference, features, batch_size=256):
    """Share of clips whose top-1 class agrees between onnxruntime (INT8 file) and `reference`
    (a torch model, e.g. convert's output, or a callable features -> logits as numpy)."""
    got = export.ort_logits(int8_onnx_path, features, batch_size).argmax(1)
    want = (models.logits(reference, torch.as_tensor(np.asarray(features, dtype=np.float32)), batch_size).numpy()
            if isinstance(reference, torch.nn.Module) else np.asarray(reference(features))).argmax(1)
    return float((got == want).mean())


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
import contextlib
import copy
import dataclasses
import io
import logging
import operator
import warnings

import numpy as np
import onnx
import torch
from onnx import numpy_helper

# torchao's CPU wheel logs a warning for each CUDA-only kernel library it cannot load, and torch
# one for an enum it registers; neither matters here and both read like failures in a stage log.
logging.getLogger("torchao").setLevel(logging.ERROR)
logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)

from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                      quantize_static)
from torchao.quantization.pt2e import allow_exported_model_train_eval, disable_observer, enable_observer
from torchao.quantization.pt2e.observer import MinMaxObserver
from torchao.quantization.pt2e.quantizer import (FixedQParamsQuantizationSpec, QuantizationAnnotation,
                                                 QuantizationSpec, SharedQuantizationSpec)
from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e, prepare_qat_pt2e

from kws import atomic, export, metrics, models

# torchao 0.18 ships the XNNPACK quantizer only under torchao.testing (its maintained copy lives
# in executorch, too heavy a dependency). Its scheme is exactly the TFLite int8 one above; the
# x86/arm inductor quantizers in torchao proper use uint8 activations or per-tensor weights.
from torchao.testing.pt2e._xnnpack_quantizer import XNNPACKQuantizer, get_symmetric_quantization_config
from torchao.testing.pt2e._xnnpack_quantizer_utils import propagate_annotation


class _Features(CalibrationDataReader):
    """Feeds calibration clips to quantize_static in batches."""

    def __init__(self, features, input_name, batch_size):
        features = np.asarray(features, dtype=np.float32)
        self.batches = iter([{input_name: features[i:i + batch_size]} for i in range(0, len(features), batch_size)])

    def get_next(self):
        return next(self.batches, None)


# calibration methods by their params.yaml names (onnxruntime's CalibrationMethod)
CALIBRATION = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
               "entropy": CalibrationMethod.Entropy}


def calibration_method(name):
    if name not in CALIBRATION:
        raise ValueError(f"calibration method must be one of {sorted(CALIBRATION)}, got {name!r}")
    return CALIBRATION[name]


def ptq(fp32_onnx_path, int8_onnx_path, calib_features, batch_size=64, method="minmax", per_channel=True,
        int16_activations=False, nodes_to_quantize=None, nodes_to_exclude=None, calibration_cache=None):
    """Post-training static INT8 quantization of an fp32 ONNX model (from export.to_onnx).
    Activation ranges come from running `calib_features` [N, n_mels, T] through the model with
    `method` (minmax | percentile | entropy); weights int8, per output channel unless
    `per_channel` is False. `int16_activations`: every activation 16-bit, symmetric (zero point 0),
    weights still int8: TFLite's "16x8" scheme (the file is then opset 21). `nodes_to_quantize` /
    `nodes_to_exclude` (node names) quantize only some layers (sensitivity analysis).
    `calibration_cache` (a JSON path) keeps the ranges of the first call for later calls on the
    same model and clips, so repeated quantizations calibrate once.
    quant_pre_process is skipped: the dynamo export is already shape-inferred and BN-folded,
    and the quantized graph came out identical with it."""
    if len(calib_features) == 0:
        raise ValueError("ptq: calib_features is empty")
    input_name = export.session(fp32_onnx_path).get_inputs()[0].name
    with _quiet_ort(), atomic.writing(int8_onnx_path) as tmp:
        quantize_static(str(fp32_onnx_path), str(tmp), _Features(calib_features, input_name, batch_size),
                        quant_format=QuantFormat.QDQ, per_channel=per_channel,
                        activation_type=QuantType.QInt16 if int16_activations else QuantType.QInt8,
                        weight_type=QuantType.QInt8, calibrate_method=calibration_method(method),
                        nodes_to_quantize=nodes_to_quantize, nodes_to_exclude=nodes_to_exclude,
                        extra_options={"ActivationSymmetric": bool(int16_activations)},
                        calibration_cache_path=calibration_cache)
    return int8_onnx_path


@contextlib.contextmanager
def _quiet_ort():
    """quantize_static logs a pre-processing hint on every call (see `ptq` for why it is skipped)
    and its histogram calibrators print their settings: one stage log line per call otherwise."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.setLevel(level)


# TFLite's int8 LOGISTIC takes exactly this output range: [0, 1) in 256 steps.
SIGMOID_QSPEC = FixedQParamsQuantizationSpec(dtype=torch.int8, scale=1 / 256, zero_point=-128, quant_min=-128,
                                             quant_max=127, qscheme=torch.per_tensor_affine)


class _Quantizer(XNNPACKQuantizer):
    """The XNNPACK scheme plus the two ops of BC-ResNet it leaves float: sigmoid (SiLU's gate),
    with TFLite's fixed output range, and avg_pool2d, sharing its input's range as TFLite's int8
    AVERAGE_POOL_2D requires. Hand-written: no torchao quantizer annotates them for int8."""

    def annotate(self, model):
        model = super().annotate(model)
        act = self.global_config.input_activation
        for node in model.graph.nodes:
            if node.op != "call_function" or "quantization_annotation" in node.meta:
                continue
            src = node.args[0] if node.args else None
            if node.target == torch.ops.aten.sigmoid.default:
                node.meta["quantization_annotation"] = QuantizationAnnotation({src: act}, SIGMOID_QSPEC, _annotated=True)
                for user in node.users:  # the gate enters the Mul at its own range: no requantize between
                    ann = user.meta.get("quantization_annotation")
                    if ann is not None and node in ann.input_qspec_map:
                        ann.input_qspec_map[node] = SharedQuantizationSpec(node)
            elif node.target == torch.ops.aten.avg_pool2d.default:
                node.meta["quantization_annotation"] = QuantizationAnnotation(
                    {src: act}, SharedQuantizationSpec((src, node)), _annotated=True)
        propagate_annotation(model)  # again: reshapes after these ops share their ranges too
        return model


# TFLite's 16x8 activations: symmetric int16, zero point 0 (its int16 kernels assume it)
INT16_ACTIVATION = QuantizationSpec(dtype=torch.int16, quant_min=-32767, quant_max=32767, is_dynamic=False,
                                    qscheme=torch.per_tensor_symmetric,
                                    observer_or_fake_quant_ctr=MinMaxObserver.with_args(eps=2**-20))


def _quantizer(is_qat, int16_activations=False):
    """The XNNPACK symmetric per-channel scheme (`_Quantizer`). For PTQ the activation observers
    are min/max, as in `ptq`'s CalibrationMethod.MinMax, so both PTQ routes pick the same ranges
    from the same clips (the scheme's default histogram observer searches for narrower, clipping ones).
    `int16_activations` (PTQ only): every activation `INT16_ACTIVATION`, weights int8 (16x8)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*Quantizer is deprecated")  # see the import
        quantizer = _Quantizer()
    config = get_symmetric_quantization_config(is_per_channel=True, is_qat=is_qat)
    if not is_qat:
        act = (INT16_ACTIVATION if int16_activations else
               dataclasses.replace(config.input_activation, observer_or_fake_quant_ctr=MinMaxObserver.with_args(eps=2**-12)))
        config = dataclasses.replace(config, input_activation=act, output_activation=act)
    return quantizer.set_global(config)


def _export(model, example_input, train):
    """torch.export graph of a copy of `model` (torch.export would share its parameters), in its
    deployable form (models.deployable: BC-ResNet's sub-spectral norm folded; in QAT it then
    stays at its trained statistics while the other BatchNorms keep updating)."""
    args, dynamic_shapes = export.dynamic_batch(example_input)
    model = copy.deepcopy(models.deployable(model)).train(train)
    return torch.export.export(model, args, dynamic_shapes=dynamic_shapes).module()


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


def ptq_reference(model, calib_features, batch_size=64, int16_activations=False):
    """Post-training quantization of an fp32 torch model in PT2E: the same scheme and min/max
    ranges over the same calibration clips [N, n_mels, T] as `ptq` (with 16-bit activations when
    `int16_activations`), as a torch quantized reference."""
    if len(calib_features) == 0:
        raise ValueError("ptq_reference: calib_features is empty")
    calib = torch.as_tensor(np.asarray(calib_features, dtype=np.float32))
    prepared = prepare_pt2e(_export(model, calib[:8], train=False), _quantizer(False, int16_activations))
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


LAYOUT_OPS = {"Reshape", "Unsqueeze", "Squeeze", "Flatten", "Transpose"}  # move data, compute nothing
FUSED_ACTIVATIONS = {"Relu", "Clip"}  # int8 kernels apply these in the requantize of the op before


def float_nodes(onnx_path):
    """Compute nodes of a QDQ ONNX model that run on float data: (op type, node name) of each
    node other than Quantize/DequantizeLinear and layout ops (`LAYOUT_OPS`, e.g. the Unsqueeze of
    the float input before its QuantizeLinear) with a float input that is not a DequantizeLinear
    output, or an output that is not requantized at once (fed only to QuantizeLinear, directly or
    through a fused Relu). An all-integer model has none: every op then maps to an int8 kernel."""
    graph = onnx.load(str(onnx_path)).graph
    float_sources = ({i.name for i in graph.initializer if numpy_helper.to_array(i).dtype.kind == "f"}
                     | {i.name for i in graph.input})
    producer = {o: n for n in graph.node for o in n.output}
    consumers = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    outputs = {o.name for o in graph.output}

    def requantized(name):
        return name not in outputs and all(
            c.op_type == "QuantizeLinear" or (c.op_type in FUSED_ACTIVATIONS and all(map(requantized, c.output)))
            for c in consumers.get(name, []))

    def dequantized(name, node):
        source = producer.get(name)
        if name in float_sources or (source is not None and source.op_type != "DequantizeLinear"):
            return node.op_type in FUSED_ACTIVATIONS and name not in float_sources and requantized(name)
        return True

    return [(node.op_type, node.name) for node in graph.node
            if node.op_type not in {"QuantizeLinear", "DequantizeLinear"} | LAYOUT_OPS
            and not (all(dequantized(name, node) for name in node.input if name)
                     and all(map(requantized, node.output)))]


def parity(int8_onnx_path, reference, features, batch_size=256):
    """Share of clips whose top-1 class agrees between onnxruntime (INT8 file) and `reference`
    (a torch model, e.g. convert's output, or a callable features -> logits as numpy)."""
    want = (models.logits(reference, torch.as_tensor(np.asarray(features, dtype=np.float32)), batch_size).numpy()
            if isinstance(reference, torch.nn.Module) else reference(features))
    return metrics.top1_agreement(export.ort_logits(int8_onnx_path, features, batch_size), {"ref": want})["ref"]


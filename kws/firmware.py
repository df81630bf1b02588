"""The firmware form of an INT8 model and its measured deployment figures.

A TensorFlow Lite flatbuffer (.tflite) is what TFLite Micro, CMSIS-NN, ST Edge AI and Edge Impulse
take. litert-torch writes it from a PT2E torch quantized reference (kws.quant): the graph's
quantize/dequantize pairs become the tensors' quantization parameters, so QAT ranges carry over
and nothing is re-calibrated. TFLite Micro's own interpreter (the tflite-micro wheel) then runs
it on the host: flash is the file, the arena is the smallest one TFLM accepts and runs with. The
wheel has TFLM's reference kernels: CMSIS-NN kernels need scratch buffers on top, and the
runtime's code and per-op structs are not in these figures (see `footprint` for estimates).
"""
import contextlib
import os
from collections import Counter
from pathlib import Path

import litert_torch
import numpy as np
from ai_edge_litert.tools import flatbuffer_utils
from ai_edge_litert.tools.flatbuffer_utils import schema_fb
from litert_torch.quantize import pt2e_quantizer, quant_config
from tflite_micro.python.tflite_micro import runtime

from kws import atomic

MEASURED_ON = "host TFLM, reference kernels"
MAX_ARENA = 1 << 22  # bisection's upper end; TFLM on the host takes any size

litert_torch.config.show_progress = False  # one line per conversion pass otherwise


def to_tflite(reference, example_input, path):
    """Torch quantized reference (kws.quant.convert: fold_quantize=False) -> integer .tflite at
    batch 1: per-channel int8 weights; int8 activations, input and output with int32 bias, or
    (a 16x8 reference) int16 ones with int64 bias."""
    # litert-torch reads only the mode (static) from the config: the graph is quantized already,
    # and each tensor's integer type comes from its quantize/dequantize pair.
    quantizer = pt2e_quantizer.PT2EQuantizer().set_global(
        pt2e_quantizer.get_symmetric_quantization_config(is_per_channel=True))
    edge_model = litert_torch.convert(reference, (example_input[:1],),
                                      quant_config=quant_config.QuantConfig(pt2e_quantizer=quantizer))
    path = Path(path)
    with atomic.writing(path) as tmp:
        edge_model.export(str(tmp))
        tmp.write_bytes(stripped(tmp.read_bytes()))
        interpreter(tmp.read_bytes(), MAX_ARENA)  # fails here on float or mixed I/O
    return path


def stripped(model_bytes):
    """The flatbuffer without tensor names, description and signature (TFLite's strip_strings):
    ~8 KB of flash a firmware build has no use for; the interpreter needs none of it."""
    model = _flatbuffer(model_bytes)
    flatbuffer_utils.strip_strings(model)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


IO_TYPES = {np.int8: "int8", np.int16: "16x8"}  # the input/output type -> the model's precision


def interpreter(model_bytes, arena_bytes):
    """A TFLM interpreter with a tensor arena of `arena_bytes`; RuntimeError if the model does
    not fit in it, ValueError unless its input and output are both int8 or both int16."""
    tflm = runtime.Interpreter.from_bytes(model_bytes, arena_size=arena_bytes)
    types = {tflm.get_input_details(0)["dtype"], tflm.get_output_details(0)["dtype"]}
    if len(types) != 1 or not types <= set(IO_TYPES):
        raise ValueError(f"model input/output is {'/'.join(sorted(t.__name__ for t in types))}, "
                         "expected int8 (int8 model) or int16 (16x8 model)")
    return tflm


# A clip counts for the parity gate when its reference top-1 leads by more than this many output
# steps of the .tflite: TFLM and the torch/ONNX int8 references round differently, so logits
# differ by an LSB or two, and a weak model has enough near-ties that up to ~2% of clips flip
# (98.4% on 853 real test clips for a 9.9k-parameter pruned model) with nothing wrong. A real
# conversion fault (a float op left in, a wrong scale) moves clear decisions too.
NEAR_TIE_STEPS = 2


def output_steps(got, want, out_step):
    """Mean and largest |difference| between two sets of logits, in output steps of the .tflite:
    one or two is rounding; a deep net of many requantizing ops (BC-ResNet) accumulates more."""
    d = np.abs(np.asarray(got) - np.asarray(want)) / out_step
    return {"mean": float(d.mean()), "max": float(d.max())}


def _qparams(details):
    q = details["quantization_parameters"]
    return float(q["scales"][0]), int(q["zero_points"][0])


def io_quantization(model_bytes):
    """(input, output) (scale, zero point) of the model: real = scale * (q - zero point)."""
    tflm = interpreter(model_bytes, MAX_ARENA)
    return _qparams(tflm.get_input_details(0)), _qparams(tflm.get_output_details(0))


def io_type(model_bytes):
    """The integer type of the model's input and output: np.int8 or np.int16 (a 16x8 model)."""
    return interpreter(model_bytes, MAX_ARENA).get_input_details(0)["dtype"]


def quantize(features, scale, zero_point, dtype=np.int8):
    """Float features -> the integer input tensor of `dtype` (nearest, ties to even, clamped to
    the type's range; the firmware does this step)."""
    info = np.iinfo(dtype)
    q = np.round(np.asarray(features, dtype=np.float32) / scale) + zero_point
    return np.clip(q, info.min, info.max).astype(dtype)


def invoke(tflm, x):
    """Integer outputs [N, C] of an interpreter on integer inputs [N, ...], one clip at a time as on the MCU."""
    out = []
    for clip in x:
        tflm.set_input(clip[None], 0)
        tflm.invoke()
        out.append(tflm.get_output(0)[0])
    return np.stack(out)


def run(model_bytes, features, arena_bytes=MAX_ARENA):
    """Logits [N, C] of the model on features [N, n_mels, T]: features quantized to the integer
    input, integer output dequantized."""
    tflm = interpreter(model_bytes, arena_bytes)
    in_scale, in_zero = _qparams(tflm.get_input_details(0))
    out_scale, out_zero = _qparams(tflm.get_output_details(0))
    out = invoke(tflm, quantize(features, in_scale, in_zero, tflm.get_input_details(0)["dtype"]))
    return (out.astype(np.float32) - out_zero) * out_scale


@contextlib.contextmanager
def _quiet_stderr():
    """TFLM prints each failed allocation to stderr; bisection fails on purpose."""
    saved = os.dup(2)
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def smallest_arena(model_bytes, probe):
    """Smallest tensor arena (bytes) with which TFLM allocates the model and gives the same
    outputs on the `probe` features as with a generous one, by bisection."""
    want = run(model_bytes, probe)

    def works(size):
        try:
            return np.array_equal(run(model_bytes, probe, size), want)
        except RuntimeError:
            return False

    low, high = 0, MAX_ARENA  # works(high), not works(low)
    with _quiet_stderr():
        while high - low > 1:
            mid = (low + high) // 2
            low, high = (low, mid) if works(mid) else (mid, high)
    return high


def _flatbuffer(model_bytes):
    return flatbuffer_utils.convert_bytearray_to_object(bytearray(model_bytes))


def weights_bytes(model_bytes):
    """Bytes of constant tensor data in the flatbuffer: int8 weights, int32 biases and the few
    int32 shape operands. The rest of the file is graph structure and quantization parameters."""
    return sum(len(b.data) for b in _flatbuffer(model_bytes).buffers if b.data is not None)


def ops(model_bytes):
    """op name -> how many times the graph runs it: what a MicroMutableOpResolver must register."""
    model = _flatbuffer(model_bytes)
    names = [flatbuffer_utils.opcode_to_name(model, op.opcodeIndex) for g in model.subgraphs for op in g.operators]
    return dict(sorted(Counter(names).items()))


def float_ops(model_bytes):
    """op name -> how many of its runs read or write a float32 tensor: empty for an all-integer
    model, whose every op is an int8 (or 16x8) kernel."""
    model = _flatbuffer(model_bytes)
    found = Counter()
    for g in model.subgraphs:
        for op in g.operators:
            if any(i >= 0 and g.tensors[i].type == schema_fb.TensorType.FLOAT32 for i in [*op.inputs, *op.outputs]):
                found[flatbuffer_utils.opcode_to_name(model, op.opcodeIndex)] += 1
    return dict(sorted(found.items()))


def measure(tflite_path, probe):
    """Flash, tensor arena and op list of a .tflite, measured with TFLM on `probe` features."""
    model_bytes = Path(tflite_path).read_bytes()
    return {"flash_bytes": len(model_bytes), "weights_bytes": weights_bytes(model_bytes),
            "arena_bytes": smallest_arena(model_bytes, probe), "ops": ops(model_bytes)}


def model_key(model_path):
    """The name firmware figures are filed under for an INT8 model file (.onnx or .tflite): its stem
    before '.int8' (a PTQ copy goes by its fp32 model's name, as in models/onnx)."""
    return Path(model_path).name.split(".")[0]


def precision(model_bytes):
    """'int8' or '16x8': what a .tflite's input and output type say its activations are."""
    return IO_TYPES[io_type(model_bytes)]


def measured_figures(firmware_metrics, int8_onnx_path):
    """The measured figures a summary row shows beside the estimates, for the model whose integer
    footprint is `int8_onnx_path` (kws.chain.int8_file): metrics/firmware.json's content in."""
    m = firmware_metrics["models"][model_key(int8_onnx_path)]
    return {"flash_bytes_measured": m["flash_bytes"], "arena_bytes_measured": m["arena_bytes"],
            "precision": m["precision"], "measured_on": firmware_metrics["measured_on"]}

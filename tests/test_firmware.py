"""INT8 .tflite from a PT2E reference, run by TFLite Micro: int8 I/O, measured arena, parity."""
import runpy

import numpy as np
import pytest
import torch
from ai_edge_litert.tools.flatbuffer_utils import schema_fb

from conftest import ROOT
from kws import firmware, metrics, models, quant


def test_tflite_is_int8_in_and_out(tiny):
    tflm = firmware.interpreter(tiny["bytes"], firmware.MAX_ARENA)
    for details in (tflm.get_input_details(0), tflm.get_output_details(0)):
        assert details["dtype"] == np.int8
    assert list(tflm.get_input_details(0)["shape"]) == [1, 40, 101]
    assert len(firmware.ops(tiny["bytes"])) > 0 and "CONV_2D" in firmware.ops(tiny["bytes"])


def test_weights_are_per_channel(tiny):
    model = firmware._flatbuffer(tiny["bytes"])
    weights = [t for t in model.subgraphs[0].tensors
               if t.type == schema_fb.TensorType.INT8 and model.buffers[t.buffer].data is not None]
    assert weights and all(len(t.quantization.scale) > 1 for t in weights)  # one scale per output channel


def test_smallest_arena_runs_and_one_byte_less_does_not(tiny):
    probe = tiny["test"][:4]
    arena = firmware.smallest_arena(tiny["bytes"], probe)
    np.testing.assert_array_equal(firmware.run(tiny["bytes"], probe, arena), firmware.run(tiny["bytes"], probe))
    with pytest.raises(RuntimeError):
        firmware.run(tiny["bytes"], probe, arena - 1)


def test_tflm_matches_torch_quantized_reference(tiny):
    got = firmware.run(tiny["bytes"], tiny["test"])
    want = models.logits(tiny["reference"], torch.as_tensor(tiny["test"])).numpy()
    scale = firmware.io_quantization(tiny["bytes"])[1][0]
    assert np.abs(got - want).max() <= scale * 1.01  # within one output LSB
    assert metrics.top1_agreement(got, {"torch": want})["torch"] >= 0.995


def test_saved_reference_loads_the_same(tiny, tmp_path):
    path = quant.save_reference(tiny["reference"], torch.as_tensor(tiny["test"][:8]), tmp_path / "r.pt2")
    x = torch.as_tensor(tiny["test"])
    torch.testing.assert_close(quant.load_reference(path)(x), tiny["reference"](x), rtol=0, atol=0)


def test_measured_figures_for_the_summary(tiny):
    figures = firmware.measure(tiny["path"], tiny["test"][:2])
    assert figures["flash_bytes"] == len(tiny["bytes"]) > figures["weights_bytes"] > 0
    metrics = {"measured_on": firmware.MEASURED_ON, "models": {"student_kd": figures}}
    row = firmware.measured_figures(metrics, "models/onnx/student_kd.int8.onnx")
    assert row == {"flash_bytes_measured": figures["flash_bytes"], "arena_bytes_measured": figures["arena_bytes"],
                   "measured_on": "host TFLM, reference kernels"}


def test_written_tflite_carries_no_strings_and_stripping_keeps_outputs(tiny):
    model = firmware._flatbuffer(tiny["bytes"])
    assert all(t.name is None for t in model.subgraphs[0].tensors) and not model.signatureDefs
    again = firmware.stripped(tiny["bytes"])
    assert len(again) == len(tiny["bytes"])  # idempotent: nothing left to strip
    np.testing.assert_array_equal(firmware.run(again, tiny["test"][:4]), firmware.run(tiny["bytes"], tiny["test"][:4]))


def test_parity_gate_skips_an_onnx_model_lifted_to_16_bits():
    """A lifted ONNX model is a different model by design; the .tflite still answers to its torch reference."""
    gated = runpy.run_path(str(ROOT / "stages" / "firmware.py"))["gated"]
    parity = {"onnx": 0.98, "torch": 0.995}
    assert gated(parity, ["features"]) == {"torch": 0.995}
    assert gated(parity, []) == parity

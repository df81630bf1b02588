"""Integer .tflite from a PT2E reference, run by TFLite Micro: int8 (or 16x8) I/O, measured arena, parity."""
import numpy as np
import pytest
import torch
from ai_edge_litert.tools.flatbuffer_utils import schema_fb

from kws import firmware, metrics, mixed, models, quant


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
    metrics = {"measured_on": firmware.MEASURED_ON, "models": {"student_kd": dict(figures)}}
    metrics["models"]["student_kd"]["precision"] = "int8"
    row = firmware.measured_figures(metrics, "models/onnx/student_kd.int8.onnx")
    assert row == {"flash_bytes_measured": figures["flash_bytes"], "arena_bytes_measured": figures["arena_bytes"],
                   "precision": "int8", "measured_on": "host TFLM, reference kernels"}


def test_written_tflite_carries_no_strings_and_stripping_keeps_outputs(tiny):
    model = firmware._flatbuffer(tiny["bytes"])
    assert all(t.name is None for t in model.subgraphs[0].tensors) and not model.signatureDefs
    again = firmware.stripped(tiny["bytes"])
    assert len(again) == len(tiny["bytes"])  # idempotent: nothing left to strip
    np.testing.assert_array_equal(firmware.run(again, tiny["test"][:4]), firmware.run(tiny["bytes"], tiny["test"][:4]))


@pytest.fixture(scope="module")
def tiny16(tiny, tmp_path_factory):
    """The `tiny` model's 16x8 .tflite (int16 activations, int8 weights), from a 16x8 reference."""
    reference = quant.ptq_reference(tiny["model"], tiny["calib"], int16_activations=True)
    path = firmware.to_tflite(reference, tiny["calib"][:8], tmp_path_factory.mktemp("tflite") / "tiny.16x8.tflite")
    return {"reference": reference, "bytes": path.read_bytes()}


def test_16x8_tflite_is_int16_in_and_out_with_int8_weights_and_no_float_op(tiny16, tiny):
    tflm = firmware.interpreter(tiny16["bytes"], firmware.MAX_ARENA)
    assert tflm.get_input_details(0)["dtype"] == tflm.get_output_details(0)["dtype"] == np.int16
    assert firmware.precision(tiny16["bytes"]) == "16x8" and firmware.precision(tiny["bytes"]) == "int8"
    assert not firmware.float_ops(tiny16["bytes"])
    model = firmware._flatbuffer(tiny16["bytes"])
    weights = [t for t in model.subgraphs[0].tensors if model.buffers[t.buffer].data is not None
               and t.type in (schema_fb.TensorType.INT8, schema_fb.TensorType.INT16)]
    assert weights and all(t.type == schema_fb.TensorType.INT8 for t in weights)  # constants stay int8
    probe = tiny["test"][:2]
    assert firmware.smallest_arena(tiny16["bytes"], probe) > firmware.smallest_arena(tiny["bytes"], probe)


def test_16x8_tflm_matches_its_torch_reference(tiny16, tiny):
    got = firmware.run(tiny16["bytes"], tiny["test"])
    want = models.logits(tiny16["reference"], torch.as_tensor(tiny["test"])).numpy()
    scale = firmware.io_quantization(tiny16["bytes"])[1][0]
    assert np.abs(got - want).max() <= scale * firmware.NEAR_TIE_STEPS  # measured: 2 output steps at most
    assert metrics.top1_agreement(got, {"torch": want})["torch"] >= 0.995


def test_interpreter_refuses_float_io(tmp_path):
    reference = models.build("tc_resnet", models.tc_resnet_kwargs(8, 0.25, 40, 12)).eval()
    edge = firmware.litert_torch.convert(reference, (torch.randn(1, 40, 101),))
    edge.export(str(tmp_path / "f.tflite"))
    with pytest.raises(ValueError, match="float32.*expected int8"):
        firmware.interpreter((tmp_path / "f.tflite").read_bytes(), firmware.MAX_ARENA)


def test_16x8_is_offered_to_tc_resnets_only():
    assert mixed.runs_16x8(models.build(*models.preset("tc_resnet8", 0.5, 40, 12)))
    assert not mixed.runs_16x8(models.build(*models.preset("bc_resnet", 1.0, 40, 12)))


def test_output_steps_measures_the_spread_in_output_steps():
    got = np.array([[0.0, 1.0], [2.0, 0.5]])
    want = np.array([[0.1, 1.0], [1.6, 0.5]])
    steps = firmware.output_steps(got, want, out_step=0.1)
    assert steps["max"] == pytest.approx(4.0) and steps["mean"] == pytest.approx(1.25)

import warnings

import numpy as np
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from kws import footprint, models

N_MELS, FRAMES, N_CLASSES = 40, 101, 12


def make_model(nodes, inputs, outputs, initializers=()):
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def fvalue(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def weight(name, shape, dtype=np.float32):
    return numpy_helper.from_array(np.ones(shape, dtype), name)


def export_tc_resnet8(width, out_dir):
    """fp32 and INT8 QDQ ONNX of a TC-ResNet8 with random BN statistics (so folded biases are
    distinct and nonzero, as after training). Returns (torch model, fp32 path, int8 path)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    torch.manual_seed(0)
    model = models.build(*models.preset("tc_resnet8", width, N_MELS, N_CLASSES))
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm1d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.bias.data.uniform_(-0.5, 0.5)
    model.eval()
    fp32, pre, int8 = (str(out_dir / f"w{width}_{s}.onnx") for s in ("fp32", "pre", "int8"))
    with warnings.catch_warnings():  # the TorchScript exporter warns it is deprecated
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.randn(1, N_MELS, FRAMES),), fp32, dynamo=False, external_data=False,
                          opset_version=17, input_names=["x"], output_names=["logits"])

    class Calibration(CalibrationDataReader):
        def __init__(self):
            rng = np.random.default_rng(0)
            self.batches = iter([{"x": rng.standard_normal((1, N_MELS, FRAMES), dtype=np.float32)}
                                 for _ in range(8)])

        def get_next(self):
            return next(self.batches, None)

    quant_pre_process(fp32, pre)
    quantize_static(pre, int8, Calibration(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
    return model, fp32, int8


@pytest.fixture(scope="module")
def tc8(tmp_path_factory):
    return export_tc_resnet8(0.5, tmp_path_factory.mktemp("tc8"))


def test_chain_liveness_and_plan_by_hand():
    # x[1,8,20] -conv1x1-> a[1,24,20] -maxpool2-> b[1,24,10] -conv1x1-> y[1,4,10]
    model = make_model(
        [helper.make_node("Conv", ["x", "w1"], ["a"], name="conv1"),
         helper.make_node("MaxPool", ["a"], ["b"], name="pool", kernel_shape=[2], strides=[2]),
         helper.make_node("Conv", ["b", "w2"], ["y"], name="conv2")],
        [fvalue("x", [1, 8, 20])], [fvalue("y", [1, 4, 10])],
        [weight("w1", [24, 8, 1]), weight("w2", [4, 24, 1])])
    tensors, steps = footprint.activation_graph(model, bytes_per_element=1)
    assert tensors == {"x": 160, "a": 480, "b": 240, "y": 40}
    assert steps == [("conv1", ["x"], ["a"]), ("pool", ["a"], ["b"]), ("conv2", ["b"], ["y"])]
    # live per step: x+a = 640, a+b = 720, b+y = 280
    assert footprint.peak_sram_liveness(tensors, steps) == (720, 1)
    # greedy: a@0, b@480 (overlaps a), x@480 (overlaps a only), y@0 (overlaps b only)
    assert footprint.peak_sram_planned(tensors, steps) == (720, {"a": 0, "b": 480, "x": 480, "y": 0})
    # an fp32 graph defaults to 4 bytes per element
    assert footprint.activation_graph(model)[0] == {t: 4 * n for t, n in tensors.items()}


def test_residual_skip_stays_alive_by_hand():
    # x[1,4,10] -conv3-> c1[1,8,10] -relu-> r -conv3-> c2[1,4,10] -add(x)-> y
    model = make_model(
        [helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1", pads=[1, 1]),
         helper.make_node("Relu", ["c1"], ["r"], name="relu"),
         helper.make_node("Conv", ["r", "w2"], ["c2"], name="conv2", pads=[1, 1]),
         helper.make_node("Add", ["c2", "x"], ["y"], name="add")],
        [fvalue("x", [1, 4, 10])], [fvalue("y", [1, 4, 10])],
        [weight("w1", [8, 4, 3]), weight("w2", [4, 8, 3])])
    tensors, steps = footprint.activation_graph(model, bytes_per_element=1)
    assert tensors == {"x": 40, "c1": 80, "r": 80, "c2": 40, "y": 40}
    assert footprint.lifetimes(tensors, steps)["x"] == (0, 3)
    # live per step: x+c1 = 120, x+c1+r = 200, x+r+c2 = 160, x+c2+y = 120 (160 at step 1 without the skip)
    assert footprint.peak_sram_liveness(tensors, steps) == (200, 1)
    # greedy: c1@0, r@80, x@160 (overlaps both), c2@0 (c1 is dead by then), y@40
    arena, offsets = footprint.peak_sram_planned(tensors, steps)
    assert (arena, offsets) == (200, {"c1": 0, "r": 80, "x": 160, "c2": 0, "y": 40})


def test_greedy_planner_can_exceed_liveness_bound():
    # chain c(200) -> d(100) -> b(100) -> a(200): liveness 300, but largest-first puts c and a at
    # offset 0; d (live with c) then goes to 200 and b (live with d and a) to 300
    tensors = {"c": 200, "d": 100, "b": 100, "a": 200}
    steps = [("s0", [], ["c"]), ("s1", ["c"], ["d"]), ("s2", ["d"], ["b"]), ("s3", ["b"], ["a"])]
    assert footprint.peak_sram_liveness(tensors, steps) == (300, 1)
    assert footprint.peak_sram_planned(tensors, steps) == (400, {"c": 0, "a": 0, "d": 200, "b": 300})


def test_lifetimes_reject_unsized_tensors():
    with pytest.raises(ValueError, match="no size"):
        footprint.lifetimes({"x": 1}, [("op", ["x"], ["y"])])


def tiny_qdq_conv():
    """x[1,2,5] -Q/DQ-> Conv(3 out, k3, pad 1, per-channel int8 weights, int32 bias) -Q/DQ->
    Reshape to [1,15]: the QDQ pattern quantize_static writes."""
    f32, i8, i32 = np.float32, np.int8, np.int32
    inits = [numpy_helper.from_array(np.array(v, t), n) for n, v, t in [
        ("x_scale", 0.1, f32), ("x_zp", 0, i8), ("y_scale", 0.2, f32), ("y_zp", 0, i8),
        ("w_q", np.ones((3, 2, 3)), i8), ("w_scale", [0.1] * 3, f32), ("w_zp", [0] * 3, i8),
        ("b_q", [1, 2, 3], i32), ("b_scale", [0.01] * 3, f32), ("b_zp", [0] * 3, i32),
        ("shape", [1, 15], np.int64)]]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zp"], ["x_q"]),
        helper.make_node("DequantizeLinear", ["x_q", "x_scale", "x_zp"], ["x_dq"]),
        helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zp"], ["w"], axis=0),
        helper.make_node("DequantizeLinear", ["b_q", "b_scale", "b_zp"], ["b"], axis=0),
        helper.make_node("Conv", ["x_dq", "w", "b"], ["y"], name="conv", pads=[1, 1]),
        helper.make_node("QuantizeLinear", ["y", "y_scale", "y_zp"], ["y_q"]),
        helper.make_node("DequantizeLinear", ["y_q", "y_scale", "y_zp"], ["y_dq"]),
        helper.make_node("Reshape", ["y_dq", "shape"], ["out"]),
    ]
    return make_model(nodes, [fvalue("x", [1, 2, 5])], [fvalue("out", [1, 15])], inits)


def test_flash_bytes_tiny_qdq_conv_by_hand():
    flash = footprint.flash_bytes(tiny_qdq_conv())
    # weights 3*2*3 int8; biases 3 int32; qparams: weight scales 3*4 + zero points 3*1,
    # activations x and y 4+1 each; bias scale/zp are derived, the int64 shape is not flash
    assert flash == {"dtype": "int8", "weights": 18, "biases": 12, "qparams": 15 + 10, "other": 0, "total": 55}


def test_qdq_pairs_fuse_into_one_int8_step():
    tensors, steps = footprint.activation_graph(tiny_qdq_conv())
    # Q/DQ and the Reshape alias the conv output; the int8 input is the graph input x
    assert steps == [("conv", ["x"], ["y"])]
    assert tensors == {"x": 10, "y": 15}


def test_macs_tiny_nets_by_hand():
    # 1-D conv 2->4, k3, T=10: 4*10 outputs * 2*3 = 240; Gemm 40->5: 200. Symbolic batch -> 1.
    net1d = make_model(
        [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1]),
         helper.make_node("Flatten", ["c"], ["f"]),
         helper.make_node("Gemm", ["f", "fc"], ["y"], transB=1)],
        [fvalue("x", ["N", 2, 10])], [fvalue("y", ["N", 5])], [weight("w", [4, 2, 3]), weight("fc", [5, 40])])
    assert footprint.macs(net1d) == 240 + 200
    # depthwise 2-D conv, 4 groups, k3x3, stride 2 on 6x6: 4*3*3 outputs * 1*9 = 324; MatMul 36->5: 180
    net2d = make_model(
        [helper.make_node("Conv", ["x", "w"], ["c"], group=4, strides=[2, 2], pads=[1, 1, 1, 1]),
         helper.make_node("Flatten", ["c"], ["f"]),
         helper.make_node("MatMul", ["f", "fc"], ["y"])],
        [fvalue("x", [1, 4, 6, 6])], [fvalue("y", [1, 5])], [weight("w", [4, 1, 3, 3]), weight("fc", [36, 5])])
    assert footprint.macs(net2d) == 324 + 180


def torch_macs(model):
    """MACs from forward hooks: each conv output element costs c_in/groups * kernel MACs."""
    total = []

    def hook(m, _, out):
        per_output = m.in_features if isinstance(m, torch.nn.Linear) else m.weight[0].numel()
        total.append(out.numel() * per_output)

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, (torch.nn.Conv1d, torch.nn.Linear))]
    with torch.no_grad():
        model(torch.zeros(1, N_MELS, FRAMES))
    for h in handles:
        h.remove()
    return sum(total)


def test_macs_match_torch(tc8):
    model, fp32, int8 = tc8
    assert footprint.macs(fp32) == footprint.macs(int8) == torch_macs(model)


def test_tc_resnet8_int8(tc8):
    model, fp32, int8 = tc8
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv1d)]
    n_weights = sum(m.weight.numel() for m in convs) + model.fc.weight.numel()
    n_biases = sum(m.out_channels for m in convs) + N_CLASSES  # BN folds into a bias per conv
    flash = footprint.flash_bytes(int8)
    assert (flash["weights"], flash["biases"], flash["other"]) == (n_weights, 4 * n_biases, 0)
    assert 0 < flash["qparams"] < 0.1 * flash["total"]
    assert footprint.flash_bytes(fp32) == {"dtype": "float32", "total": 4 * (n_weights + n_biases)}

    tensors, steps = footprint.activation_graph(int8)
    ops = {name.rsplit("/", 1)[-1].rstrip("_0123456789") for name, _, _ in steps}
    assert ops == {"Conv", "Add", "ReduceMean", "Gemm"}  # Q/DQ and the folded Relus are gone
    peak, step = footprint.peak_sram_liveness(tensors, steps)
    stem = model.stem.out_channels
    assert (peak, step) == (N_MELS * FRAMES + stem * FRAMES, 0)  # int8 input + stem output
    assert footprint.peak_sram_planned(tensors, steps)[0] >= peak
    fp32_tensors, fp32_steps = footprint.activation_graph(fp32)
    assert footprint.peak_sram_liveness(fp32_tensors, fp32_steps)[0] == 4 * peak

    summary = footprint.summarize(int8, n_runs=5, warmup=1)
    assert summary["flash"] == flash and summary["macs"] == torch_macs(model)
    assert summary["sram_liveness"]["bytes"] == peak <= summary["sram_planned"]
    assert 0 < summary["latency"]["median_ms"] <= summary["latency"]["p90_ms"]


def test_qoperator_models_are_rejected():
    model = make_model([helper.make_node("ConvInteger", ["x", "w"], ["y"])],
                       [helper.make_tensor_value_info("x", TensorProto.INT8, [1, 1, 4])],
                       [helper.make_tensor_value_info("y", TensorProto.INT32, [1, 1, 4])],
                       [weight("w", [1, 1, 1], np.int8)])
    with pytest.raises(ValueError, match="QDQ"):
        footprint.flash_bytes(model)

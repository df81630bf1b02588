"""ONNX export, PTQ and QAT on a tiny TC-ResNet and a toy task it learns in a few steps."""
import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from onnx import numpy_helper

from kws import export, models, quant

N_CLASSES = 12


def toy_batch(gen, protos, n):
    """Noisy copies of one fixed random pattern per class: learnable in a few dozen steps, so
    top-1 decisions have margins and parity is not decided by near-ties."""
    y = torch.randint(0, N_CLASSES, (n,), generator=gen)
    return protos[y] + torch.randn(n, 40, 101, generator=gen), y


def train(model, gen, protos, steps, lr=3e-3, batch=64):
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr)
    for _ in range(steps):
        x, y = toy_batch(gen, protos, batch)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    protos = torch.randn(N_CLASSES, 40, 101, generator=gen)
    model = models.build(*models.preset("tc_resnet8", 0.5, 40, N_CLASSES))
    train(model, gen, protos, steps=30)
    test_x, _ = toy_batch(gen, protos, 200)
    calib_x, _ = toy_batch(gen, protos, 128)
    return {"model": model.eval(), "gen": gen, "protos": protos, "test": test_x.numpy(), "calib": calib_x.numpy()}


@pytest.fixture(scope="module")
def fp32_onnx(setup, tmp_path_factory):
    return export.to_onnx(setup["model"], torch.as_tensor(setup["test"][:8]), tmp_path_factory.mktemp("fp32") / "m.onnx")


def observer_state(qat_model):
    return {k: v.clone() for k, v in qat_model.state_dict().items() if k.startswith("activation_post_process")}


def same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def qat_result(setup, tmp_path_factory):
    before = {k: v.clone() for k, v in setup["model"].state_dict().items()}
    example = torch.as_tensor(setup["test"][:8])
    checks = {}

    def train_fn(qat_model):
        quant.set_train_mode(qat_model, True)
        start = observer_state(qat_model)
        train(qat_model, setup["gen"], setup["protos"], steps=5, lr=1e-3)
        checks["train_moves_ranges"] = not same(start, observer_state(qat_model))
        quant.set_train_mode(qat_model, False)
        trained = observer_state(qat_model)
        with torch.no_grad():
            qat_model(10 * example)  # would widen every activation range if observers ran
        checks["eval_keeps_ranges"] = same(trained, observer_state(qat_model))

    reference = quant.qat(setup["model"], example, train_fn)
    path = quant.to_int8_onnx(reference, example, tmp_path_factory.mktemp("qat") / "m_int8.onnx")
    checks["fp32_untouched"] = same(before, setup["model"].state_dict())
    return {"reference": reference, "path": path, **checks}


def conv_quant_params(path):
    """For every Conv/Gemm, in graph order: (weight, weight scale, bias, bias scale, input zero
    point) behind its DequantizeLinear inputs."""
    graph = onnx.load(path).graph
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    out = []
    for node in graph.node:
        if node.op_type not in ("Conv", "Gemm"):
            continue
        dq_x, dq_w, dq_b = (producer.get(name) for name in node.input[:3])
        for dq in (dq_x, dq_w, dq_b):
            assert dq is not None and dq.op_type == "DequantizeLinear", f"{node.name}: input not dequantized"
        out.append((inits[dq_w.input[0]], inits[dq_w.input[1]], inits[dq_b.input[0]], inits[dq_b.input[1]],
                    inits[dq_x.input[2]]))
    return out


def assert_int8_scheme(path, n_layers):
    params = conv_quant_params(path)
    assert len(params) == n_layers
    for weight, scale, bias, _, x_zero_point in params:
        assert weight.dtype == np.int8 and weight.min() >= -127  # symmetric range
        assert scale.shape == (weight.shape[0],)  # one scale per output channel
        assert bias.dtype == np.int32
        assert x_zero_point.dtype == np.int8  # int8 activations


def test_fp32_export_single_file_matches_torch(setup, fp32_onnx):
    assert not fp32_onnx.with_name(fp32_onnx.name + ".data").exists()
    model = onnx.load(fp32_onnx)
    assert model.opset_import[0].version >= 17
    assert "BatchNormalization" not in {n.op_type for n in model.graph.node}  # folded into Conv
    for n in (1, 37):  # dynamic batch
        x = setup["test"][:n]
        with torch.no_grad():
            want = setup["model"](torch.as_tensor(x)).numpy()
        np.testing.assert_allclose(export.ort_logits(fp32_onnx, x, batch_size=16), want, atol=1e-4)


def test_ptq_int8_agrees_with_fp32(setup, fp32_onnx):
    path = quant.ptq(fp32_onnx, fp32_onnx.with_name("m_int8.onnx"), setup["calib"])
    assert_int8_scheme(path, n_layers=11)  # 10 convs + fc
    fp32 = export.ort_logits(fp32_onnx, setup["test"]).argmax(1)
    int8 = export.ort_logits(path, setup["test"]).argmax(1)
    assert (fp32 == int8).mean() >= 0.95


def test_pt2e_ptq_reference_matches_onnxruntime_ptq(setup, fp32_onnx):
    """The firmware's PTQ route (PT2E, min/max ranges) against quantize_static on the same clips.
    Both pick the same activation scales; logits differ by at most one output LSB of rounding,
    which flips 2 of these 200 noisy toy clips (measured), hence 0.98 here."""
    path = quant.ptq(fp32_onnx, fp32_onnx.with_name("m_int8_for_pt2e.onnx"), setup["calib"])
    assert quant.parity(path, quant.ptq_reference(setup["model"], setup["calib"]), setup["test"]) >= 0.98


def test_ptq_rejects_empty_calibration(fp32_onnx):
    with pytest.raises(ValueError, match="empty"):
        quant.ptq(fp32_onnx, fp32_onnx.with_name("never.onnx"), np.zeros((0, 40, 101), np.float32))


def test_qat_observers_run_only_in_train_mode(qat_result):
    assert qat_result["eval_keeps_ranges"] and qat_result["train_moves_ranges"]


def test_qat_int8_onnx_matches_torch_reference(setup, qat_result):
    assert qat_result["fp32_untouched"]
    reference = qat_result["reference"]
    assert any("quantize_per_tensor" in str(n.target) for n in reference.graph.nodes)
    assert_int8_scheme(qat_result["path"], n_layers=11)
    assert not qat_result["path"].with_name(qat_result["path"].name + ".data").exists()
    assert quant.parity(qat_result["path"], reference, setup["test"]) >= 0.995


def test_qat_reference_bias_is_the_int32_bias_of_the_file(qat_result):
    """The torch reference must add the same int32 bias the INT8 file (and an MCU) adds."""
    reference = qat_result["reference"]
    layers = (torch.ops.aten.conv1d.default, torch.ops.aten.linear.default)
    torch_bias = [reference.get_parameter(n.args[2].target).detach().numpy()
                  for n in reference.graph.nodes if n.target in layers]
    onnx_bias = [bias * scale for _, _, bias, scale, _ in conv_quant_params(qat_result["path"])]
    assert len(torch_bias) == len(onnx_bias) == 11
    for want in torch_bias:  # ORT re-sorts nodes, so match each layer to its closest bias
        err = min(np.abs(got - want).max() for got in onnx_bias if got.shape == want.shape)
        assert err <= 1e-6 * np.abs(want).max()


def test_parity_counts_disagreements(setup, qat_result):
    flipped = lambda x: -export.ort_logits(qat_result["path"], x)  # noqa: E731
    assert quant.parity(qat_result["path"], flipped, setup["test"]) < 0.2

"""A planted outlier channel: one stem channel scaled by 100 and the next layers' weights reading
it divided by 100, so the fp32 model computes the same function. Plain per-tensor INT8 PTQ loses
most of its accuracy (the activation scale grows 100x and erases the other channels); the
pipeline's PTQ (the params.yaml `quantize` block) keeps it, and 16-bit activations (16x8) alone
buy most of it back, in the ONNX model and in the .tflite TFLite Micro runs."""
import copy
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from kws import equalize, export, firmware, mixed, models, quant, sensitivity
from test_quant import N_CLASSES, toy_batch, train

ROOT = Path(__file__).resolve().parents[1]
OUTLIER = 100.0
CHANNEL = 3
MAX_FRR = 0.01


def plant(model, channel=CHANNEL, factor=OUTLIER):
    """A copy of `model` whose stem output channel is `factor` times larger, compensated exactly
    in the two convs of the first block that read it."""
    model = copy.deepcopy(model)
    scale = torch.ones(model.stem_bn.num_features)
    scale[channel] = factor
    first = model.blocks[0]
    equalize.scale_channels(model.stem_bn, [first.conv1, first.shortcut[0]], scale)
    return model


@pytest.fixture(scope="module")
def toy():
    """A TC-ResNet8 x0.5 trained to ~80% on a hard toy task (faint class patterns in noise), so
    that it needs the fine resolution of every channel, as a real keyword spotter does."""
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    protos = 0.3 * torch.randn(N_CLASSES, 40, 101, generator=gen)
    model = models.build(*models.preset("tc_resnet8", 0.5, 40, N_CLASSES))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the same toy whatever the machine's thread count (two sum in another order)
    try:
        train(model, gen, protos, steps=200)
    finally:
        torch.set_num_threads(threads)
    sets = {name: toy_batch(gen, protos, n) for name, n in (("val", 300), ("test", 300), ("calib", 128))}
    return {"model": model.eval(), **{k: (x.numpy(), y.numpy()) for k, (x, y) in sets.items()}}


def top1(path, data):
    x, y = data
    return float(np.mean(export.ort_logits(path, x).argmax(1) == y))


def pipeline_ptq(model, toy, out, **overrides):
    """The pipeline's PTQ with params.yaml's `quantize` defaults (and `overrides`)."""
    p = {**yaml.safe_load((ROOT / "params.yaml").read_text())["quantize"], **overrides}
    int8 = out / "m.int8.onnx"
    report = mixed.quantize_model(model, torch.as_tensor(toy["calib"][0][:8]), out / "m.fp32.onnx", int8,
                                  toy["calib"][0][:p["calib_clips"]], *toy["val"], MAX_FRR, equalize=p["equalize"],
                                  max_int8_loss=p["max_int8_loss"], method=p["method"], per_channel=p["per_channel"],
                                  activations=p["activations"])
    return int8, report


def test_planting_keeps_the_fp32_function(toy):
    x = torch.as_tensor(toy["test"][0][:64])
    planted = plant(toy["model"])
    with torch.no_grad():
        want, got = toy["model"](x), planted(x)
        acts = planted.stem_bn(planted.stem(x)).relu().amax(dim=(0, 2))
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    others = torch.cat([acts[:CHANNEL], acts[CHANNEL + 1:]])
    assert acts[CHANNEL] > 20 * others.median()  # a real outlier channel


def test_equalization_is_exact_and_undoes_the_plant(toy):
    x = torch.as_tensor(toy["test"][0][:64])
    plain, planted = equalize.equalize(toy["model"]), equalize.equalize(plant(toy["model"]))
    with torch.no_grad():
        torch.testing.assert_close(plain(x), toy["model"](x), rtol=1e-4, atol=1e-4)
    for (name, a), b in zip(plain.state_dict().items(), planted.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)


def test_plain_ptq_collapses_and_the_pipelines_ptq_does_not(toy, tmp_path):
    planted = plant(toy["model"])
    fp32 = export.to_onnx(planted, torch.as_tensor(toy["calib"][0][:8]), tmp_path / "planted.fp32.onnx")
    # int8 per-tensor activations and nothing else
    plain = quant.ptq(fp32, tmp_path / "planted.int8.onnx", toy["calib"][0])
    both = tuple(np.concatenate(a) for a in zip(toy["val"], toy["test"]))  # 600 clips: a steadier drop than 300
    assert top1(fp32, both) >= 0.7
    assert top1(plain, both) < top1(fp32, both) - 0.08  # measured: 80.5% fp32 -> 69.3%
    shipped, report = pipeline_ptq(planted, toy, tmp_path)
    fp32_top1 = top1(fp32, toy["test"])
    assert top1(shipped, toy["test"]) >= fp32_top1 - 0.03  # fails without equalization and 16x8 (68.7%)
    # on validation too, within a few clips: what equalized INT8 still loses there is weight rounding,
    # which 16x8 does not win back, so the 0.5-point budget itself may or may not hold on 300 clips
    assert report["final"]["top1"] >= report["fp32"]["top1"] - 0.03


def test_16x8_alone_buys_back_the_outlier_in_onnx_and_in_tflm(toy, tmp_path):
    """Without equalization, the budget takes the model to 16-bit activations; the ONNX file
    carries exactly that precision, and so does the .tflite, which keeps the accuracy in TFLM."""
    planted = plant(toy["model"])
    shipped, report = pipeline_ptq(planted, toy, tmp_path, equalize=False)
    assert report["precision"] == "16x8" and mixed.check_precision(shipped, "16x8")
    lost = report["fp32"]["top1"] - report["int8"]["top1"]
    assert lost >= 0.08  # the plant's collapse on validation (measured: 80.7% fp32 -> 70.0%)
    assert report["final"]["top1"] - report["int8"]["top1"] >= lost / 2  # most of it bought back
    fp32_test = top1(tmp_path / "m.fp32.onnx", toy["test"])
    assert top1(shipped, toy["test"]) >= fp32_test - 0.03
    cost = report["bytes"]
    assert cost["arena"] == 2 * cost["arena_int8"] > 0 and cost["flash_extra"] > 0
    reference = quant.ptq_reference(planted, toy["calib"][0], int16_activations=True)
    tflite = firmware.to_tflite(reference, torch.as_tensor(toy["calib"][0][:8]), tmp_path / "m.int8.tflite")
    model_bytes = tflite.read_bytes()
    assert firmware.precision(model_bytes) == "16x8" and not firmware.float_ops(model_bytes)
    x, y = toy["test"]
    assert np.mean(firmware.run(model_bytes, x).argmax(1) == y) >= fp32_test - 0.03


def test_activations_int8_keeps_int8_however_much_it_loses(toy, tmp_path):
    """quantize.activations=int8 (a target without int16 kernels): the report says it is over budget."""
    shipped, report = pipeline_ptq(plant(toy["model"]), toy, tmp_path, equalize=False, activations="int8")
    assert report["precision"] == "int8" and report["16x8"] is None and mixed.check_precision(shipped, "int8")
    assert not report["within_budget"] and report["bytes"]["arena_extra"] == report["bytes"]["flash_extra"] == 0


def test_sensitivity_names_the_layers_around_the_outlier(toy, tmp_path):
    planted = plant(toy["model"])
    fp32 = export.to_onnx(planted, torch.as_tensor(toy["calib"][0][:8]), tmp_path / "planted.fp32.onnx")
    table = sensitivity.layer_sensitivity(sensitivity.Quantizer(fp32, toy["calib"][0], *toy["val"], MAX_FRR))
    assert len(table["layers"]) == 15  # 10 convs, 3 residual adds, the mean, the classifier
    assert {"Conv stem_bn", "Conv blocks.0.bn1"} <= set(sensitivity.most_sensitive(table, 3))
    for row in table["layers"]:
        assert 0 <= row["only_quantized_top1"] <= 1 and 0 <= row["only_float_far"] <= 1

"""BC-ResNet student: its sub-spectral norm folds exactly, and PTQ and QAT both give all-integer
INT8 ONNX and .tflite models that agree with their torch quantized references."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from kws import export, firmware, metrics, mixed, models, quant
from test_quant import N_CLASSES, toy_batch, train

def with_trained_statistics(model, seed=0):
    """Give every BatchNorm non-trivial statistics and affine (fresh ones fold to identities)."""
    gen = torch.Generator().manual_seed(seed)
    for bn in (m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)):
        for t in (bn.weight, bn.bias, bn.running_mean, bn.running_var):
            t.data = torch.rand(t.shape, generator=gen) * 1.5 + 0.25
        bn.weight.data[::3] *= -1  # negative scales too: the fold keeps their sign
    return model.eval()


def test_folding_subspectral_norm_keeps_fp32_outputs():
    net = with_trained_statistics(models.build(*models.preset("bc_resnet", 0.5, 40, N_CLASSES)))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    folded = models.deployable(net)
    assert not any(isinstance(m, models.SubSpectralBN) for m in folded.modules())
    affines = [b.ssn for b in folded.blocks if isinstance(b.ssn, models.FreqAffine)]
    assert len(affines) == 2  # the 20-bin stage has 4 sub-bands; the others one (folded into the conv)
    assert all(a.scale.shape == (1, b.freq_dw.out_channels, b.freq, 1) for a, b in zip(affines, folded.blocks))
    assert all(float(a.scale.abs().amax(2).min()) == pytest.approx(1.0) for a in affines)  # |r| <= 1, 1 in one band
    x = torch.randn(8, 40, 101)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), net(x), rtol=1e-5, atol=1e-5)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # the original is untouched
    tc = models.build(*models.preset("tc_resnet8", 0.5, 40, N_CLASSES))
    assert models.deployable(tc) is tc


@pytest.fixture(scope="module")
def toy():
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    protos = 3 * torch.randn(N_CLASSES, 40, 1, generator=gen).expand(N_CLASSES, 40, 101)
    model = models.build(*models.preset("bc_resnet", 0.5, 40, N_CLASSES))
    train(model, gen, protos, steps=60, lr=1e-2, batch=32)  # ~80% top-1
    test_x, _ = toy_batch(gen, protos, 128)
    calib_x, _ = toy_batch(gen, protos, 128)
    return {"model": model.eval(), "gen": gen, "protos": protos, "test": test_x, "calib": calib_x}


def assert_all_integer(int8_onnx, reference, x, tmp_path):
    """No float op in the ONNX QDQ graph nor in the .tflite, and TFLM, ONNX and torch compute the same
    integer model: logits within a few output steps of each other, and within one on average
    (measured: at most 4, 0.2-0.5 on average; rounding, SiLU's table and the average pools differ by
    an LSB here and there). The bound is loose: the fp32 model itself is within 6 steps of the PTQ
    .tflite (1.0 on average), so the op checks, not this bound, are what catch an unfolded norm.
    Top-1 agreement is not the test: a toy model's near-ties flip on a 1-LSB difference, and how
    many there are depends on the machine that trained it."""
    assert quant.float_nodes(int8_onnx) == []
    tflite = firmware.to_tflite(reference, x[:8], tmp_path / "m.int8.tflite").read_bytes()
    ops = firmware.ops(tflite)
    assert firmware.float_ops(tflite) == {}
    assert not {"QUANTIZE", "DEQUANTIZE", "TRANSPOSE"} & set(ops)  # no requantize, no layout shuffles
    assert {"MUL", "ADD", "LOGISTIC", "AVERAGE_POOL_2D"} <= set(ops)  # the folded norm, SiLU, the averages
    out_scale = firmware.io_quantization(tflite)[1][0]
    logits = {"tflm": firmware.run(tflite, x.numpy()), "torch": models.logits(reference, x).numpy(),
              "onnx": export.ort_logits(int8_onnx, x)}
    steps = {(a, b): np.abs(logits[a] - logits[b]) / out_scale
             for a, b in (("tflm", "torch"), ("tflm", "onnx"), ("onnx", "torch"))}
    assert max(float(d.max()) for d in steps.values()) <= 8, {k: float(d.max()) for k, d in steps.items()}
    assert max(float(d.mean()) for d in steps.values()) <= 1, {k: float(d.mean()) for k, d in steps.items()}
    agree = metrics.top1_agreement(logits["tflm"], {"torch": logits["torch"], "onnx": logits["onnx"]})
    assert min(agree.values()) >= 0.95, agree  # measured 126-128 of 128


def test_ptq_bc_resnet_is_all_integer(toy, tmp_path):
    fp32 = export.to_onnx(toy["model"], toy["test"][:8], tmp_path / "m.fp32.onnx")  # checks the fold: atol 1e-4
    assert quant.float_nodes(fp32)  # the check finds float ops where they are
    int8 = quant.ptq(fp32, tmp_path / "m.int8.onnx", toy["calib"].numpy())
    reference = quant.ptq_reference(toy["model"], toy["calib"])
    assert_all_integer(int8, reference, toy["test"], tmp_path)
    fp32_top1 = export.ort_logits(fp32, toy["test"]).argmax(1)
    assert np.mean(export.ort_logits(int8, toy["test"]).argmax(1) == fp32_top1) >= 0.95


def test_qat_bc_resnet_is_all_integer(toy, tmp_path):
    def train_fn(qat_model):
        quant.set_train_mode(qat_model, True)
        train(qat_model, toy["gen"], toy["protos"], steps=3, lr=1e-3, batch=32)
        quant.set_train_mode(qat_model, False)

    reference = quant.qat(toy["model"], toy["test"][:8], train_fn)
    int8 = quant.to_int8_onnx(reference, toy["test"][:8], tmp_path / "qat.int8.onnx")
    assert_all_integer(int8, reference, toy["test"], tmp_path)


def test_bc_resnet_is_built_channels_last_and_trains():
    """Channels-last memory is the CPU speed-up (bench/train_throughput.py); the math is unchanged:
    in float64 a training step's outputs and gradients equal those in NCHW memory (in float32 a
    fresh deep net's gradients amplify summation-order rounding to ~1%)."""
    net = models.build(*models.preset("bc_resnet", 0.5, 40, N_CLASSES))
    assert net.blocks[0].freq_dw.weight.is_contiguous(memory_format=torch.channels_last)
    nchw = models.build(*models.preset("bc_resnet", 0.5, 40, N_CLASSES)).to(memory_format=torch.contiguous_format)
    x, y = torch.randn(16, 40, 101, dtype=torch.float64), torch.randint(0, N_CLASSES, (16,))
    outs = [m.double().train()(x) for m in (net, nchw)]
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-10, atol=1e-12)
    for out in outs:
        F.cross_entropy(out, y).backward()
    grads = [torch.cat([p.grad.flatten() for p in m.parameters()]) for m in (net, nchw)]
    assert float((grads[0] - grads[1]).norm() / grads[1].norm()) < 1e-10


def test_16x8_is_refused_for_bc_resnet_by_name(toy, tmp_path):
    """No 16x8 .tflite route for its broadcast adds (kws.mixed.runs_16x8): forcing it is a clear error;
    auto keeps it INT8 (tested with the planted outlier on a TC-ResNet, tests/test_outlier.py)."""
    y = np.zeros(len(toy["test"]), dtype=np.int64)
    with pytest.raises(ValueError, match=r"quantize.activations=16x8: m.fp32.onnx has no 16x8 .tflite route"):
        mixed.quantize_model(toy["model"], toy["test"][:8], tmp_path / "m.fp32.onnx", tmp_path / "m.int8.onnx",
                             toy["calib"].numpy(), toy["test"].numpy(), y, 0.01, equalize=False, max_int8_loss=0.005,
                             method="minmax", per_channel=True, activations="16x8")

import math
import runpy
from pathlib import Path

import pytest
import torch

from kws import budget, checkpoint, distill, models, prune


def small_teacher(width=1.0, seed=0):
    torch.manual_seed(seed)
    net = models.build(*models.preset("tc_resnet8", width, 40, 12))
    for m in net.modules():  # trained-looking BN so magnitudes differ between channels
        if isinstance(m, torch.nn.BatchNorm1d):
            m.weight.data.uniform_(0.2, 1.5)
            m.running_var.data.uniform_(0.5, 2)
    return net.eval()


@pytest.mark.parametrize("importance", ["l1", "l2", "bn_scale", "taylor"])
def test_pruning_removes_channels_and_keeps_the_network_whole(importance, tmp_path):
    net = small_teacher()
    frames = 51  # features.hop_ms=20: the length comes from the feature config, not a typed-in 101
    macs0, params0 = prune.macs_and_params(net, frames)
    calib = (torch.randn(32, 40, frames), torch.randint(0, 12, (32,)))
    prune.prune(net, 0.5, frames, importance, steps=2, calib=calib)
    kw = models.arch_kwargs(net)
    assert kw["stem"] == 8 and [b[:2] for b in kw["blocks"]] == [[12, 12], [16, 16], [24, 24]]
    macs1, params1 = prune.macs_and_params(net, frames)
    assert params1 < 0.3 * params0 and macs1 < 0.35 * macs0
    # the architecture kwargs rebuild it exactly: a dense, consistent network
    rebuilt = models.build("tc_resnet", kw)
    rebuilt.load_state_dict(net.state_dict())
    x = torch.randn(4, 40, frames)
    torch.testing.assert_close(rebuilt.eval()(x), net(x))
    # and it exports to ONNX that onnxruntime runs the same
    from kws import export
    path = tmp_path / "pruned.onnx"
    export.to_onnx(rebuilt, x[:1], path)
    torch.testing.assert_close(torch.as_tensor(export.ort_logits(path, x)), net(x).detach(), atol=1e-4, rtol=1e-4)


def test_prune_widths_follow_the_ratio():
    assert prune.widths(0.5) == {"wide": 0.75, "narrow": 0.5}
    w = prune.widths(0.6)
    assert math.isclose(w["wide"], 0.7) and math.isclose(w["narrow"], 0.4)
    for bad in (1.2, 0.99, 0, "abc", True):  # 0.99 used to prune nothing, silently
        with pytest.raises(ValueError, match=r"prune.ratio must be a number in \(0, 0.9\]"):
            prune.widths(bad)
    assert prune.widths(0.9)["narrow"] == pytest.approx(0.1)
    w = prune.widths(0.733, 0.533)  # a x1.5 teacher's pruned models at the x1.0 teacher's sizes
    assert math.isclose(w["wide"], 0.467) and math.isclose(w["narrow"], 0.267)
    with pytest.raises(ValueError, match=r"prune.wide_ratio \(0.6\) must be under prune.ratio \(0.6\)"):
        prune.widths(0.6, 0.6)
    for bad in (-0.1, 0.95, "0.3", False):
        with pytest.raises(ValueError, match=r"prune.wide_ratio must be a number in \[0, 0.9\]"):
            prune.widths(0.6, bad)
    with pytest.raises(ValueError, match="prune.importance"):
        prune.prune(small_teacher(), 0.5, 101, "random-ish")


def test_kd_loss_matches_hand_computation():
    s = torch.tensor([[1.0, 0.0, -1.0]])
    t = torch.tensor([[0.0, 2.0, 0.0]])
    y = torch.tensor([0])
    T, alpha = 2.0, 0.25
    ps = [math.exp(v / T) for v in (1.0, 0.0, -1.0)]
    ps = [v / sum(ps) for v in ps]
    pt = [math.exp(v / T) for v in (0.0, 2.0, 0.0)]
    pt = [v / sum(pt) for v in pt]
    kl = sum(a * math.log(a / b) for a, b in zip(pt, ps))
    ce = -math.log(math.exp(1) / (math.exp(1) + 1 + math.exp(-1)))
    expected = (1 - alpha) * ce + alpha * T * T * kl
    assert distill.kd_loss(s, t, y, alpha, T).item() == pytest.approx(expected, rel=1e-6)
    assert distill.kd_loss(s, t, y, 0.0, T).item() == pytest.approx(ce, rel=1e-6)


def test_ensemble_soft_targets_are_the_mean_of_the_teachers_softened_probabilities():
    """The distil loss with several teachers is KD against the average of their softmax(z / T):
    a missing temperature on either side of ensemble_logits changes the targets."""
    torch.manual_seed(0)
    teachers = [torch.nn.Linear(6, 12) for _ in range(3)]
    for t in teachers:
        t.weight.data *= 8  # confident teachers: softening by T = 4 matters
    student = torch.nn.Linear(6, 12)
    x, y, T, alpha = torch.randn(5, 6), torch.tensor([0, 3, 5, 7, 11]), 4.0, 0.7
    with torch.no_grad():
        targets = torch.stack([torch.softmax(t(x) / T, 1) for t in teachers]).mean(0)
        torch.testing.assert_close(torch.softmax(distill.ensemble_logits(teachers, x, T) / T, 1), targets)
        s = student(x)
        kl = (targets * (targets.log() - torch.log_softmax(s / T, 1))).sum(1).mean()
        expected = (1 - alpha) * torch.nn.functional.cross_entropy(s, y) + alpha * T * T * kl
        loss = distill.make_loss(teachers, alpha, T)
        torch.testing.assert_close(loss(student, x, y), expected)


class Recorder(torch.nn.Module):
    """A teacher that remembers what it was shown."""

    def __init__(self, net):
        super().__init__()
        self.net, self.seen = net, None

    def forward(self, x):
        self.seen = x
        return self.net(x)


def test_mixup_blends_clips_and_labels_alike_and_the_teachers_see_the_blend():
    """With distill.mixup the loss is the KD loss on one blended batch: the student's and the
    teachers' inputs are lam * x + (1 - lam) * x[perm], and the hard term is
    lam * CE(y) + (1 - lam) * CE(y[perm]). Without it nothing is blended."""
    torch.manual_seed(0)
    teacher, student = Recorder(torch.nn.Linear(6, 12)), torch.nn.Linear(6, 12)
    x, y, T, alpha = torch.randn(8, 6), torch.randint(0, 12, (8,)), 4.0, 0.7
    torch.manual_seed(1)  # the draw the loss will make: lam, then the shuffle
    lam = torch.distributions.Beta(0.4, 0.4).sample().item()
    perm = torch.randperm(8)
    assert 0 < lam < 1 and not torch.equal(perm, torch.arange(8))
    blend = lam * x + (1 - lam) * x[perm]
    with torch.no_grad():
        s, t = student(blend), teacher.net(blend)
        ce = torch.nn.functional.cross_entropy
        hard = lam * ce(s, y) + (1 - lam) * ce(s, y[perm])
        kl = torch.nn.functional.kl_div(torch.log_softmax(s / T, 1), torch.softmax(t / T, 1), reduction="batchmean")
        torch.manual_seed(1)
        got = distill.make_loss([teacher], alpha, T, mixup=0.4)(student, x, y)
        torch.testing.assert_close(teacher.seen, blend)
        torch.testing.assert_close(got, (1 - alpha) * hard + alpha * T * T * kl)
        torch.manual_seed(1)  # the no-KD twin blends the same way
        torch.testing.assert_close(distill.make_loss([], 0.0, T, mixup=0.4)(student, x, y), hard)
        distill.make_loss([teacher], alpha, T)(student, x, y)
        torch.testing.assert_close(teacher.seen, x)


def test_feature_hint_adapter_shapes():
    student = models.build(*models.preset("bc_resnet", 1.0, 40, 12))
    teacher = small_teacher()
    a = distill.FeatureAdapter(distill.feature_channels(student, 40, 101), distill.feature_channels(teacher, 40, 101))
    x = torch.randn(2, 40, 101)
    t_feats = teacher.features(x)
    assert a(student.features(x), t_feats.shape[-1]).shape == t_feats.shape
    loss = distill.make_loss([teacher], 0.5, 4.0, feature_weight=1.0, adapter=a)
    loss(student, x, torch.tensor([0, 1])).backward()
    assert a.proj.weight.grad is not None


def test_feature_channels_probes_on_the_models_device():
    # "meta" stands in for a GPU: a probe made on the CPU fails the same way on either
    teacher = small_teacher()
    assert distill.feature_channels(teacher.to("meta"), 40, 101) == distill.feature_channels(small_teacher(), 40, 101)


def test_budget_measures_the_tflite_and_refuses_a_student_over_50kb():
    big = models.build(*models.preset("tc_resnet8", 1.0, 40, 12))
    with pytest.raises(ValueError, match="over distill.budget_bytes=51200"):
        budget.check_measured(big, 51200, 65536, 40, 101, "student")
    small = models.build(*models.preset("tc_resnet8", 0.5, 40, 12))
    flash, arena = budget.check_measured(small, 51200, 65536, 40, 101, "student")
    assert budget.int8_bytes(small)["total"] < flash < 51200  # the file carries more than the weights
    assert arena >= 40 * 101  # at least the int8 input feature map
    with pytest.raises(ValueError, match=f"arena_budget_bytes={arena - 1}"):
        budget.check_measured(small, 51200, arena - 1, 40, 101, "student")


def test_budget_cli_exit_code(tmp_path):
    from kws import checkpoint, features
    arch, kw = models.preset("tc_resnet8", 1.0, 40, 12)
    checkpoint.save(tmp_path / "big.pt", models.build(arch, kw), arch, kw, features.make_config())
    assert budget.main([str(tmp_path / "big.pt")]) == 1
    assert budget.main([str(tmp_path / "big.pt"), "--budget", "100000"]) == 0


def test_measuring_before_training_gives_the_trained_models_flash(tmp_path):
    # A fresh model's BatchNorms fold to all-zero biases, which the converter would store once.
    from kws import firmware, quant
    net = models.build(*models.preset("tc_resnet8", 0.25, 40, 12))
    before = budget.measured(net, 40, 101)
    with torch.no_grad():  # stands for training: every BatchNorm moves away from its initial state
        for bn in (m for m in net.modules() if isinstance(m, torch.nn.BatchNorm1d)):
            bn.bias.normal_()
            bn.running_mean.normal_()
    x = torch.randn(16, 40, 101)
    trained = firmware.to_tflite(quant.ptq_reference(net.eval(), x), x[:8], tmp_path / "trained.tflite")
    assert before[0] == trained.stat().st_size


def test_distillation_ensemble_takes_exactly_the_teacher_replicas_asked_for(tmp_path, monkeypatch):
    distill_stage = runpy.run_path(str(Path(__file__).parents[1] / "stages" / "distill.py"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models/teacher_replicas").mkdir(parents=True)
    for seed in (2, 1):
        (tmp_path / f"models/teacher_replicas/seed{seed}.pt").write_bytes(b"")
    files = distill_stage["teacher_files"]({"teachers": "ensemble", "teacher_replicas": 2})
    assert files == ["models/teacher.pt", "models/finetuned_wide.pt", "models/finetuned_narrow.pt",
                     "models/teacher_replicas/seed1.pt", "models/teacher_replicas/seed2.pt"]
    assert distill_stage["teacher_files"]({"teachers": "chain", "teacher_replicas": 0}) == ["models/finetuned_narrow.pt"]
    with pytest.raises(ValueError, match="holds 2 teachers, distill.teacher_replicas asks for 3: run `dvc repro "
                                         "teacher_replicas` first"):
        distill_stage["teacher_files"]({"teachers": "ensemble", "teacher_replicas": 3})


def test_fine_tuning_learns_from_the_unpruned_teacher_only_when_alpha_asks(tmp_path, monkeypatch):
    finetune_stage = runpy.run_path(str(Path(__file__).parents[1] / "stages" / "finetune.py"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    cfg = {"kind": "logmel"}
    teacher, pruned = small_teacher(seed=0), small_teacher(width=0.5, seed=1)
    checkpoint.save(tmp_path / "models/teacher.pt", teacher, *models.preset("tc_resnet8", 1.0, 40, 12), cfg)
    x, y = torch.randn(8, 40, 101), torch.randint(0, 12, (8,))
    p = {"alpha": 0.7, "temperature": 4.0, "device": "cpu"}
    with torch.no_grad():
        kd = finetune_stage["make_loss"](p, cfg)(pruned, x, y)
        assert torch.allclose(kd, distill.kd_loss(pruned(x), teacher(x), y, 0.7, 4.0))
        labels_only = finetune_stage["make_loss"]({**p, "alpha": 0.0}, cfg)(pruned, x, y)
        assert torch.equal(labels_only, torch.nn.functional.cross_entropy(pruned(x), y))
        assert not torch.isclose(kd, labels_only)
    (tmp_path / "models/teacher.pt").unlink()  # labels only: the teacher is not read
    finetune_stage["make_loss"]({**p, "alpha": 0.0}, cfg)
    with pytest.raises(FileNotFoundError, match="models/teacher.pt"):
        finetune_stage["make_loss"](p, cfg)

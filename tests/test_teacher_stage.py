"""The teacher stage under `dvc repro`, in a scratch git+DVC repo on a tiny synthetic corpus:
adopting a received checkpoint, and refusing a diverged or untrained model."""
import json
import shutil
import subprocess

import pytest
import torch

from test_params import set_param
from test_pipeline import TINY, dvc_env, run, scratch_repo


def dvc_repro(repo, *args):
    out = subprocess.run(["dvc", "repro", *args], cwd=repo, env=dvc_env(OMP_NUM_THREADS="1"), capture_output=True,
                         text=True)
    return out.returncode, out.stdout + out.stderr


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """fetch, features and teacher run by `dvc repro teacher`."""
    d = scratch_repo(tmp_path_factory.mktemp("teacher_stage"), TINY)
    run(["dvc", "repro", "teacher"], d)
    return d


def with_params(repo, block, key, raw):
    """Write block.key = raw into the repo's params.yaml; returns the text to restore."""
    text = (repo / "params.yaml").read_text()
    (repo / "params.yaml").write_text(set_param(text, block, key, raw))
    return text


def test_adopting_a_checkpoint_under_dvc_repro_logs_its_validation_accuracy(repo, tmp_path):
    trained = json.loads((repo / "metrics/teacher.json").read_text())
    shutil.copy(repo / "models/teacher.pt", tmp_path / "received.pt")
    before = with_params(repo, "teacher", "checkpoint", str(tmp_path / "received.pt"))
    try:
        code, log = dvc_repro(repo, "-s", "teacher")
        assert code == 0, log[-3000:]
        adopted = json.loads((repo / "metrics/teacher.json").read_text())
        # the same model, so the same validation accuracy as when it was trained, measured afresh
        assert adopted["val_acc"] == pytest.approx(trained["val_acc"]) and adopted["kept"] == "adopted"
        assert adopted["params"] == trained["params"] and adopted["effort"]["clip_epochs"] == 0
        rows = (repo / "dvclive/teacher/plots/metrics/val_acc.tsv").read_text().splitlines()
        assert rows[0].split("\t") == ["step", "val_acc"] and len(rows) == 2  # one step: the adopted model
        assert float(rows[1].split("\t")[1]) == pytest.approx(trained["val_acc"])
    finally:
        (repo / "params.yaml").write_text(before)


def test_adopting_a_checkpoint_with_nan_weights_is_refused(repo, tmp_path):
    ckpt = torch.load(repo / "models/teacher.pt", weights_only=True)
    ckpt["state_dict"]["stem.weight"][0, 0, 0] = float("nan")
    torch.save(ckpt, tmp_path / "diverged.pt")
    before = with_params(repo, "teacher", "checkpoint", str(tmp_path / "diverged.pt"))
    try:
        code, log = dvc_repro(repo, "-s", "teacher")
        assert code != 0 and "diverged.pt: weights are not finite (NaN/inf in ['stem.weight'])" in log, log[-3000:]
    finally:
        (repo / "params.yaml").write_text(before)


def test_a_teacher_at_chance_level_is_an_error_naming_the_stage(repo):
    # lr written by hand as 1e-3 (a string to YAML): accepted, trained with, and too low to learn in one epoch
    text = with_params(repo, "teacher", "lr", "1e-3")
    # and the epoch itself kept: BatchNorm statistics re-estimated for averaged weights lift even this model off chance
    for key, value in (("epochs", "1"), ("average_share", "0")):
        (repo / "params.yaml").write_text(set_param((repo / "params.yaml").read_text(), "teacher", key, value))
    try:
        code, log = dvc_repro(repo, "-s", "teacher")
        assert code != 0, log[-3000:]
        assert "[teacher] training failed: validation accuracy of the kept weights 0.0833 is no better than always answering " \
               "the most common class (0.0833)" in log, log[-3000:]
        assert "lr (0.001, sgd) and epochs (1)" in log
        assert not (repo / "models/teacher.pt").exists()  # nothing locked for prune to build on
    finally:
        (repo / "params.yaml").write_text(text)


def test_teacher_replicas_train_other_seeds_of_the_same_recipe(repo):
    text = with_params(repo, "distill", "teacher_replicas", "1")
    try:
        code, log = dvc_repro(repo, "teacher", "teacher_replicas")  # the teacher too: a test above leaves none
        assert code == 0, log[-3000:]
        assert sorted(p.name for p in (repo / "models/teacher_replicas").iterdir()) == ["seed1.pt"]
        replica = torch.load(repo / "models/teacher_replicas/seed1.pt", weights_only=True)
        teacher = torch.load(repo / "models/teacher.pt", weights_only=True)
        assert replica["arch"] == teacher["arch"] and replica["kwargs"] == teacher["kwargs"]
        assert replica["info"]["seed"] == 1  # teacher.seed 0 + 1: another model, not a copy
        assert not torch.equal(replica["state_dict"]["stem.weight"], teacher["state_dict"]["stem.weight"])
        report = json.loads((repo / "metrics/teacher_replicas.json").read_text())
        assert [r["seed"] for r in report["replicas"]] == [1] and report["effort"]["clip_epochs"] > 0
        assert not (repo / "dvclive/teacher_seed1").exists()  # no curves outside dvc.yaml's plots
        # distill.teachers=chain has no ensemble to join: refused before any training
        (repo / "params.yaml").write_text(set_param((repo / "params.yaml").read_text(), "distill", "teachers", "chain"))
        code, log = dvc_repro(repo, "-s", "teacher_replicas")
        assert code != 0 and "distill.teacher_replicas = 1 adds teachers to distill.teachers=ensemble" in log, log[-3000:]
    finally:
        (repo / "params.yaml").write_text(text)
    code, log = dvc_repro(repo, "-s", "teacher_replicas")  # back to none: an empty folder
    assert code == 0 and list((repo / "models/teacher_replicas").iterdir()) == [], log[-3000:]

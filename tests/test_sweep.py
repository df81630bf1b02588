"""scripts/sweep_table.py on `dvc exp show --json` output captured from dvc 3.67.1 in a scratch repo
(a toy stage writing a summary.json shaped like the real one): baseline `master` at prune.ratio 0.5,
one experiment run in the workspace (0.4), queued runs 0.3/0.5/0.6/0.7 and a failing 0.95.
exp_show_done.json: after `dvc queue start` finished; exp_show_running.json: while 0.7 ran and
0.95 was still queued."""
import importlib.util
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

FIXTURES = Path(__file__).parent / "fixtures"
SCRIPT = Path(__file__).parents[1] / "scripts" / "sweep_table.py"
spec = importlib.util.spec_from_file_location("sweep_table", SCRIPT)
sweep = importlib.util.module_from_spec(spec)
spec.loader.exec_module(sweep)


def load(name):
    return sweep.exp_show(FIXTURES / name)


def test_finished_runs_one_per_ratio():
    df, pairs, skipped = sweep.table(load("exp_show_done.json"), "prune.ratio")
    assert sorted(df["prune.ratio"].unique()) == [0.3, 0.4, 0.5, 0.6, 0.7]
    assert len(df) == 5 * 7 and df.groupby("prune.ratio")["run"].nunique().eq(1).all()
    # 0.5 is both the baseline and an experiment: the newer experiment stands for it
    assert df[df["prune.ratio"] == 0.5]["run"].unique().tolist() == ["pushy-loss"]
    assert dict(skipped) == {"cynic-emus": "Experiment run failed", "master": "older run at the same prune.ratio"}
    narrow = df[(df["model"] == "pruned_narrow") & (df["prune.ratio"] == 0.7)].iloc[0]
    assert narrow["int8_bytes"] == 6088 and narrow["top1"] == pytest.approx(0.9508)
    assert narrow["clip_epochs"] == 226080 and narrow["run"] == "faced-kyat"
    assert df["model"].iloc[:3].tolist() == ["teacher", "pruned_wide", "pruned_narrow"]  # summary order
    assert pairs.empty  # these toy summaries carry no paired tests


def test_running_and_queued_runs_are_skipped():
    df, pairs, skipped = sweep.table(load("exp_show_running.json"), "prune.ratio")
    assert sorted(df["prune.ratio"].unique()) == [0.3, 0.4, 0.5, 0.6]
    assert ("faced-kyat", "running") in skipped and ("cynic-emus", "queued") in skipped


def test_dvc_is_found_beside_the_python_that_runs_the_script(tmp_path, monkeypatch):
    """`.venv/bin/python scripts/sweep_table.py` without the venv activated: dvc is not on PATH
    but beside that Python; with neither, a clear exit instead of a traceback."""
    venv = tmp_path / "venv"
    venv.mkdir()
    fake = venv / "dvc"
    fake.write_text(f"#!/bin/sh\nexec {shutil.which('cat')} {FIXTURES / 'exp_show_done.json'}\n")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setattr(sweep.sys, "executable", str(venv / "python"))
    with pytest.raises(SystemExit, match="sweep_table: dvc is neither on PATH nor beside .*venv/python"):
        sweep.main(["--param", "prune.ratio", "--out", str(tmp_path)])  # not executable: not found
    fake.chmod(0o755)
    assert sweep.exp_show() == load("exp_show_done.json")


def test_missing_param_and_file_are_named(tmp_path):
    with pytest.raises(KeyError, match="no parameter prune.nope"):
        sweep.table(load("exp_show_done.json"), "prune.nope")
    with pytest.raises(FileNotFoundError, match="missing.json"):
        sweep.exp_show(tmp_path / "missing.json")


def test_main_writes_csv_and_png(tmp_path):
    sweep.main(["--json", str(FIXTURES / "exp_show_done.json"), "--out", str(tmp_path)])
    df = pd.read_csv(tmp_path / "sweep.csv")
    assert {"run", "prune.ratio", "model", "int8_bytes", "top1", "far_macro", "clip_epochs", "wall_s"} <= set(df)
    assert (tmp_path / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_speaker_folds_pool_their_test_clips():
    df = pd.DataFrame({"model": ["teacher"] * 3 + ["student_ptq"] * 3, "test_clips": [100, 300, 200] * 2,
                       "top1": [0.9, 0.8, 0.95, 0.5, 0.6, 0.7], "far_macro": [0.01, 0.03, 0.02, 0.1, 0.2, 0.3],
                       "deployed": [True, False, False, False, True, True],  # each fold's own choice
                       "val_top1": [0.5, 1.0, 0.75, 0.5, 0.5, 0.5], "val_clips": [20, 40, 40] * 2})
    pool = sweep.pooled(df).set_index("model")
    assert pool.loc["teacher", "val_top1"] == pytest.approx((10 + 40 + 30) / 100) and pool.loc["teacher", "val_clips"] == 100
    assert pool.loc["teacher", "val_top1_lo"] < 0.8 < pool.loc["teacher", "val_top1_hi"]
    assert pool.loc["teacher", "top1"] == pytest.approx((90 + 240 + 190) / 600)
    assert pool.loc["teacher", "test_clips"] == 600 and pool.loc["teacher", "folds"] == 3
    assert pool.loc["teacher", "far_macro"] == pytest.approx((1 + 9 + 4) / 600)
    lo, hi = pool.loc["teacher", ["top1_lo", "top1_hi"]]
    assert lo < 520 / 600 < hi and hi - lo < 0.06  # 600 pooled clips: about +-2.7 points
    assert pool.loc["student_ptq", "top1"] == pytest.approx((50 + 180 + 140) / 600)
    assert pool.loc["deployed", "top1"] == pytest.approx((90 + 180 + 140) / 600) and pool.loc["deployed", "folds"] == 3


def test_speaker_folds_pool_their_paired_tests():
    pairs = pd.DataFrame({"test": ["kd_vs_nokd"] * 3 + ["deployed_vs_teacher"] * 3,
                          "a": ["student_kd"] * 3 + ["student_ptq", "pruned_wide_ptq", "student_ptq"],
                          "b": ["student_nokd"] * 3 + ["teacher"] * 3,
                          "only_a_right": [6, 5, 7, 2, 0, 1], "only_b_right": [2, 1, 3, 1, 2, 0]})
    paired = sweep.pooled_paired(pairs).set_index("test")
    kd = paired.loc["kd_vs_nokd"]
    assert (kd["only_a_right"], kd["only_b_right"], kd["folds"]) == (18, 6, 3)
    assert kd["p_value"] == pytest.approx(0.02266, abs=1e-4)  # two-sided binomial, 6 of 24 discordant clips
    # no fold alone is beyond chance: pooling is what resolves it
    assert all(sweep.pooled_paired(pairs.iloc[[i]])["p_value"].iloc[0] > 0.05 for i in range(3))
    dep = paired.loc["deployed_vs_teacher"]
    assert dep["a"] == "student_ptq/pruned_wide_ptq" and (dep["only_a_right"], dep["only_b_right"]) == (3, 3)
    assert dep["p_value"] == 1.0


def with_teacher_evaluations(show):
    """The fixture's finished runs as `evaluate@teacher` runs: each gets metrics/eval/teacher.json
    (top-1 read off its ratio, so rows can be traced back); the baseline commit gets none."""
    for name, rev, state in sweep.runs(show):
        data = rev.get("data") or {}
        if name == "master" or state in sweep.UNFINISHED or not data.get("metrics"):
            continue
        ratio = data["params"]["params.yaml"]["data"]["prune"]["ratio"]
        data["metrics"]["metrics/eval/teacher.json"] = {"data": {
            "top1": ratio, "far_macro": 0.01, "val_top1": ratio / 2, "test_clips": 100, "val_clips": 50}}
    return show


def test_one_models_evaluations_stand_in_for_the_summary(tmp_path):
    df, pairs, skipped = sweep.table(with_teacher_evaluations(load("exp_show_done.json")), "prune.ratio", "teacher")
    assert df["model"].unique().tolist() == ["teacher"] and len(df) == 5
    assert (df["top1"] == df["prune.ratio"]).all() and pairs.empty
    assert dict(skipped)["master"] == "no metrics/eval/teacher.json"
    old = with_teacher_evaluations(load("exp_show_done.json"))
    for _, rev, _ in sweep.runs(old):
        ((rev.get("data") or {}).get("metrics") or {}).get("metrics/eval/teacher.json", {}).get("data", {}).pop("test_clips", None)
    with pytest.raises(SystemExit, match="teacher.json has no clip counts: rerun evaluate@teacher"):
        sweep.table(old, "prune.ratio", "teacher")  # evaluate metrics written before the counts were
    json_file = tmp_path / "show.json"
    json_file.write_text(json.dumps(with_teacher_evaluations(load("exp_show_done.json"))))
    sweep.main(["--json", str(json_file), "--out", str(tmp_path), "--model", "teacher", "--pool"])
    pool = pd.read_csv(tmp_path / "sweep_pooled.csv").set_index("model")
    assert pool.loc["teacher", "test_clips"] == 500 and pool.loc["teacher", "val_clips"] == 250
    assert pool.loc["teacher", "top1"] == pytest.approx((0.3 + 0.4 + 0.5 + 0.6 + 0.7) / 5)
    assert (tmp_path / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

"""scripts/fold_compare.py: two settings of one parameter over speaker folds, paired clip by clip.
Each run is a commit of a scratch git repo holding the per-clip rows the evaluate stage writes, and
an exp-show list (shaped like `dvc exp show --json`'s, see tests/test_sweep.py) points at them."""
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kws.metrics import mcnemar_p

SCRIPTS = Path(__file__).parents[1] / "scripts"
sys.path.insert(0, str(SCRIPTS))  # the script imports sweep_table beside it
spec = importlib.util.spec_from_file_location("fold_compare", SCRIPTS / "fold_compare.py")
fold_compare = importlib.util.module_from_spec(spec)
spec.loader.exec_module(fold_compare)

LABELS = np.array(["yes", "no", "up", "down", "_unknown_"] * 4)  # 20 clips per split and fold


def git(repo, *args):
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout.strip()


def rows(correct, labels=LABELS):
    wrong = np.where(labels == "yes", "no", "yes")
    return pd.DataFrame({"actual": labels, "predicted": np.where(correct, labels, wrong)})


def commit_run(repo, correct, labels=LABELS, models=("teacher", "student_kd"), far=None, lock=None):
    """One run's commit: every model's test and validation rows; `correct[split]` is which clips it gets
    right (the same for each model); `far` {split: FAR} its evaluate metrics, `lock` its dvc.lock."""
    for model in models:
        d = repo / "metrics/eval" / model
        d.mkdir(parents=True, exist_ok=True)
        rows(correct["test"], labels).to_csv(d / "confusion.csv", index=False)
        if "val" in correct:
            rows(correct["val"], labels).to_csv(d / "val_confusion.csv", index=False)
        if far is not None:
            (repo / f"metrics/eval/{model}.json").write_text(json.dumps({"far_macro": far["test"],
                                                                         "val_far_macro": far["val"]}))
    if lock is not None:
        (repo / "dvc.lock").write_text(json.dumps(lock))  # JSON is YAML
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "--allow-empty", "-m", "run")
    return git(repo, "rev-parse", "HEAD")


def run_entry(rev, fold, epochs, stamp, deployed="student_kd", other=0.7):
    params = {"data": {"fold": fold, "test_percent": 20}, "distill": {"epochs": epochs, "alpha": other}}
    summary = {"models": {"teacher": {}, "student_kd": {}}, "deployed": deployed}
    return {"rev": rev, "name": f"run-{fold}-{epochs}-{stamp}", "error": None,
            "data": {"rev": rev, "timestamp": f"2026-12-07T10:{stamp:02d}:00", "params": {"params.yaml": {"data": params}},
                     "metrics": {"metrics/summary.json": {"data": summary}}}}


def exp_show(entries):
    """A baseline with no summary (skipped as unfinished) and the runs as its finished experiments."""
    base = {"rev": "0" * 40, "name": "main", "error": None,
            "data": {"rev": "0" * 40, "timestamp": "2026-12-07T09:00:00", "params": {}, "metrics": {}},
            "experiments": [{"executor": {"state": "success"}, "revs": [e]} for e in entries]}
    return [{"rev": "workspace", "name": None, "data": {}, "error": None}, base]


@pytest.fixture
def repo(tmp_path, monkeypatch):
    git(tmp_path, "init", "-q")
    git(tmp_path, "config", "user.email", "t@t")
    git(tmp_path, "config", "user.name", "t")
    monkeypatch.chdir(tmp_path)  # git show reads the repo it runs in
    return tmp_path


def correct_at(seed, share):
    r = np.random.default_rng(seed)
    return {split: r.random(len(LABELS)) < share for split in ("val", "test")}


def test_folds_pool_into_one_paired_test(repo, tmp_path):
    truth = {(f, e): correct_at(10 * f + e, 0.9 if e == 420 else 0.6) for f in (0, 1) for e in (140, 420)}
    entries = [run_entry(commit_run(repo, truth[f, e]), f, e, stamp=10 * f + (e == 420)) for f, e in truth]
    show = tmp_path / "show.json"
    show.write_text(json.dumps(exp_show(entries)))
    fold_compare.main(["--param", "distill.epochs", "--a", "420", "--b", "140", "--json", str(show),
                       "--out", str(tmp_path / "out")])
    df = pd.read_csv(tmp_path / "out/fold_compare.csv")
    assert set(df["model"]) == {"teacher", "student_kd", "deployed"} and set(df["split"]) == {"val", "test"}
    for split in ("val", "test"):
        a = np.concatenate([truth[f, 420][split] for f in (0, 1)])
        b = np.concatenate([truth[f, 140][split] for f in (0, 1)])
        only_a, only_b = int((a & ~b).sum()), int((b & ~a).sum())
        row = df[(df["model"] == "student_kd") & (df["split"] == split)].iloc[0]
        assert row["clips"] == 40 and row["folds"] == "0,1"
        assert (row["a_top1"], row["b_top1"]) == (pytest.approx(a.mean()), pytest.approx(b.mean()))
        assert (row["only_a_right"], row["only_b_right"]) == (only_a, only_b)
        assert row["p_value"] == pytest.approx(mcnemar_p(only_a, only_b))
        assert row["a_lo"] <= row["a_top1"] <= row["a_hi"]
        assert row["a_by_fold"] == "/".join(f"{100 * truth[f, 420][split].mean():.1f}" for f in (0, 1))


def test_newest_run_stands_and_unpaired_fold_is_left_out(repo):
    good, bad = correct_at(1, 0.9), {"val": np.zeros(len(LABELS), bool), "test": np.zeros(len(LABELS), bool)}
    entries = [run_entry(commit_run(repo, bad), 0, 420, stamp=1), run_entry(commit_run(repo, good), 0, 420, stamp=2),
               run_entry(commit_run(repo, correct_at(2, 0.5)), 0, 140, stamp=3),
               run_entry(commit_run(repo, good), 1, 420, stamp=4)]  # fold 1 has no 140 run
    older = run_entry(commit_run(repo, good), 0, 420, stamp=0)
    del older["data"]["params"]["params.yaml"]["data"]["data"]["fold"]  # a commit from before data.fold
    chosen, skipped = fold_compare.fold_runs(exp_show(entries + [older]), "distill.epochs", (420, 140))
    assert any(name == "run-0-420-0" and "no parameter data.fold" in why for name, why in skipped)
    assert chosen[0, 420][0] == "run-0-420-2" and ("run-0-420-1", "a newer run at data.fold=0, distill.epochs=420") in skipped
    df = fold_compare.compare(chosen, "distill.epochs", 420, 140, ["student_kd"], ["val"])
    assert df.iloc[0]["folds"] == "0" and df.iloc[0]["a_top1"] == pytest.approx(good["val"].mean())


def test_runs_that_differ_in_another_parameter_are_refused(repo):
    entries = [run_entry(commit_run(repo, correct_at(1, 0.9)), 0, 420, stamp=1),
               run_entry(commit_run(repo, correct_at(2, 0.9)), 0, 140, stamp=2, other=1.0)]
    chosen, _ = fold_compare.fold_runs(exp_show(entries), "distill.epochs", (420, 140))
    with pytest.raises(ValueError, match="differ in distill.alpha as well as distill.epochs"):
        fold_compare.compare(chosen, "distill.epochs", 420, 140, ["student_kd"], ["val"])
    allowed = fold_compare.compare(chosen, "distill.epochs", 420, 140, ["student_kd"], ["val"], ["distill.alpha"])
    assert allowed.iloc[0]["clips"] == len(LABELS)  # a setting that goes with the compared one, when asked


def test_runs_on_different_clips_are_refused(repo):
    shuffled = np.roll(LABELS, 1)
    entries = [run_entry(commit_run(repo, correct_at(1, 0.9)), 0, 420, stamp=1),
               run_entry(commit_run(repo, correct_at(2, 0.9), labels=shuffled), 0, 140, stamp=2)]
    chosen, _ = fold_compare.fold_runs(exp_show(entries), "distill.epochs", (420, 140))
    with pytest.raises(ValueError, match="data.fold=0: the test clips of runs .* differ"):
        fold_compare.compare(chosen, "distill.epochs", 420, 140, ["teacher"], ["test"])


def test_runs_without_validation_rows_say_how_to_go_on(repo):
    test_only = {"test": correct_at(1, 0.9)["test"]}
    entries = [run_entry(commit_run(repo, test_only), 0, 420, stamp=1),
               run_entry(commit_run(repo, test_only), 0, 140, stamp=2)]
    chosen, _ = fold_compare.fold_runs(exp_show(entries), "distill.epochs", (420, 140))
    with pytest.raises(FileNotFoundError, match="val_confusion.csv .*--splits test"):
        fold_compare.compare(chosen, "distill.epochs", 420, 140, ["teacher"], ["val"])
    assert fold_compare.compare(chosen, "distill.epochs", 420, 140, ["teacher"], ["test"]).iloc[0]["p_value"] == 1.0
    show = repo / "show.json"
    show.write_text(json.dumps(exp_show(entries)))
    with pytest.raises(SystemExit, match="fold_compare: run .* has no metrics/eval/teacher/val_confusion.csv"):
        fold_compare.main(["--param", "distill.epochs", "--a", "420", "--b", "140", "--json", str(show),
                           "--model", "teacher", "--out", str(repo / "out")])


def test_far_is_each_settings_fold_figures_weighted_by_clips(repo):
    """FAR at 1% FRR sets its threshold per fold: the row gives the folds' own figures averaged by
    their clips (20 and 10 here), and NaN when a run's metrics have none."""
    short = LABELS[:10]
    correct = {(f, e): {k: v[:len(LABELS) if f == 0 else 10] for k, v in correct_at(f + e, 0.8).items()}
               for f in (0, 1) for e in (140, 420)}
    far = {(0, 420): 0.02, (1, 420): 0.08, (0, 140): 0.05, (1, 140): 0.11}
    entries = [run_entry(commit_run(repo, correct[f, e], LABELS if f == 0 else short,
                                    far={"test": far[f, e], "val": far[f, e] / 2}), f, e, stamp=2 * f + (e == 420))
               for f, e in correct]
    chosen, _ = fold_compare.fold_runs(exp_show(entries), "distill.epochs", (420, 140))
    df = fold_compare.compare(chosen, "distill.epochs", 420, 140, ["teacher"], ["val", "test"]).set_index("split")
    assert df.loc["test", "a_far"] == pytest.approx((0.02 * 20 + 0.08 * 10) / 30)
    assert df.loc["test", "b_far"] == pytest.approx((0.05 * 20 + 0.11 * 10) / 30)
    assert df.loc["val", "a_far"] == pytest.approx((0.01 * 20 + 0.04 * 10) / 30)
    for model in ("teacher", "student_kd"):
        (repo / f"metrics/eval/{model}.json").unlink()  # runs whose metrics predate FAR
    old = [run_entry(commit_run(repo, correct_at(1, 0.9)), 0, e, stamp=10 + i) for i, e in enumerate((420, 140))]
    chosen, _ = fold_compare.fold_runs(exp_show(old), "distill.epochs", (420, 140))
    assert np.isnan(fold_compare.compare(chosen, "distill.epochs", 420, 140, ["teacher"], ["test"]).iloc[0]["a_far"])


def lock_with(evaluated_features):
    """A dvc.lock whose features stage wrote `f1` and whose evaluate@teacher read `evaluated_features`."""
    dep = {"path": "data/features", "md5": evaluated_features}
    evaluate = {"deps": [dep, {"path": "stages/evaluate.py", "md5": "e"}]}
    return {"schema": "2.0", "stages": {"features": {"outs": [{"path": "data/features", "md5": "f1.dir"}]},
                                        "evaluate@teacher": evaluate}}


def test_a_model_the_run_did_not_evaluate_itself_is_refused(repo):
    """A targeted run (`dvc exp run ... evaluate@pruned_narrow`) keeps its base commit's rows for the
    other models: its dvc.lock's evaluate entry for them read other features than the run made."""
    good = [run_entry(commit_run(repo, correct_at(e, 0.9), lock=lock_with("f1.dir")), 0, e, stamp=e % 100)
            for e in (420, 140)]
    chosen, _ = fold_compare.fold_runs(exp_show(good), "distill.epochs", (420, 140))
    assert fold_compare.compare(chosen, "distill.epochs", 420, 140, ["teacher"], ["test"]).iloc[0]["clips"] == 20
    stale = [good[0], run_entry(commit_run(repo, correct_at(7, 0.9), lock=lock_with("f0.dir")), 0, 140, stamp=50)]
    chosen, _ = fold_compare.fold_runs(exp_show(stale), "distill.epochs", (420, 140))
    with pytest.raises(ValueError, match="did not evaluate teacher on its own data and models .*read another "
                                         "data/features.*evaluate@teacher among their targets"):
        fold_compare.compare(chosen, "distill.epochs", 420, 140, ["teacher"], ["test"])
    none = [good[0], run_entry(commit_run(repo, correct_at(8, 0.9), lock={"stages": {}}), 0, 140, stamp=60)]
    chosen, _ = fold_compare.fold_runs(exp_show(none), "distill.epochs", (420, 140))
    with pytest.raises(ValueError, match="has no evaluate@teacher"):
        fold_compare.compare(chosen, "distill.epochs", 420, 140, ["teacher"], ["test"])


def test_bad_arguments_are_named(tmp_path):
    show = tmp_path / "show.json"
    show.write_text(json.dumps(exp_show([])))
    with pytest.raises(SystemExit):
        fold_compare.main(["--param", "distill.epochs", "--a", "420", "--b", "420", "--json", str(show)])
    with pytest.raises(SystemExit):
        fold_compare.main(["--param", "distill.epochs", "--a", "420", "--b", "140", "--splits", "train",
                           "--json", str(show)])
    with pytest.raises(SystemExit, match="no speaker fold has finished runs at both settings"):
        fold_compare.main(["--param", "distill.epochs", "--a", "420", "--b", "140", "--json", str(show),
                           "--out", str(tmp_path)])

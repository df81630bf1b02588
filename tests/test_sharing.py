"""Two machines, one DVC remote and one Git remote: the README's "Sharing runs across machines"
recipe, run with two clones of the tiny pipeline repo (a local directory stands in for S3, a bare
repo for the Git server). Only the stages up to evaluate@teacher run, to keep it fast: they train
a model, log training curves and write the metrics `dvc metrics diff` compares."""
import json
import subprocess

import pytest

from test_pipeline import commit, repo, run, stages_run  # noqa: F401  (repo: the tiny pipeline fixture)

TARGET = "evaluate@teacher"
METRICS = "metrics/eval/teacher.json"
MODEL = "models/teacher.pt"
EXP = "seed1"


def git_out(cwd, *args):
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()


def exp_row(exp_show, name):
    """(commit, teacher.seed, teacher top-1) of the run called `name` in `dvc exp show --json`."""
    for base in exp_show:
        for rev in [base] + [r for e in base.get("experiments") or [] for r in e["revs"]]:
            if rev["name"] == name:
                data = rev["data"]
                return (rev["rev"], data["params"]["params.yaml"]["data"]["teacher"]["seed"],
                        data["metrics"][METRICS]["data"]["top1"])
    raise AssertionError(f"no run named {name} in dvc exp show: {json.dumps(exp_show)[:2000]}")


@pytest.fixture(scope="module")
def shared(repo, tmp_path_factory):  # noqa: F811
    """Machine 1 runs the pipeline and pushes; machine 2 clones the Git remote and pulls."""
    d = tmp_path_factory.mktemp("remotes")
    git_remote, dvc_remote = d / "origin.git", d / "dvc-store"
    run(["git", "init", "-q", "--bare", str(git_remote)], d)
    run(["git", "remote", "add", "origin", str(git_remote)], repo)
    run(["dvc", "remote", "add", "-d", "shared", str(dvc_remote)], repo)
    log = run(["dvc", "repro", TARGET], repo)
    assert "Running stage 'teacher'" in log, log  # machine 1 trains
    commit(repo, "tiny run: dvc.lock, metrics, remote config")
    branch = git_out(repo, "rev-parse", "--abbrev-ref", "HEAD")
    run(["git", "push", "-q", "origin", branch], repo)
    run(["dvc", "push", "--run-cache"], repo)
    clone = d / "machine2"
    run(["git", "clone", "-q", "-b", branch, str(git_remote), str(clone)], d)
    run(["dvc", "pull", "--run-cache", "--with-deps", TARGET], clone)  # plain `dvc pull` after a full run
    return repo, clone


def test_a_pulled_clone_reproduces_without_training(shared):
    first, second = shared
    assert "Data and pipelines are up to date" in run(["dvc", "status", TARGET], second)
    log = run(["dvc", "repro", TARGET], second)
    # nothing trains: only the data fingerprint (always_changed) is taken again, and finds the data unchanged
    assert stages_run(log) == {"source"} and "Stage 'teacher' didn't change" in log, log
    for path in (MODEL, "data/features/config.json", METRICS):
        assert (second / path).read_bytes() == (first / path).read_bytes(), path
    assert list((second / ".dvc/cache/runs").rglob("*")), "the run-cache was not pulled"


def test_an_experiment_on_one_clone_is_compared_on_the_other(shared):
    first, second = shared
    baseline_top1, baseline_model = json.loads((first / METRICS).read_text())["top1"], (first / MODEL).read_bytes()
    run(["dvc", "exp", "run", "-n", EXP, "-S", "teacher.seed=1", TARGET], first)
    exp_rev, seed, exp_top1 = exp_row(json.loads(run(["dvc", "exp", "show", "--json"], first)), EXP)
    assert seed == 1
    exp_model = (first / MODEL).read_bytes()  # `dvc exp run` leaves the experiment's outputs in the workspace
    assert exp_model != baseline_model
    run(["dvc", "exp", "push", "origin", EXP], first)  # the Git ref, and its outputs to the default DVC remote

    run(["dvc", "exp", "pull", "origin", EXP], second)
    assert exp_row(json.loads(run(["dvc", "exp", "show", "--json"], second)), EXP) == (exp_rev, 1, exp_top1)
    diff = json.loads(run(["dvc", "metrics", "diff", "--all", "--json", "HEAD", EXP], second))
    assert diff[METRICS]["top1"]["old"] == baseline_top1 and diff[METRICS]["top1"]["new"] == exp_top1, diff
    exp_diff = json.loads(run(["dvc", "exp", "diff", "--all", "--json", "HEAD", EXP], second))
    seed_diff = exp_diff["params"]["params.yaml"]["teacher.seed"]
    assert (seed_diff["old"], seed_diff["new"]) == (0, 1), exp_diff
    # the experiment's model comes from the remote, not a rerun (`dvc exp apply` after a full run)
    assert (second / MODEL).read_bytes() == baseline_model
    run(["git", "checkout", exp_rev, "--", "."], second)
    run(["dvc", "checkout", "--with-deps", TARGET], second)
    assert (second / MODEL).read_bytes() == exp_model
    assert "Data and pipelines are up to date" in run(["dvc", "status", TARGET], second)

"""End to end: the real dvc.yaml on a tiny synthetic corpus, in a scratch git+DVC repo."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

TINY = {
    "data": {"synthetic": {"speakers": 24, "other_words": 3}},
    "features": {"calib_clips": 64},
    "teacher": {"epochs": 2, "batch_size": 64},
}


def merge(base, over):
    for k, v in over.items():
        base[k] = merge(base[k], v) if isinstance(v, dict) else v
    return base


def run(cmd, cwd):
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    assert out.returncode == 0, f"{' '.join(cmd)} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out.stdout


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    d = tmp_path_factory.mktemp("pipeline")
    for name in ("dvc.yaml", ".dvcignore"):
        shutil.copy(ROOT / name, d / name)
    for name in ("stages", "kws"):
        shutil.copytree(ROOT / name, d / name, ignore=shutil.ignore_patterns("__pycache__"))
    params = merge(yaml.safe_load((ROOT / "params.yaml").read_text()), TINY)
    (d / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["git", "init", "-q"], d)
    run(["dvc", "init", "-q"], d)
    run(["dvc", "config", "core.analytics", "false"], d)
    run(["git", "add", "-A"], d)
    run(["git", "-c", "user.name=ci", "-c", "user.email=ci@localhost", "commit", "-qm", "tiny"], d)
    return d


def test_dvc_repro_runs_the_dag_and_caches(repo):
    run(["dvc", "repro"], repo)
    head = json.loads((repo / "metrics/eval/teacher.json").read_text())
    assert 0 <= head["top1"] <= 1 and 0 <= head["far_macro"] <= 1
    assert (repo / "metrics/eval/teacher/det.csv").exists()
    assert (repo / "dvclive/teacher/plots/metrics/val_acc.tsv").exists()
    assert (repo / "dvc.lock").exists()
    again = run(["dvc", "repro"], repo)
    assert "Data and pipelines are up to date" in again, again

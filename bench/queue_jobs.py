"""Benchmark: one prune-ratio sweep run by DVC's experiment queue with 1 or 2 parallel jobs and 1 or
2 torch threads per job; prints the wall time of each (jobs, threads) configuration.

    python bench/queue_jobs.py [--ratios 0.3 0.5 0.6 0.7] [--jobs 1 2] [--threads 1 2] [--epochs 2]

Everything runs in a scratch copy of the pipeline (dvc.yaml, stages/, kws/, params.yaml with small
epochs) in a temporary folder, never in this workspace. The default synthetic corpus is reused from
this repo's data/cache (synthesized there on first use). The baseline (the whole chain at the default
ratio) runs once, untimed, and is committed; then each configuration queues the same ratios and runs
them with `dvc exp run --run-all --jobs N`: the blocking form of `dvc queue start --jobs N` (the same
N queue workers), so the clock stops when the last run ends. The run-cache is emptied before each
configuration, so every one trains the same stages (prune onwards) instead of restoring the last one's.

Time it on a quiet machine: the load average before each configuration is printed beside its time.
"""
import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SPEC = importlib.util.spec_from_file_location("sweep_table", ROOT / "scripts" / "sweep_table.py")
sweep = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(sweep)  # its reading of `dvc exp show --json`: which runs finished, and why not


def small_params(epochs: int) -> dict:
    """params.yaml with `epochs` for every training stage, no warm-up, and the corpus from this repo's cache."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["data"]["cache"] = str(ROOT / params["data"]["cache"])
    for stage in ("teacher", "finetune", "distill", "qat"):
        params[stage].update(epochs=epochs, warmup_epochs=0)
    # a model trained for an epoch or two is full of near-ties that a rounding step flips (1 epoch:
    # 89.9% .tflite-ONNX agreement); this times the sweep, the quality gates are not its subject
    params["qat"]["min_parity"] = params["firmware"]["min_parity"] = 0.5
    return params


def sh(cmd: list, cwd: Path, env: dict, log=None) -> str:
    out = subprocess.run(cmd, cwd=cwd, env=env, text=True, stdout=log or subprocess.PIPE, stderr=subprocess.STDOUT)
    if out.returncode:
        raise RuntimeError(f"`{' '.join(cmd)}` failed in {cwd}" + (f":\n{out.stdout[-3000:]}" if out.stdout else ""))
    return out.stdout


def make_repo(work: Path, params: dict, env: dict) -> None:
    for name in ("dvc.yaml", ".dvcignore"):
        shutil.copy(ROOT / name, work / name)
    for name in ("stages", "kws"):
        shutil.copytree(ROOT / name, work / name, ignore=shutil.ignore_patterns("__pycache__"))
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"], ["dvc", "config", "core.analytics", "false"]):
        sh(cmd, work, env)


def commit(work: Path, env: dict, message: str) -> None:
    sh(["git", "add", "-A"], work, env)
    sh(["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost", "commit", "-qm", message], work, env)


def run_config(work: Path, env: dict, ratios: list, jobs: int, threads: int, log) -> dict:
    """Queue `ratios`, run them with `jobs` workers and `threads` torch threads each; wall time and failures."""
    shutil.rmtree(work / ".dvc" / "cache" / "runs", ignore_errors=True)
    names = {r: f"j{jobs}t{threads}-r{r}".replace(".", "") for r in ratios}  # dots are awkward in Git refs
    for r, name in names.items():
        sh(["dvc", "exp", "run", "--queue", "-n", name, "-S", f"prune.ratio={r}"], work, env)
    threaded = {**env, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    sh(["dvc", "exp", "run", "--run-all", "--jobs", str(jobs)], work, threaded, log)
    wall = time.perf_counter() - t0
    sh(["dvc", "queue", "stop"], work, env)  # idle workers would otherwise linger ~10 s into the next timing
    show = json.loads(sh(["dvc", "exp", "show", "--json"], work, env))
    why = {name: sweep.why_unfinished(rev, state) for name, rev, state in sweep.runs(show)}
    failed = {n: w for n in names.values() if (w := why.get(n, "not in `dvc exp show`"))}
    return {"jobs": jobs, "threads": threads, "runs": len(ratios), "wall_s": wall, "load_before": load, "failed": failed}


def main(argv=None):
    ap = argparse.ArgumentParser(description="wall time of a queued prune-ratio sweep: parallel jobs x torch threads")
    ap.add_argument("--ratios", type=float, nargs="+", default=[0.3, 0.5, 0.6, 0.7])
    ap.add_argument("--jobs", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--epochs", type=int, default=2, help="epochs of every training stage")
    ap.add_argument("--keep", action="store_true", help="keep the scratch repo (its path is printed)")
    a = ap.parse_args(argv)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1",
           "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    work = Path(tempfile.mkdtemp(prefix="queue_jobs_"))
    log_path = work.with_suffix(".log")
    print(f"scratch repo {work}, dvc logs in {log_path}", flush=True)
    try:
        make_repo(work, small_params(a.epochs), env)
        commit(work, env, "scratch pipeline")  # dvclive wants a commit to log against
        with open(log_path, "w") as log:
            t0 = time.perf_counter()
            sh(["dvc", "repro"], work, env, log)
            print(f"baseline chain (untimed below): {time.perf_counter() - t0:.0f} s", flush=True)
            commit(work, env, "baseline")
            rows = []
            for jobs in a.jobs:
                for threads in a.threads:
                    rows.append(run_config(work, env, a.ratios, jobs, threads, log))
                    r = rows[-1]
                    print(f"jobs {jobs} threads {threads}: {r['wall_s']:.0f} s"
                          + (f"  FAILED {r['failed']}" if r["failed"] else ""), flush=True)
    finally:
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)
    base = rows[0]["wall_s"]
    print(f"\n{len(a.ratios)} prune ratios {a.ratios}, training stages {a.epochs} epoch(s) each, "
          f"{os.cpu_count()} CPUs (load average before each run beside it)")
    print("| jobs | torch threads | wall s | s per run | vs first | load before |\n|--:|--:|--:|--:|--:|--:|")
    for r in rows:
        print(f"| {r['jobs']} | {r['threads']} | {r['wall_s']:.0f} | {r['wall_s'] / r['runs']:.0f} | "
              f"{base / r['wall_s']:.2f}x | {r['load_before']:.1f} |" + (" failed runs" if r["failed"] else ""))
    if any(r["failed"] for r in rows):
        raise SystemExit("some runs failed: see the dvc log")


if __name__ == "__main__":
    main()

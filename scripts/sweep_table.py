"""Table and plot of a parameter sweep run as DVC experiments (by default prune.ratio):

    dvc exp run --queue -S prune.ratio=0.3,0.5,0.6,0.7
    dvc queue start                  # `dvc queue status` until nothing is Queued or Running
    python scripts/sweep_table.py    # -> memo/sweep.csv, memo/sweep.png

Speaker k-fold on a small folder (every speaker tested once, by a model that never heard it):

    dvc exp run --queue -S data.test_percent=20 -S data.fold=0,1,2,3,4
    dvc queue start
    python scripts/sweep_table.py --param data.fold --pool   # + memo/sweep_pooled.csv, sweep_paired.csv

One model's folds alone (`dvc exp run ... -S data.fold=0,1,2,3,4 evaluate@teacher`, whose runs keep
the baseline's stale summary.json): `--model teacher` reads metrics/eval/teacher.json instead.

It reads `dvc exp show --json` (or a saved copy: --json FILE). That output is a list: the uncommitted
workspace first, then each baseline commit, each as {rev, name, data, error, experiments}; an
experiment is {name, executor: {state: queued|running|success|failed} or null when run in the
workspace, revs: [{rev, name, data, error}]}; `data` holds params[params.yaml].data and
metrics[metrics/summary.json].data (or .error while the run has not written it). Baselines and
finished experiments give one row per (run, model); a failed run still carries stale metrics, so
it is skipped by its state and error, never by its metrics.
"""
import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from kws import chain  # noqa: E402
from kws.metrics import mcnemar_p, wilson  # noqa: E402

SUMMARY = "metrics/summary.json"
PARAMS = "params.yaml"
UNFINISHED = {"queued", "running", "failed"}
FIGURES = [("int8_bytes", 1 / 1024, "INT8 flash (KB)"), ("top1", 100, "top-1 accuracy (%)"),
           ("far_macro", 100, "FAR at 1% FRR (%)")]  # (column, scale, axis label)


def dvc_program():
    """dvc on PATH, else the one beside this Python: `.venv/bin/python scripts/...` works without
    activating the environment."""
    found = shutil.which("dvc") or shutil.which("dvc", path=str(Path(sys.executable).parent))
    if not found:
        raise FileNotFoundError(f"dvc is neither on PATH nor beside {sys.executable}: run `make setup` and "
                                "use .venv/bin/python, or pass --json with saved `dvc exp show --json` output")
    return found


def exp_show(json_file=None, all_commits=False):
    if json_file:
        path = Path(json_file)
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found (expected the output of `dvc exp show --json`)")
        return json.loads(path.read_text())
    cmd = [dvc_program(), "exp", "show", "--json"] + (["--all-commits"] if all_commits else [])
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError(f"`{' '.join(cmd)}` failed: {r.stderr.strip()}")
    return json.loads(r.stdout)


def runs(show):
    """(name, rev entry, executor state) of every baseline commit and experiment; the workspace is
    skipped: it is uncommitted and may be mid-edit."""
    for base in show:
        if base["rev"] == "workspace":
            continue
        yield base["name"] or base["rev"][:7], base, None
        for exp in base.get("experiments") or []:
            state = (exp.get("executor") or {}).get("state")
            for rev in exp["revs"]:
                yield rev["name"] or rev["rev"][:7], rev, state


def why_unfinished(rev, state, metrics_file=SUMMARY):
    """None for a run whose metrics file can be used, else the reason it cannot."""
    if rev.get("error"):
        return rev["error"].get("msg") or "error"
    if state in UNFINISHED:
        return state
    metrics = ((rev.get("data") or {}).get("metrics") or {}).get(metrics_file, {})
    if "data" not in metrics:
        return (metrics.get("error") or {}).get("msg") or f"no {metrics_file}"
    return None


def param(data, dotted):
    value = data["params"].get(PARAMS, {}).get("data", {})
    for key in dotted.split("."):
        if not isinstance(value, dict) or key not in value:
            raise KeyError(f"{PARAMS} of run {data['rev']} has no parameter {dotted}")
        value = value[key]
    return value


def table(show, param_name, model=None):
    """One row per (finished run, model), newest run per parameter value; plus [(run, why skipped)]
    and one row per (finished run, paired test of its summary) with the test's discordant counts.
    With `model`, one row per run from that model's evaluate metrics alone (no summary, no pairs)."""
    rows, pairs, skipped = [], [], []
    for name, rev, state in runs(show):
        why = why_unfinished(rev, state, chain.eval_file(model) if model else SUMMARY)
        if why:
            skipped.append((name, why))
            continue
        data = rev["data"]
        run = {"run": name, "rev": data["rev"][:7], "timestamp": data["timestamp"], param_name: param(data, param_name)}
        if model:
            m = data["metrics"][chain.eval_file(model)]["data"]
            if "test_clips" not in m:  # written before evaluate recorded its clip counts
                skipped.append((name, f"{chain.eval_file(model)} has no clip counts: rerun evaluate@{model}"))
                continue
            rows.append({**run, "model": model, "deployed": False, "top1": m["top1"], "far_macro": m["far_macro"],
                         "val_top1": m["val_top1"], "test_clips": m["test_clips"], "val_clips": m["val_clips"]})
            continue
        summary = data["metrics"][SUMMARY]["data"]
        dataset = summary.get("dataset", {})
        for model_name, m in summary["models"].items():
            rows.append({**run, "model": model_name,
                         "deployed": model_name == summary.get("deployed"), "int8_bytes": m["int8_bytes"],
                         "top1": m["top1"], "far_macro": m["far_macro"], "val_top1": m.get("val_top1"),
                         "clip_epochs": m["effort"]["clip_epochs"], "test_clips": dataset.get("test_clips"),
                         "val_clips": dataset.get("val_clips"), "wall_s": m["effort"]["wall_s"]})
        for test, t in summary.get("paired_tests", {}).items():
            pairs.append({"run": name, "test": test, "a": t["a"], "b": t["b"], "only_a_right": t["only_a_right"],
                          "only_b_right": t["only_b_right"]})
    if not rows:
        raise SystemExit("no finished run with metrics in `dvc exp show`; see `dvc queue status`"
                         + "".join(f"\n  skipped {n}: {w}" for n, w in skipped))
    df = pd.DataFrame(rows)
    # a value run twice (the baseline and an experiment, or a re-run): the newest run stands for it
    kept = df.sort_values("timestamp", kind="stable").drop_duplicates([param_name, "model"], keep="last")
    skipped += [(n, f"older run at the same {param_name}") for n in sorted(set(df["run"]) - set(kept["run"]))]
    pairs = pd.DataFrame(pairs, columns=["run", "test", "a", "b", "only_a_right", "only_b_right"])
    pairs = pairs[pairs["run"].isin(kept["run"])]  # the runs standing for their parameter value
    return kept.sort_values(param_name, kind="stable").reset_index(drop=True), pairs, skipped  # models in summary order


def pooled(df):
    """Per model over the runs of a speaker k-fold (one per data.fold): top-1 of all test clips
    pooled, with its Wilson interval (the folds' test speakers are disjoint, so each clip counts
    once), the same of all validation clips, and FAR at 1% FRR averaged over folds weighted by
    their test clips. The `deployed` row
    pools what each fold shipped: its own choice on its validation split, so no fold's test
    clips chose it."""
    groups = list(df.groupby("model", sort=False))
    if df["deployed"].any():
        groups.append(("deployed", df[df["deployed"]]))
    rows = []
    for model, d in groups:
        n = d["test_clips"].sum()
        correct = round((d["top1"] * d["test_clips"]).sum())
        lo, hi = wilson(correct, n)
        row = {"model": model, "folds": len(d), "test_clips": n, "top1": correct / n, "top1_lo": lo, "top1_hi": hi,
               "far_macro": (d["far_macro"] * d["test_clips"]).sum() / n,
               "top1_fold_sd": d["top1"].std(ddof=1) if len(d) > 1 else float("nan")}
        if d[["val_top1", "val_clips"]].notna().all(axis=None):  # summaries of older runs lack them
            n_val, val_correct = d["val_clips"].sum(), round((d["val_top1"] * d["val_clips"]).sum())
            row.update(val_clips=n_val, val_top1=val_correct / n_val,
                       **dict(zip(["val_top1_lo", "val_top1_hi"], wilson(val_correct, n_val))))
        rows.append(row)
    return pd.DataFrame(rows)


def pooled_paired(pairs):
    """Each summary's paired test (deployed vs teacher, KD vs no KD, QAT vs PTQ) over all folds:
    the folds' test clips are disjoint, so their discordant counts add up to those of one exact
    McNemar test on the pooled clips (deployed names each fold's own choice, so `a` may vary)."""
    rows = []
    for test, d in pairs.groupby("test", sort=False):
        a, b = int(d["only_a_right"].sum()), int(d["only_b_right"].sum())
        rows.append({"test": test, "a": "/".join(dict.fromkeys(d["a"])), "b": "/".join(dict.fromkeys(d["b"])),
                     "folds": len(d), "only_a_right": a, "only_b_right": b, "p_value": mcnemar_p(a, b)})
    return pd.DataFrame(rows)


def plot(df, param_name, path):
    """INT8 flash, top-1 and FAR against the swept parameter, one line per model (flash only from
    summaries)."""
    figures = [f for f in FIGURES if f[0] in df]
    fig, axes = plt.subplots(1, len(figures), figsize=(13 * len(figures) / len(FIGURES), 4), dpi=150, squeeze=False)
    axes = axes[0]
    for ax, (column, scale, label) in zip(axes, figures):
        for model, d in df.groupby("model", sort=False):
            ax.plot(d[param_name], scale * d[column], marker="o", label=model)
        ax.set_xlabel(param_name)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    fig.suptitle(f"Sweep over {param_name}: {df[param_name].nunique()} finished runs", fontsize=11)
    fig.tight_layout(rect=(0, 0.08, 1, 1))  # room below for one legend shared by the three panels
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=9, frameon=False)
    fig.savefig(path, dpi=150)
    plt.close(fig)


def main(argv=None):
    ap = argparse.ArgumentParser(description="CSV and plot of a DVC experiment sweep")
    ap.add_argument("--json", help="saved `dvc exp show --json` output instead of running dvc")
    ap.add_argument("--param", default="prune.ratio", help="the swept parameter in params.yaml (dotted)")
    ap.add_argument("--all-commits", action="store_true", help="include experiments of every commit, not only HEAD")
    ap.add_argument("--out", default="memo", help="folder for sweep.csv and sweep.png")
    ap.add_argument("--pool", action="store_true", help="the runs are speaker folds (data.fold): also pool "
                    "their test clips per model -> sweep_pooled.csv")
    ap.add_argument("--model", help="read this model's metrics/eval/MODEL.json instead of the summary (runs of "
                    "`evaluate@MODEL` alone)")
    a = ap.parse_args(argv)
    try:
        show = exp_show(a.json, a.all_commits)
    except (FileNotFoundError, RuntimeError) as e:
        sys.exit(f"sweep_table: {e}")
    df, pairs, skipped = table(show, a.param, a.model)
    for name, why in skipped:
        print(f"skipped {name}: {why}", file=sys.stderr)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    df.to_csv(out / "sweep.csv", index=False)
    plot(df, a.param, out / "sweep.png")
    print(df.pivot(index=a.param, columns="model", values="top1").round(4).to_string())
    print(f"-> {out / 'sweep.csv'}, {out / 'sweep.png'}")
    if a.pool:
        pool = pooled(df)
        pool.to_csv(out / "sweep_pooled.csv", index=False)
        print(pool.round(4).to_string(index=False))
        print(f"-> {out / 'sweep_pooled.csv'}")
        if len(pairs):
            paired = pooled_paired(pairs)
            paired.to_csv(out / "sweep_paired.csv", index=False)
            print(paired.round(4).to_string(index=False))
            print(f"-> {out / 'sweep_paired.csv'} (exact McNemar on the pooled test clips)")


if __name__ == "__main__":
    main()

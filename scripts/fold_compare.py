"""Two settings of one parameter compared clip by clip over speaker folds, on validation and test:

    dvc exp run --queue -S data.test_percent=20 -S data.fold=0,1,2,3,4 -S distill.epochs=140,420  # + data flags
    dvc queue start                  # `dvc queue status` until nothing is Queued or Running
    python scripts/fold_compare.py --param distill.epochs --a 420 --b 140   # -> memo/fold_compare.csv

A setting of an early stage needs only the models it changes: target their evaluate stages and
name them (the rest of the chain does not run):

    dvc exp run --queue -S data.fold=0,1,2,3,4 -S finetune.epochs=60,180 evaluate@pruned_wide evaluate@pruned_narrow
    python scripts/fold_compare.py --param finetune.epochs --a 180 --b 60 --model pruned_wide --model pruned_narrow

Per model, and for the deployed model (each run's own choice), the clips of every fold that both
settings ran are pooled: top-1 of each setting with its Wilson interval, and an exact McNemar test
on the clip pairs (clips only A gets right against clips only B gets right). The folds' clips are
disjoint and both settings see the same clips in the same order, so the pooled discordant counts
are those of one paired test on all of them: it resolves differences that two overlapping
intervals, or any one fold, cannot. Decide on validation; test is for reading after. Beside them,
each setting's FAR at 1% FRR: the folds' own figures averaged by clips (one seed: no interval),
and each setting's top-1 per fold (in fold order, "/"-separated).

The per-clip rows come from each run's commit (`git show REV:metrics/eval/<model>/confusion.csv`
and `val_confusion.csv`: DVC keeps them in git, cache: false), so no run needs applying; runs made
in other clones need their commits here first (`git fetch CLONE 'refs/exps/*:refs/exps/*'`). A pair
is refused when its runs differ in any other parameter, or its clips differ: then it would not be
a comparison of the one parameter; and a model a run did not evaluate itself (a targeted run keeps
its base commit's rows for the others) is refused, not read.
"""
import argparse
import functools
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

import sweep_table as sweep  # scripts/ is on sys.path when run as a script
from kws.metrics import mcnemar, wilson

FILES = {"val": "val_confusion.csv", "test": "confusion.csv"}
FAR_KEYS = {"val": "val_far_macro", "test": "far_macro"}


def fold_runs(show, param_name, values):
    """{(fold, value): (run name, data)}: the newest finished run per speaker fold and setting of
    `param_name` among `values`; plus [(run, why skipped)]."""
    found, skipped = [], []
    for name, rev, state in sweep.runs(show):
        why = sweep.why_unfinished(rev, state)
        if not why:
            try:  # commits older than a parameter (--all-commits reaches them) lack it
                key = (sweep.param(rev["data"], "data.fold"), sweep.param(rev["data"], param_name))
            except KeyError as e:
                why = str(e.args[0])
        if why:
            skipped.append((name, why))
        elif key[1] in values:
            found.append((name, rev["data"], key))
    chosen = {}
    for name, data, key in sorted(found, key=lambda run: run[1]["timestamp"]):  # a newer run replaces an older one
        if key in chosen:
            skipped.append((chosen[key][0], f"a newer run at data.fold={key[0]}, {param_name}={key[1]}"))
        chosen[key] = (name, data)
    return chosen, skipped


def check_same_otherwise(runs, param_name, allowed=()):
    """Every run in `runs` [(name, data)] must have the same params but `param_name`, data.fold and
    the `allowed` ones (settings that go with the compared one, such as a size-matched prune ratio)."""
    def rest(data):
        p = pd.json_normalize(data["params"]["params.yaml"]["data"], sep=".").to_dict("records")[0]  # {'a.b': value}
        return {k: v for k, v in p.items() if k not in (param_name, "data.fold", *allowed)}
    (name0, data0), ref = runs[0], rest(runs[0][1])
    for name, data in runs[1:]:
        other = rest(data)
        diff = sorted(k for k in ref.keys() | other.keys() if ref.get(k) != other.get(k))
        if diff:
            raise ValueError(f"runs {name0} and {name} differ in {', '.join(diff[:5])} as well as {param_name}: "
                             f"not a comparison of {param_name} alone (rerun them at the same other settings, or --allow "
                             f"a parameter that is meant to go with it)")


def git_show(rev, path):
    """The text of `path` in commit `rev`, or None where the commit has no such file."""
    r = subprocess.run(["git", "show", f"{rev}:{path}"], capture_output=True, text=True)
    return None if r.returncode else r.stdout


@functools.cache  # every model of a run checks the same lock
def lock_stages(rev):
    """The stages of the run's dvc.lock, or None where the commit has none."""
    lock = git_show(rev, "dvc.lock")
    return None if lock is None else yaml.safe_load(lock)["stages"]


def check_evaluated(rev, model):
    """A run made with targets (`dvc exp run ... evaluate@pruned_narrow`) carries the other models'
    rows from its base commit: refuse them. Its dvc.lock tells: an evaluate entry the run did not
    rerun depends on files (features, models) other than the ones the run's own stages wrote."""
    stages = lock_stages(rev)
    if stages is None:
        return
    entry = stages.get(f"evaluate@{model}")
    outs = {o["path"]: o.get("md5") for stage in stages.values() for o in stage.get("outs", [])}
    stale = [d["path"] for d in (entry or {}).get("deps", []) if d["path"] in outs and outs[d["path"]] != d.get("md5")]
    if entry is None or stale:
        why = f"its evaluate@{model} read another {stale[0]}" if stale else f"its dvc.lock has no evaluate@{model}"
        raise ValueError(f"run {rev[:7]} did not evaluate {model} on its own data and models ({why}): run the "
                         f"experiments with evaluate@{model} among their targets, or leave --model {model} out")


@functools.cache  # the deployed row reads files another row has read
def read_far(rev, model, split):
    """The run's FAR at 1% FRR (macro over keywords, validation thresholds) on `split`; None where
    its metrics predate it."""
    text = git_show(rev, f"metrics/eval/{model}.json")
    return None if text is None else json.loads(text).get(FAR_KEYS[split])


@functools.cache
def read_rows(rev, model, split):
    """(labels, correct) of `model`'s clips in `split`, read from the run's commit."""
    path = f"metrics/eval/{model}/{FILES[split]}"
    text = git_show(rev, path)
    if text is None:
        hint = " (runs made before val_confusion.csv was written: --splits test)" if split == "val" else ""
        raise FileNotFoundError(f"run {rev[:7]} has no {path}{hint}")
    check_evaluated(rev, model)
    rows = pd.read_csv(io.StringIO(text))
    return rows["actual"].to_numpy(), (rows["actual"] == rows["predicted"]).to_numpy()


def compare(chosen, param_name, a, b, models, splits, allowed=()):
    """One row per (model, split): pooled top-1 of settings a and b over the folds both ran, with
    Wilson intervals, and the exact McNemar test on the pooled clip pairs."""
    folds = sorted(f for f, v in chosen if v == a and (f, b) in chosen)
    if not folds:
        raise SystemExit(f"no speaker fold has finished runs at both settings ({a} and {b})")
    check_same_otherwise([chosen[(f, a)] for f in folds] + [chosen[(f, b)] for f in folds], param_name, allowed)
    rows = []
    for model in models:
        for split in splits:
            ca, cb, fa, fb = [], [], [], []
            for f in folds:
                runs = chosen[(f, a)][1], chosen[(f, b)][1]
                names = [deployed(d) if model == "deployed" else model for d in runs]
                (la, xa), (lb, xb) = (read_rows(d["rev"], n, split) for d, n in zip(runs, names))
                if len(la) != len(lb) or (la != lb).any():
                    raise ValueError(f"data.fold={f}: the {split} clips of runs {runs[0]['rev'][:7]} and "
                                     f"{runs[1]['rev'][:7]} differ; the data settings must match")
                ca.append(xa)
                cb.append(xb)
                fa.append(read_far(runs[0]["rev"], names[0], split))
                fb.append(read_far(runs[1]["rev"], names[1], split))
            sizes = [len(c) for c in ca]
            by_fold = {tag: "/".join(f"{100 * c.mean():.1f}" for c in cs) for tag, cs in (("a", ca), ("b", cb))}
            ca, cb = np.concatenate(ca), np.concatenate(cb)
            test = mcnemar(ca, cb)
            n = len(ca)
            row = {"model": model, "split": split, "folds": ",".join(map(str, folds)), "clips": n}
            for tag, c in (("a", ca), ("b", cb)):
                row.update({f"{tag}_top1": c.mean(), **dict(zip([f"{tag}_lo", f"{tag}_hi"], wilson(int(c.sum()), n)))})
            rows.append({**row, "only_a_right": test["only_a_right"], "only_b_right": test["only_b_right"],
                         "p_value": test["p_value"], "a_far": clip_weighted(fa, sizes),
                         "b_far": clip_weighted(fb, sizes), "a_by_fold": by_fold["a"], "b_by_fold": by_fold["b"]})
    return pd.DataFrame(rows)


def clip_weighted(values, sizes):
    """The folds' mean weighted by their clips; NaN if any fold lacks the value. FAR at 1% FRR
    sets a threshold per fold, so pooling clips across folds would mix thresholds: a weighted mean
    of the folds' own figures is what the runs measured. One seed: no interval covers a rerun."""
    if any(v is None for v in values):
        return float("nan")
    return float(np.average(values, weights=sizes))


def deployed(data):
    return data["metrics"][sweep.SUMMARY]["data"]["deployed"]


def summary_models(data):
    return list(data["metrics"][sweep.SUMMARY]["data"]["models"])


def main(argv=None):
    ap = argparse.ArgumentParser(description="paired comparison of two settings of one parameter over speaker folds")
    ap.add_argument("--param", required=True, help="the parameter whose two settings are compared (dotted)")
    ap.add_argument("--a", required=True, help="setting A, as -S gave it (YAML: 420, 0.5, true, tc_resnet8)")
    ap.add_argument("--b", required=True, help="setting B, the one A is compared against")
    ap.add_argument("--model", action="append", help="only this model (repeatable; 'deployed' for each run's "
                    "choice); default: every model of the summaries, and deployed")
    ap.add_argument("--allow", action="append", default=[], help="a parameter that may differ between the "
                    "settings too, as part of what is compared (repeatable; e.g. prune.ratio)")
    ap.add_argument("--splits", default="val,test", help="comma-separated: val, test (default both)")
    ap.add_argument("--json", help="saved `dvc exp show --json` output instead of running dvc")
    ap.add_argument("--all-commits", action="store_true", help="include experiments of every commit, not only HEAD")
    ap.add_argument("--out", default="memo", help="folder for fold_compare.csv")
    args = ap.parse_args(argv)
    a, b = yaml.safe_load(args.a), yaml.safe_load(args.b)
    if a == b:
        ap.error(f"--a and --b are the same setting ({a!r})")
    splits = args.splits.split(",")
    if not splits or set(splits) - set(FILES):
        ap.error(f"--splits takes val and/or test, comma-separated, not {args.splits!r}")
    try:
        show = sweep.exp_show(args.json, args.all_commits)
    except (FileNotFoundError, RuntimeError) as e:
        sys.exit(f"fold_compare: {e}")
    chosen, skipped = fold_runs(show, args.param, (a, b))
    for name, why in skipped:
        print(f"skipped {name}: {why}", file=sys.stderr)
    unpaired = sorted(f"data.fold={f} ({args.param}={v})" for f, v in chosen if (f, b if v == a else a) not in chosen)
    if unpaired:
        print(f"left out, no run at the other setting: {', '.join(unpaired)}", file=sys.stderr)
    models = args.model or list(dict.fromkeys(m for _, d in chosen.values() for m in summary_models(d))) + ["deployed"]
    try:
        df = compare(chosen, args.param, a, b, models, splits, args.allow)
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f"fold_compare: {e}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    df.to_csv(out / "fold_compare.csv", index=False)
    percent = ("a_top1", "a_lo", "a_hi", "b_top1", "b_lo", "b_hi", "a_far", "b_far")
    show = df.assign(**{c: (100 * df[c]).round(1) for c in percent}, p_value=df["p_value"].round(4))
    print(f"A: {args.param}={a!r}  B: {args.param}={b!r}  (top-1 %, 95% Wilson; exact McNemar on the pooled "
          f"clip pairs; far: FAR at 1% FRR %, the folds' mean weighted by clips, one seed, no interval; by_fold: "
          f"top-1 % of each fold)")
    print(show.to_string(index=False))
    print(f"-> {out / 'fold_compare.csv'}")


if __name__ == "__main__":
    main()

"""The decision memo: five plots, a one-page MEMO.md and a self-contained memo.html, built from
metrics/summary.json plus the DET and confusion rows of the teacher and the deployed model.
Every number in the memo is read from those files; none is typed in here."""
import base64
import html
import json
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: the stage runs headless
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402
from matplotlib.transforms import Bbox  # noqa: E402

from kws import metrics  # noqa: E402
from kws.chain import MODELS, fp32_source  # noqa: E402
from kws.sources import CLASSES, KEYWORDS  # noqa: E402

NEEDED = list(MODELS)
KEYS = ["label", "step", "precision", "macs", "int8_bytes", "sram_liveness", "sram_planned", "tflite_bytes",
        "tflm_arena_bytes", "latency_int8_ms", "top1",
        "top1_lo", "top1_hi", "far_macro", "far_macro_lo", "far_macro_hi", "far_worst", "worst_keyword", "frr_macro",
        "far_filler", "val_top1", "effort"]  # per model, all used
PAIRED = ["deployed_vs_teacher", "kd_vs_nokd", "qat_vs_ptq"]  # summary.json's paired tests, all quoted
PLOTS = ["accuracy_vs_size.png", "far_vs_size.png", "accuracy_vs_effort.png", "det.png", "confusion_deployed.png"]
MIN_CLIPS_FOR_FRR = 100  # one miss in fewer than 100 clips is already more than a 1% miss rate
ALPHA = 0.05  # paired tests: two models are called distinguishable below this p-value
DPI = 150
PLAIN = FuncFormatter(lambda v, _: f"{v:g}")  # log-axis ticks as 0.1, 1, 10 rather than 10^-1, 10^0, 10^1
COLORS = {"fp32": "tab:blue", "int8": "tab:green", "16x8": "tab:olive"}
PRECISION_LABELS = {"fp32": "FP32 model", "int8": "INT8 model", "16x8": "16x8 model (int16 activations)"}
DEPLOYED_COLOR = "crimson"


# ---------------------------------------------------------------- inputs

def read_summary(metrics_dir):
    path = Path(metrics_dir) / "summary.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: the summary stage writes it (dvc repro summary)")
    s = json.loads(path.read_text())
    missing = [m for m in NEEDED if m not in s.get("models", {})]
    if missing:
        raise KeyError(f"{path} lacks models {missing}; the memo compares all of {NEEDED}")
    if s["deployed"] not in s["models"]:
        raise KeyError(f"{path}: deployed model {s['deployed']!r} is not among its models")
    for name, m in s["models"].items():
        if set(KEYS) - set(m):
            raise KeyError(f"{path}: model {name} lacks {sorted(set(KEYS) - set(m))}")
    if set(PAIRED) - set(s.get("paired_tests", {})):
        raise KeyError(f"{path} lacks paired tests {sorted(set(PAIRED) - set(s.get('paired_tests', {})))}")
    return s


def chain_edges(models):
    """(parent, child) pairs of the compression chain, read from the stages each model's effort adds
    up: a model's parent is the one whose stages are the longest proper prefix of its own."""
    steps = {name: m["effort"]["steps"] for name, m in models.items()}
    edges = []
    for child, own in steps.items():
        parents = [p for p, s in steps.items() if len(s) < len(own) and own[:len(s)] == s]
        if parents:
            edges.append((max(parents, key=lambda p: len(steps[p])), child))
    return edges


def read_eval_csv(metrics_dir, model, name):
    path = Path(metrics_dir) / "eval" / model / name
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: the evaluate@{model} stage writes it")
    return pd.read_csv(path)


# ---------------------------------------------------------------- number formats (one place, so all agree)

def kb(n_bytes):
    return f"{n_bytes / 1024:.1f} KB"


def pct(x, decimals=1):
    return f"{100 * x:.{decimals}f}%"


def far(x):
    return pct(x, 2)


def with_interval(m, key, fmt):
    """'93.1% (91.0-94.8)': a figure and its 95% interval, the bounds without the repeated % sign."""
    return f"{fmt(m[key])} ({fmt(m[key + '_lo']).rstrip('%')}-{fmt(m[key + '_hi']).rstrip('%')})"


def macs(n):
    return f"{n / 1e6:.2f} M"


def duration(seconds):
    """Wall time as people say it: seconds below two minutes, minutes above."""
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


def effort(m):
    e = m["effort"]
    return f"{e['clip_epochs'] / 1000:.0f}k clip-epochs, {duration(e['wall_s'])}"


def change(delta, decimals, up="gained", down="lost"):
    """'gained 1.2 pp' / 'lost 0.3 pp' / 'no change' for a delta in fractions, worded by its sign
    after rounding, so a delta that prints as 0.0 is never called a gain or a loss."""
    size = round(abs(100 * delta), decimals)
    if size == 0:
        return "no change"
    return f"{up if delta > 0 else down} {size:.{decimals}f} pp"


# ---------------------------------------------------------------- plots

def place_labels(ax, points, texts, bold=(), avoid=(), fontsize=8):
    """Label every point at the first free spot near it: beside it (right, then left), shifted a line
    up or down at a time when crowded, then straight above or below. A spot is free when its text
    overlaps no other label, no marker, nothing in `avoid` (display-space boxes) and stays inside the
    axes. Points are labelled top to bottom, trying upward shifts first, so stacked labels keep their
    points' order and leader lines (drawn for labels moved off their point) do not cross."""
    renderer = ax.figure.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    px = ax.figure.dpi / 72  # points -> pixels
    xy = [ax.transData.transform(p) for p in points]
    radius = [8 if i in bold else 4 for i in range(len(points))]  # marker half-size (points); bold: the ring
    taken = [Bbox.from_bounds(*(c - r * px), 2 * r * px, 2 * r * px) for c, r in zip(xy, radius)] + list(avoid)

    def annotate(i, dx, dy, **arrow):
        return ax.annotate(texts[i], points[i], xytext=(dx, dy), textcoords="offset points", fontsize=fontsize,
                           fontweight="bold" if i in bold else "normal",
                           ha="left" if dx > 0 else "right" if dx < 0 else "center",
                           va="center" if dx else "bottom" if dy > 0 else "top",
                           bbox=dict(boxstyle="square,pad=0.1", fc="white", ec="none", alpha=0.8), **arrow)

    for i in sorted(range(len(points)), key=lambda i: -xy[i][1]):
        r = radius[i]
        spots = [(side * (r + 3 if k == 0 else r + 8), 12 * k) for k in (0, 1, -1, 2, -2, 3, -3, 4, -4)
                 for side in (1, -1)] + [(0, r + 12), (0, -r - 12), (0, r + 26), (0, -r - 26)]
        for dx, dy in spots:
            a = annotate(i, dx, dy)
            box = a.get_window_extent(renderer).padded(1.5 * px)  # no leader line yet: the text alone
            fits = frame.contains(box.x0, box.y0) and frame.contains(box.x1, box.y1)
            if fits and not any(box.overlaps(t) for t in taken):
                break
            a.remove()
        else:  # nowhere free: the closest spot, overlapping
            dx, dy = spots[0]
            a = annotate(i, dx, dy)
            box = a.get_window_extent(renderer)
        if dy or abs(dx) > r + 3:  # moved off its point: show which point it names
            a.remove()
            annotate(i, dx, dy, arrowprops=dict(arrowstyle="-", color="0.55", lw=0.6, shrinkA=1, shrinkB=r))
        taken.append(box)


def segment_boxes(ax, a, b, n=16):
    """Small display-space boxes along the line a-b (data coordinates), so labels keep off it."""
    (x0, y0), (x1, y1) = ax.transData.transform([a, b])
    return [Bbox.from_bounds(x0 + t * (x1 - x0) - 2, y0 + t * (y1 - y0) - 2, 4, 4) for t in np.linspace(0, 1, n)]


def new_axes(figsize):
    fig = plt.figure(figsize=figsize, dpi=DPI)
    # fixed margins, not tight_layout: labels are placed in pixels, so the axes must not move afterwards
    ax = fig.add_axes([0.11, 0.13, 0.85, 0.78])
    return fig, ax


def save(fig, path):
    fig.savefig(path, dpi=DPI, bbox_inches="tight", pad_inches=0.1)
    plt.close(fig)


def scatter_models(ax, s, x, y):
    """Every model as a point coloured by precision; the deployed one ringed. Returns the legend."""
    for name in s["models"]:
        ax.scatter(x[name], y[name], s=36, color=COLORS[s["models"][name]["precision"]], zorder=3, clip_on=False)
    d = s["deployed"]
    ax.scatter(x[d], y[d], s=260, facecolors="none", edgecolors=DEPLOYED_COLOR, linewidths=2, zorder=4)
    shown = {m["precision"] for m in s["models"].values()}
    handles = [plt.Line2D([], [], ls="", marker="o", color=COLORS[p], label=label)
               for p, label in PRECISION_LABELS.items() if p in shown]
    handles.append(plt.Line2D([], [], ls="", marker="o", ms=11, mfc="none", mec=DEPLOYED_COLOR, mew=2, label="deployed"))
    return ax.legend(handles=handles, loc="best", fontsize=8, framealpha=0.9)


def plot_vs_size(s, key, ylabel, title, path):
    """One metric against flash (the .tflite TFLite Micro runs), with its 95% intervals as bars and
    the budget line: the trade-off leadership decides on."""
    names = list(s["models"])
    x = {m: s["models"][m]["tflite_bytes"] / 1024 for m in names}
    y = {m: 100 * s["models"][m][key] for m in names}
    budget = s["budget_bytes"] / 1024
    fig, ax = new_axes((7, 4.6))
    positive = [v for v in y.values() if v > 0]
    log = bool(positive) and max(positive) / min(positive) > 10  # values spanning decades
    zeros = [m for m in names if y[m] <= 0]
    if log:
        # log axes cannot show 0: zero-FAR models sit on a floor below the smallest positive value
        y = {m: max(v, min(positive) / 3) for m, v in y.items()}  # bars below are clipped to the same floor
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(PLAIN)
    ax.set_xlim(0, max(max(x.values()), budget) * 1.25)
    lo, hi = min(y.values()), max(y.values())
    if log:
        ax.set_ylim(lo / 2.5, hi * 2.5)
    else:  # both metrics are percentages: keep the axis within 0..100
        pad = max(hi - lo, 1.0) * 0.35
        ax.set_ylim(max(lo - pad, 0), min(hi + pad, 100))
    ax.axvspan(budget, ax.get_xlim()[1], color="0.93", zorder=0)
    ax.axvline(budget, color=DEPLOYED_COLOR, ls="--", lw=1.2)
    budget_text = ax.text(budget, 0.98, f" {budget:g} KB budget", transform=ax.get_xaxis_transform(),
                          color=DEPLOYED_COLOR, fontsize=9, va="top", ha="left")
    floor = min(positive) / 3 if log else 0.0
    bounds = {m: (max(100 * s["models"][m][f"{key}_lo"], floor), max(100 * s["models"][m][f"{key}_hi"], floor))
              for m in names}
    ax.errorbar([x[m] for m in names], [y[m] for m in names], fmt="none", ecolor="0.6", elinewidth=1, capsize=2,
                yerr=[[max(y[m] - bounds[m][0], 0) for m in names], [max(bounds[m][1] - y[m], 0) for m in names]])
    legend = scatter_models(ax, s, x, y)
    labels = [s["models"][m]["label"] + (": 0, drawn at the floor" if log and m in zeros else "") for m in names]
    renderer = fig.canvas.get_renderer()
    place_labels(ax, [(x[m], y[m]) for m in names], labels, bold={names.index(s["deployed"])},
                 avoid=[legend.get_window_extent(renderer), budget_text.get_window_extent(renderer)])
    ax.set_xlabel("flash: INT8 .tflite, measured (KB)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    save(fig, path)


def plot_effort(s, path):
    """Top-1 against cumulative training compute, with arrows along the compression chain."""
    ms = s["models"]
    names = list(ms)
    x = {m: ms[m]["effort"]["clip_epochs"] / 1000 for m in names}
    y = {m: 100 * ms[m]["top1"] for m in names}
    fig, ax = new_axes((7.5, 5))
    ax.set_xlim(0, max(x.values()) * 1.3)
    lo, hi = min(y.values()), max(y.values())
    pad = max(hi - lo, 1.0) * 0.4
    ax.set_ylim(lo - pad, hi + pad)
    edges = chain_edges(ms)
    for a, b in edges:
        ax.annotate("", (x[b], y[b]), (x[a], y[a]),
                    arrowprops=dict(arrowstyle="-|>", color="0.6", lw=1, shrinkA=6, shrinkB=6))
    legend = scatter_models(ax, s, x, y)
    labels = [f"{ms[m]['step']}: {ms[m]['label']}\n{duration(ms[m]['effort']['wall_s'])} wall" for m in names]
    arrows = [box for a, b in edges for box in segment_boxes(ax, (x[a], y[a]), (x[b], y[b]))]
    place_labels(ax, [(x[m], y[m]) for m in names], labels, bold={names.index(s["deployed"])},
                 avoid=[legend.get_window_extent(fig.canvas.get_renderer())] + arrows, fontsize=7)
    ax.set_xlabel("cumulative training compute from the teacher on (thousand clip-epochs)")
    ax.set_ylabel("top-1 accuracy on test (%)")
    ax.set_title("Accuracy vs cumulative training compute, along the compression chain")
    ax.grid(alpha=0.3)
    save(fig, path)


def plot_det(det, s, path):
    """Pooled DET curves (FRR vs FAR, both in %), teacher against the deployed student."""
    fig, ax = new_axes((6.5, 4.6))
    for model, color in [("teacher", COLORS["fp32"]), (s["deployed"], DEPLOYED_COLOR)]:
        d = det[model][det[model]["keyword"] == "pooled"].sort_values("far")
        ax.plot(100 * d["far"], 100 * d["frr"], color=color, lw=1.8, label=s["models"][model]["label"])
    ax.set_xscale("log")
    # symlog: a DET that reaches 0% misses stays on the plot instead of dropping off a log axis
    ax.set_yscale("symlog", linthresh=0.1, linscale=0.5)
    ax.set_ylim(-0.01, 100)  # just below 0, so a curve at zero misses is not hidden by the axis
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_formatter(PLAIN)
    max_frr = 100 * s["max_frr"]
    ax.axhline(max_frr, color="0.3", ls="--", lw=1)
    ax.text(ax.get_xlim()[0], max_frr, f"  {max_frr:g}% FRR operating point", va="bottom", fontsize=8, color="0.3")
    ax.set_xlabel("false accepts: FAR (% of non-keyword clips, log)")
    ax.set_ylabel("misses: FRR (% of keyword clips, symlog)")
    ax.set_title("DET on test, pooled over the ten keywords (lower-left is better)")
    ax.legend(fontsize=8, loc="upper right")
    ax.grid(alpha=0.3, which="both")
    save(fig, path)


def plot_confusion(conf, label, path):
    """Counts in the cells, colours normalized per actual class (rows) so rare classes read alike."""
    unknown = sorted((set(conf["actual"]) | set(conf["predicted"])) - set(CLASSES))
    if unknown:
        raise ValueError(f"confusion rows name classes {unknown} outside {CLASSES}")
    counts = pd.crosstab(conf["actual"], conf["predicted"]).reindex(index=CLASSES, columns=CLASSES, fill_value=0)
    rows = counts.to_numpy()
    share = rows / np.maximum(rows.sum(1, keepdims=True), 1)
    fig = plt.figure(figsize=(6.8, 5.8), dpi=DPI)
    ax = fig.add_axes([0.16, 0.15, 0.7, 0.75])
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i, j in np.ndindex(rows.shape):
        if rows[i, j]:
            ax.text(j, i, rows[i, j], ha="center", va="center", fontsize=7,
                    color="white" if share[i, j] > 0.6 else "black")
    ax.set_xticks(range(len(CLASSES)), CLASSES, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(CLASSES)), CLASSES, fontsize=8)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("actual class")
    ax.set_title(f"Confusion matrix of {label}: {len(conf)} test clips, "
                 f"top-1 {pct(np.trace(rows) / rows.sum())}", fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03).set_label("share of the actual class (row)")
    save(fig, path)


# ---------------------------------------------------------------- memo text

def resolution(conf):
    """What the test set can resolve: the fewest clips of any keyword (one miss is 1/that FRR) and the
    fewest clips that are not a given keyword (one false accept is 1/that FAR)."""
    per_keyword = conf["actual"].value_counts().reindex(KEYWORDS, fill_value=0)
    return {"test_clips": len(conf), "keyword_clips": int(per_keyword.min()),
            "other_clips": int(len(conf) - per_keyword.max())}


def distinguishable(test):
    return test["p_value"] < ALPHA


def paired(s, key):
    """How two models compare on the same test clips: exact McNemar on top-1, interval overlap on FAR."""
    t = s["paired_tests"][key]
    a, b = s["models"][t["a"]], s["models"][t["b"]]
    far_overlap = a["far_macro_lo"] <= b["far_macro_hi"] and b["far_macro_lo"] <= a["far_macro_hi"]
    verdict = "distinguishable" if distinguishable(t) else "**not distinguishable**"
    return (f"top-1 {verdict} (exact McNemar p = {t['p_value']:.2g}: {t['only_a_right']} vs {t['only_b_right']} clips "
            f"only one got right), FAR intervals {'overlap' if far_overlap else 'do not overlap'}")


def next_steps(s, n_kw):
    ms, d = s["models"], s["models"][s["deployed"]]
    steps = []
    if d["tflite_bytes"] > s["budget_bytes"]:
        steps.append(f"The deployed model is {kb(d['tflite_bytes'] - s['budget_bytes'])} over budget: pick a smaller "
                     "`distill.width` or `distill.student`.")
    if ms["student_qat"]["top1"] < ms["student_ptq"]["top1"] and distinguishable(s["paired_tests"]["qat_vs_ptq"]):
        delta = change(ms["student_qat"]["top1"] - ms["student_ptq"]["top1"], 1)
        steps.append(f"QAT is worse than PTQ beyond chance (top-1 {delta}): tune QAT (epochs, learning rate) or "
                     "drop the stage.")
    kd = s["paired_tests"]["kd_vs_nokd"]
    if ms["student_kd"]["top1"] <= ms["student_nokd"]["top1"] or not distinguishable(kd):
        steps.append("Distillation did not beat the no-KD twin beyond chance: revisit `distill.alpha`/`temperature` "
                     "or teachers.")
    if n_kw < MIN_CLIPS_FOR_FRR:
        steps.append(f"Grow the test set to >= {MIN_CLIPS_FOR_FRR} clips per keyword (now {n_kw}) before quoting "
                     f"FAR at {pct(s['max_frr'], 0)} FRR.")
    if d["frr_macro"] > s["max_frr"]:
        steps.append(f"Validation thresholds give {pct(d['frr_macro'])} test FRR, above the {pct(s['max_frr'], 0)} "
                     "target: set thresholds on a larger validation set.")
    if s["dataset"]["source"] == "synthetic":
        steps.append("Re-run on real speech: `dvc exp run -S data.source=speech_commands`.")
    headroom = s["budget_bytes"] - d["tflite_bytes"]
    if headroom > 0.2 * s["budget_bytes"]:
        steps.append(f"{kb(headroom)} of flash is unused: a wider student (`distill.width`) may buy accuracy back.")
    return steps


def memo_markdown(s, res, stream):
    ms, name = s["models"], s["deployed"]
    n_kw = res["keyword_clips"]
    d, t = ms[name], ms["teacher"]
    ds, budget = s["dataset"], s["budget_bytes"]
    op = f"FAR@{pct(s['max_frr'], 0)}FRR"
    fits = d["tflite_bytes"] <= budget
    lines = [f"# Keyword spotter under a {kb(budget)} flash budget: decision memo", "",
             f"*Generated from `metrics/summary.json` by the `memo` stage; FAR is the false-accept rate at "
             f"{pct(s['max_frr'], 0)} FRR (miss rate), macro mean over the ten keywords, thresholds from validation. "
             "Brackets: 95% intervals (Wilson for top-1; bootstrap over test clips for FAR).*", "",
             f"**Data:** {ds['source']} corpus, split by {ds['split_by']}: {ds['train_clips']} train / "
             f"{ds['val_clips']} validation / {ds['test_clips']} test clips.", ""]
    if ds["source"] == "synthetic":
        lines += ["> **Warning: synthetic speech (espeak-ng voices).** Absolute accuracy and FAR do not transfer to "
                  "real speech; only the comparisons between models are meaningful.", ""]
    lines += ["## Recommendation", "",
              f"{'Ship' if fits else '**Do not ship yet:**'} **{d['label']}** (`{name}`): {kb(d['tflite_bytes'])} "
              f"INT8 .tflite, {'within' if fits else '**over**'} the {kb(budget)} budget "
              f"({pct(d['tflite_bytes'] / budget, 0)}), tensor arena {kb(d['tflm_arena_bytes'])} (RAM budget "
              f"{kb(s['arena_budget_bytes'])}), both measured ({s['measured_on']}; estimated from the ONNX graph: "
              f"{kb(d['int8_bytes'])} flash, {kb(d['sram_planned'])} arena); {macs(d['macs'])} MACs; {d['latency_int8_ms']:.2f} ms INT8 "
              f"(host CPU latency proxy). Top-1 {with_interval(d, 'top1', pct)}, {op} "
              f"{with_interval(d, 'far_macro', far)}, versus the teacher's {pct(t['top1'])} and {far(t['far_macro'])} "
              f"at {kb(t['tflite_bytes'])} (the teacher needs {t['tflite_bytes'] / d['tflite_bytes']:.1f}x the flash and "
              f"{t['macs'] / d['macs']:.1f}x the MACs); against the teacher: {paired(s, 'deployed_vs_teacher')}.",
              f"Chosen on validation, not test: the best validation top-1 ({pct(d['val_top1'])}) of the "
              f"{sum(c['fits_budget'] for c in s['selection']['candidates'].values())} "
              "INT8 models within the flash and RAM budgets"
              + (f"; tied on validation top-1 and FAR with {', '.join(s['selection']['tied_with'])}, so picked by "
                 "chain order: validation cannot tell them apart." if s["selection"]["tied_with"] else ".")
              + precision_sentence(s),
              "", stream_paragraph(stream, s), "",
              "## All models", "",
              f"| model | step | flash .tflite (est.) | arena TFLM (est.) | MACs | val top-1 | top-1 | {op} | cumulative effort |",
              "|---|---|--:|--:|--:|--:|--:|--:|--:|"]
    for m, r in ms.items():
        mark = " **(deployed)**" if m == name else ""
        lines.append(f"| {r['label']}{mark} | {r['step']} | {kb(r['tflite_bytes'])} ({kb(r['int8_bytes'])}) | "
                     f"{kb(r['tflm_arena_bytes'])} ({kb(r['sram_planned'])}) | "
                     f"{macs(r['macs'])} | {pct(r['val_top1'])} | {with_interval(r, 'top1', pct)} | "
                     f"{with_interval(r, 'far_macro', far)} | {effort(r)} |")
    w, n, nokd, kd, ptq, qat = (ms[k] for k in ["pruned_wide", "pruned_narrow", "student_nokd", "student_kd",
                                                "student_ptq", "student_qat"])
    lines += ["", "## What each step bought", "",
              f"- **Pruning + fine-tuning:** {kb(t['tflite_bytes'])} → {kb(w['tflite_bytes'])} (wide) → "
              f"{kb(n['tflite_bytes'])} (narrow); top-1 {change(n['top1'] - t['top1'], 1)}, "
              f"FAR {change(n['far_macro'] - t['far_macro'], 2, 'rose', 'fell')} (teacher → narrow).",
              f"- **Distillation** vs the same student without KD: top-1 {change(kd['top1'] - nokd['top1'], 1)}, "
              f"FAR {change(kd['far_macro'] - nokd['far_macro'], 2, 'rose', 'fell')}; {paired(s, 'kd_vs_nokd')}.",
              f"- **QAT vs PTQ** (same INT8 size): top-1 {change(qat['top1'] - ptq['top1'], 1)}, "
              f"FAR {change(qat['far_macro'] - ptq['far_macro'], 2, 'rose', 'fell')}; {paired(s, 'qat_vs_ptq')}; "
              "PTQ vs its FP32 student: "
              f"top-1 {change(ptq['top1'] - kd['top1'], 1)}.",
              "", "## Risks", "",
              f"- At the operating point the deployed model false-accepts {far(d['far_macro'])} of non-keyword clips "
              f"on average, {far(d['far_worst'])} for the worst keyword (\"{d['worst_keyword']}\"); "
              f"{far(d['far_filler'])} on silence/unknown alone. Test FRR at validation thresholds: "
              f"{pct(d['frr_macro'])} (target {pct(s['max_frr'], 0)}).",
              f"- Test-set size: {res['test_clips']} clips, {n_kw} per keyword, so one miss is {pct(1 / n_kw)} FRR and "
              f"one false accept {far(1 / res['other_clips'])} FAR; a {pct(s['max_frr'], 0)} FRR is "
              f"only resolvable with >= {MIN_CLIPS_FOR_FRR} clips per keyword "
              f"({'met' if n_kw >= MIN_CLIPS_FOR_FRR else 'not met: treat FAR figures as rough'}).",
              "", "## Next steps", ""]
    lines += [f"- {step}" for step in next_steps(s, n_kw)]
    lines += ["", "## Figures", "",
              "| | |", "|---|---|",
              "| ![accuracy vs size](accuracy_vs_size.png) | ![FAR vs size](far_vs_size.png) |",
              "| ![accuracy vs effort](accuracy_vs_effort.png) | ![DET curves](det.png) |",
              f"| ![confusion matrix of the deployed model](confusion_deployed.png) | ![streaming DET]({STREAM_PLOT}) |", ""]
    return "\n".join(lines)


STREAM_PLOT = "stream_det.png"  # drawn by the stream stage beside the memo's own plots


def read_stream(metrics_dir, out_dir):
    """metrics/stream.json, and a check that the stream stage's DET plot is in out_dir."""
    path = Path(metrics_dir) / "stream.json"
    if not path.is_file() or not (Path(out_dir) / STREAM_PLOT).is_file():
        raise FileNotFoundError(f"{path} or {Path(out_dir) / STREAM_PLOT} not found: the stream stage writes them "
                                "(dvc repro stream)")
    return json.loads(path.read_text())


def precision_sentence(s):
    """Which models run 16-bit activations (16x8) and what that means for the hand-off ('' if none)."""
    wide = [n for n, c in s["selection"]["candidates"].items() if c["precision"] == "16x8"]
    if not wide:
        return ""
    names = ", ".join(f"{s['models'][n]['label']}" for n in wide)
    deployed = " (the deployed model among them: the firmware build needs TFLM's int16 kernels)" * (s["deployed"] in wide)
    return (f" At 16x8 (int16 activations, int8 weights; why: the Quantization paragraph): {names}{deployed}; "
            "each .tflite carries that precision and its bytes are measured on it.")


def stream_paragraph(stream, s):
    """False accepts per hour and misses of the deployed model and the teacher on the test streams,
    at thresholds chosen on the validation streams, and what the streams were made of."""
    test, val, det = stream["streams"]["test"], stream["streams"]["val"], stream["detector"]
    dep, t = stream["models"][s["deployed"]], stream["models"]["teacher"]
    per_snr = "; ".join(f"{snr} dB SNR: {r['fa_per_hour']:.1f}/h, {pct(r['miss_rate'])} missed"
                        for snr, r in dep["test_per_snr"].items())
    def per_hour(x):
        return f"{x:.1f}/h"
    intervals = "; ".join(f"{who} {with_interval(m['test'], 'fa_per_hour', per_hour)}, "
                          f"{with_interval(m['test'], 'miss_rate', pct)} missed" for who, m in (("deployed", dep), ("teacher", t)))
    src = dep["test"]["false_accept_sources"]
    clustered = (f" The deployed model's {src['false_accepts']} test false accepts fell on {src['distinct_clips']} "
                 f"distinct word clip{'s' * (src['distinct_clips'] != 1)} (up to {src['most_from_one_clip']} on one) "
                 f"and {src['from_noise']} on background noise alone: words recur in the streams, so false accepts "
                 "cluster on the few confusable clips and the Poisson interval is optimistic; more distinct unknown "
                 "words (a bigger split) are what narrows it." if src["false_accepts"] else "")
    target, val_hi = stream["target_fa_per_hour"], dep["val"]["fa_per_hour_hi"]
    # a target below what the validation streams can bound is a wish, not a check: say so and how much would do
    unresolved = (f" {dep['val']['false_accepts']} false accept{'s' * (dep['val']['false_accepts'] != 1)} in "
                  f"{val['hours']:.2g} h bound the rate only below {val_hi:.1f}/h (95%, exact Poisson), so the validation "
                  f"streams cannot confirm the {target:g}/h target; confirming it with none there takes "
                  f"{metrics.poisson_rate(0, 1.0)[1] / target:.2g} h of them, of distinct clips."
                  if val_hi > target else "")
    return (f"**Continuous audio:** as a streaming detector on {test['hours']:.2g} h of test streams, the deployed model "
            f"false-accepts **{dep['test']['fa_per_hour']:.1f} times per hour** (all keywords together) and misses "
            f"**{pct(dep['test']['miss_rate'])}** of keywords (teacher: {t['test']['fa_per_hour']:.1f}/h, "
            f"{pct(t['test']['miss_rate'])}); {per_snr}. 95% intervals (exact Poisson on the false-accept count, Wilson "
            f"on the misses; keyword clips recur, so the latter is optimistic): {intervals}. Thresholds per keyword from {val['hours']:.2g} h of validation "
            f"streams, where they kept false accepts to {dep['val']['fa_per_hour']:.1f}/h (target "
            f"{target:g}/h).{unresolved} Streams: {test['keyword_words']} keywords and "
            f"{test['unknown_words']} unknown words from the test split's {test['distinct_keyword_clips']} keyword and "
            f"{test['distinct_unknown_clips']} unknown-word clips (each keyword clip used {test['uses_per_keyword_clip']:.1f} "
            f"times on average) over its own background noise; a 1-s window every {det['hop_ms']:g} ms, posteriors "
            f"averaged over {det['smooth_windows']}, {det['refractory_s']:g} s refractory." + clustered)


def inline(text, out_dir):
    """Markdown inline markup to HTML, with images embedded as data URIs (one file to mail around)."""
    def image(m):
        data = base64.b64encode((Path(out_dir) / m.group(2)).read_bytes()).decode()
        return f'<img alt="{m.group(1)}" src="data:image/png;base64,{data}" width="100%">'
    text = html.escape(text, quote=False)
    text = re.sub(r"!\[([^]]*)\]\(([^)]+)\)", image, text)
    text = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", text)
    text = re.sub(r"\*(.+?)\*", r"<i>\1</i>", text)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", text)


def memo_html(markdown, out_dir):
    """The few markdown forms memo_markdown writes: headings, paragraphs, a quote, lists, tables."""
    body, block = [], None
    for line in markdown.splitlines() + [""]:
        kind = "table" if line.startswith("|") else "ul" if line.startswith("- ") else None
        if kind != block:
            body += [f"</{block}>"] if block else []
            body += [f"<{kind}>"] if kind else []
            first_row, block = True, kind
        if kind == "table":
            cells = [c.strip() for c in line.strip("|").split("|")]
            if not all(c and set(c) <= set("-:") for c in cells):  # not the |---| separator row
                tag = "th" if first_row else "td"
                body.append("<tr>" + "".join(f"<{tag}>{inline(c, out_dir)}</{tag}>" for c in cells) + "</tr>")
                first_row = False
        elif kind == "ul":
            body.append(f"<li>{inline(line[2:], out_dir)}</li>")
        elif line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            body.append(f"<h{level}>{inline(line[level:].strip(), out_dir)}</h{level}>")
        elif line.startswith("> "):
            body.append(f"<blockquote>{inline(line[2:], out_dir)}</blockquote>")
        elif line:
            body.append(f"<p>{inline(line, out_dir)}</p>")
    style = ("body{font-family:sans-serif;max-width:60em;margin:auto;font-size:14px} table{border-collapse:collapse}"
             " td,th{border:1px solid #ccc;padding:2px 6px} blockquote{background:#fff3cd;padding:4px 10px;margin:0}")
    return (f"<!doctype html>\n<meta charset='utf-8'>\n<title>KWS decision memo</title>\n<style>{style}</style>\n"
            + "\n".join(body) + "\n")


# ---------------------------------------------------------------- quantization (metrics/quantize.json)

QUANT_PLOT = "quantization.png"


def read_quantize(metrics_dir):
    """The export stage's quantization report, or None where there is none (older metrics)."""
    path = Path(metrics_dir) / "quantize.json"
    return json.loads(path.read_text()) if path.is_file() else None


def sensitivity_source(s, q):
    """(fp32 model whose PTQ sensitivity stands for the deployed model, note): itself for a PTQ copy,
    the student it was trained from for the QAT student."""
    name = fp32_source(s["deployed"])
    note = "" if s["models"][s["deployed"]]["step"] == "PTQ" else \
        f" (the deployed model is QAT-trained: these are its fp32 student `{name}` under PTQ)"
    return (name, note) if name in q["sensitivity"] else (None, "")


def plot_quantization(s, q, path):
    """Per layer of the deployed model: validation top-1 with only that layer INT8 and with only it
    left float, between the fp32 and all-INT8 figures."""
    name, _ = sensitivity_source(s, q)
    table = q["sensitivity"][name]
    rows = table["layers"]
    fig = plt.figure(figsize=(7, 0.32 * len(rows) + 1.6), dpi=DPI)
    ax = fig.add_axes([0.3, 0.12, 0.66, 0.8])
    y = np.arange(len(rows))
    ax.scatter([100 * r["only_quantized_top1"] for r in rows], y, color=COLORS["int8"], label="only this layer INT8")
    ax.scatter([100 * r["only_float_top1"] for r in rows], y, color=COLORS["fp32"], marker="s",
               label="only this layer float")
    ax.axvline(100 * table["fp32"]["top1"], color=COLORS["fp32"], ls="--", lw=1, label="all fp32")
    ax.axvline(100 * table["int8"]["top1"], color=COLORS["int8"], ls="--", lw=1, label="all INT8")
    ax.set_yticks(y, [r["layer"] for r in rows], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("validation top-1 (%)")
    ax.set_title(f"Per-layer quantization sensitivity: {s['models'][name]['label']}", fontsize=10)
    ax.legend(fontsize=7, loc="best")
    ax.grid(alpha=0.3)
    save(fig, path)


def precision_decision(name, r):
    """One over-budget model: what INT8 and 16x8 scored on validation, what was chosen, and the bytes."""
    if r["16x8"] is None:
        return (f"`{name}` INT8 {pct(r['int8']['top1'])} (fp32 {pct(r['fp32']['top1'])}): kept INT8, **over budget**: "
                "this family has no verified 16x8 .tflite route (BC-ResNet's broadcast adds); QAT is the remaining way "
                "back, if it wins anything (PTQ vs QAT below)")
    if r["precision"] == "int8":
        return (f"`{name}` INT8 {pct(r['int8']['top1'])}, 16x8 {pct(r['16x8']['top1'])} (fp32 {pct(r['fp32']['top1'])}): "
                "kept INT8, as 16x8 won nothing back (what INT8 loses there is weight rounding)")
    return (f"`{name}` INT8 {pct(r['int8']['top1'])}, 16x8 {pct(r['16x8']['top1'])} (fp32 {pct(r['fp32']['top1'])}): "
            f"16x8, {'within' if r['within_budget'] else '**still over**'} budget, costing "
            f"{r['bytes']['arena_extra']} B of arena (planned) and {r['bytes']['flash_extra']} B of flash (int64 biases)")


def quantization_markdown(s, q):
    """The quantization paragraph: sensitivity of the deployed model's layers, the calibration
    choice and its sweep, the mixed-precision decision and its bytes, PTQ vs QAT."""
    cfg, ms = q["settings"], s["models"]
    lines = ["## Quantization", ""]
    name, note = sensitivity_source(s, q)
    if name is not None:
        t = q["sensitivity"][name]
        worst = {r["layer"]: r for r in t["layers"]}
        named = "; ".join(f"{layer} ({pct(worst[layer]['only_quantized_top1'])} when only it is INT8, "
                          f"{pct(worst[layer]['only_float_top1'])} when only it stays float)"
                          for layer in t["most_sensitive"])
        first = worst[t["most_sensitive"][0]]
        cost = round((t["fp32"]["top1"] - first["only_quantized_top1"]) * s["dataset"]["val_clips"])
        ranking = (f"most sensitive layers: {named}" if cost >= 2 else
                   f"no layer costs more than {max(cost, 0)} validation clip{'s' * (cost != 1)} when it alone is "
                   f"INT8 ({first['layer']}: {pct(first['only_quantized_top1'])}), so none stands out")
        lines.append(f"- **Sensitivity** of `{s['deployed']}`{note}: validation top-1 {pct(t['fp32']['top1'])} fp32, "
                     f"{pct(t['int8']['top1'])} all INT8; {ranking}.")
    sweep = q["calibration_sweep"]
    cells = ", ".join(f"{r['method']} x {r['calib_clips']}: {with_interval(r, 'val_top1', pct)}, "
                      f"FAR {far(r['val_far'])}" for r in sweep["rows"])
    spread = [r["val_top1"] for r in sweep["rows"]]
    overlap = max(r["val_top1_lo"] for r in sweep["rows"]) <= min(r["val_top1_hi"] for r in sweep["rows"])
    lines.append(f"- **Calibration:** {cfg['method']} ranges over {cfg['calib_clips']} training clips, "
                 f"{'per-channel' if cfg['per_channel'] else 'per-tensor'} int8 weights, cross-layer equalization "
                 f"{'on' if cfg['equalize'] else 'off'}. Sweep on `{sweep['model']}` (validation top-1, 95% interval): "
                 f"{cells}. The spread is {change(max(spread) - min(spread), 1, 'up to', 'up to')}; the intervals "
                 + ("all overlap: no choice is distinguishable on this validation split." if overlap
                    else "do not all overlap."))
    losses = ", ".join(f"{n} {change(r['int8']['top1'] - r['fp32']['top1'], 1)}" for n, r in q["models"].items())
    forced = cfg.get("activations", "auto")
    if forced != "auto":
        decision = (f"The budget does not decide: `quantize.activations: {forced}` puts every PTQ model at {forced}"
                    + "".join(f"; `{n}` 16x8 {pct(r['16x8']['top1'])}, +{r['bytes']['arena_extra']} B arena (planned)"
                              for n, r in q["models"].items() if r["precision"] == "16x8")
                    + "".join(f"; `{n}` **over budget**" for n, r in q["models"].items() if not r["within_budget"]))
    else:
        decision = "Over budget: " + ("; ".join(precision_decision(n, r) for n, r in q["models"].items()
                                                if r["fp32"]["top1"] - r["int8"]["top1"] > r["max_int8_loss"])
                                      or "no model lost more than that, so all stay int8")
    lines.append(f"- **16-bit activations (16x8):** budget {pct(cfg['max_int8_loss'])} of validation top-1 against "
                 f"fp32. INT8 validation top-1 change: {losses}. {decision}. A model goes 16x8 whole "
                 "(TFLite's 16x8 is a whole-graph scheme); its ONNX and .tflite both carry it and the firmware "
                 "parity gate checks it like an int8 one.")
    ptq, qat, kd = ms["student_ptq"], ms["student_qat"], ms["student_kd"]
    test = s["paired_tests"]["qat_vs_ptq"]
    headroom = round((kd["val_top1"] - ptq["val_top1"]) * s["dataset"]["val_clips"])
    lines.append(f"- **PTQ vs QAT** (distilled student): PTQ leaves {max(headroom, 0)} of {s['dataset']['val_clips']} "
                 f"validation clips to win back from the fp32 student ({pct(kd['val_top1'])}): about what QAT can "
                 f"recover; validation top-1 {pct(ptq['val_top1'])} (PTQ) vs {pct(qat['val_top1'])} (QAT); "
                 f"test top-1 {with_interval(ptq, 'top1', pct)} vs {with_interval(qat, 'top1', pct)}, "
                 f"FAR {with_interval(ptq, 'far_macro', far)} vs {with_interval(qat, 'far_macro', far)}; "
                 f"{paired(s, 'qat_vs_ptq')}. "
                 + (("QAT earns its place here." if qat["top1"] > ptq["top1"] else
                     "QAT is worse than PTQ beyond chance: tune it or drop the stage.") if distinguishable(test) else
                    "PTQ and QAT cannot be told apart here, so PTQ (with equalization and the 16x8 fallback) "
                    "suffices for this student. QAT is needed when PTQ stays over the budget after equalization and "
                    "16x8, or when the target cannot run 16-bit activations."))
    if name is not None:
        lines += ["", f"![per-layer quantization sensitivity]({QUANT_PLOT})"]
    return "\n".join(lines + [""])


# ---------------------------------------------------------------- the stage's job

def write_memo(metrics_dir="metrics", out_dir="memo"):
    """Write the five plots, MEMO.md and memo.html into out_dir; return the list of files written."""
    s = read_summary(metrics_dir)
    name = s["deployed"]
    det = {m: read_eval_csv(metrics_dir, m, "det.csv") for m in ("teacher", name)}
    conf = read_eval_csv(metrics_dir, name, "confusion.csv")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    op = f"{pct(s['max_frr'], 0)} FRR"
    plot_vs_size(s, "top1", "top-1 accuracy on test (%, bars: 95% interval)", "Accuracy vs flash",
                 out / PLOTS[0])
    plot_vs_size(s, "far_macro", f"FAR at {op} (% of non-keyword clips, bars: 95% interval)",
                 f"False accepts at {op} vs flash (lower is better)", out / PLOTS[1])
    plot_effort(s, out / PLOTS[2])
    plot_det(det, s, out / PLOTS[3])
    plot_confusion(conf, s["models"][name]["label"], out / PLOTS[4])
    text = memo_markdown(s, resolution(conf), read_stream(metrics_dir, out))
    plots = list(PLOTS)
    q = read_quantize(metrics_dir)
    if q is not None:
        if sensitivity_source(s, q)[0] is not None:
            plot_quantization(s, q, out / QUANT_PLOT)
            plots.append(QUANT_PLOT)
        text += "\n" + quantization_markdown(s, q)
    (out / "MEMO.md").write_text(text)
    (out / "memo.html").write_text(memo_html(text, out))
    return [out / p for p in plots] + [out / "MEMO.md", out / "memo.html"]

"""Accuracy and detection metrics from logits. Every model is scored by the same functions.

Detection score of keyword k: the log-odds of its softmax probability, log p_k - log(1 - p_k) =
z_k - logsumexp_{j != k} z_j, in float64. It ranks clips exactly as p_k does, but never saturates:
float32 softmax rounds a confident p_k to 1.0 (and float64 log-softmax rounds log p_k to 0.0 once
the margin passes ~37), so confident clips would tie and thresholds at 1% FRR would collapse.

FAR at a fixed FRR: per keyword k, one-vs-rest on the score of k. The threshold is the strictest
one whose miss rate on clips of k stays within the budget; FAR is the share of other clips
scoring at or above it. Curves come from scikit-learn's roc_curve/det_curve.

Every headline rate carries a 95% interval: Wilson for top-1 and per-class accuracy, a bootstrap
over test clips (thresholds held fixed) for the macro FAR.
"""
import numpy as np
from scipy.special import logsumexp
from scipy.stats import binomtest, chi2
from sklearn.metrics import confusion_matrix, det_curve, roc_curve

from kws.sources import CLASSES, KEYWORDS, SILENCE, UNKNOWN

FILLER = [CLASSES.index(SILENCE), CLASSES.index(UNKNOWN)]
DET_GRID = np.logspace(-4, 0, 60)  # FAR points the DET curves are sampled at (diffable, small)
CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 0


def keyword_scores(logits):
    """[N, C] float64 log-odds of each class's softmax probability (see the module docstring)."""
    z = np.asarray(logits, dtype=np.float64)
    others = np.where(np.eye(z.shape[1], dtype=bool), -np.inf, z[:, None, :])  # [N, k, j], j != k kept
    return z - logsumexp(others, axis=2)


def wilson(successes, n):
    """(low, high) Wilson score interval of a proportion; (nan, nan) when there is nothing to count."""
    if n == 0:
        return float("nan"), float("nan")
    ci = binomtest(int(successes), int(n)).proportion_ci(CONFIDENCE, method="wilson")
    return float(ci.low), float(ci.high)


def poisson_rate(count, exposure):
    """(low, high) exact (Garwood) interval of an event rate: `count` events in `exposure` units
    (false accepts in hours of stream)."""
    a = 1 - CONFIDENCE
    lo = chi2.ppf(a / 2, 2 * count) / 2 if count else 0.0
    return float(lo / exposure), float(chi2.ppf(1 - a / 2, 2 * count + 2) / 2 / exposure)


def accuracy_report(logits, labels):
    labels = np.asarray(labels)
    pred = np.asarray(logits).argmax(1)
    cm = confusion_matrix(labels, pred, labels=range(len(CLASSES)))
    per_class = {c: float(cm[i, i] / cm[i].sum()) if cm[i].sum() else float("nan") for i, c in enumerate(CLASSES)}
    per_class_ci = {c: wilson(cm[i, i], cm[i].sum()) for i, c in enumerate(CLASSES)}
    correct = int((pred == labels).sum())
    return {"top1": correct / len(labels), "top1_ci": wilson(correct, len(labels)), "clips": len(labels), "per_class": per_class,
            "per_class_ci": per_class_ci}, pred


def threshold_at_frr(pos_scores, neg_scores, max_frr):
    """Highest threshold whose FRR (share of positives below it) is <= max_frr."""
    y = np.r_[np.ones(len(pos_scores)), np.zeros(len(neg_scores))]
    fpr, tpr, thr = roc_curve(y, np.r_[pos_scores, neg_scores], drop_intermediate=False)
    ok = (1 - tpr) <= max_frr + 1e-12
    return float(thr[ok][0])  # thresholds descend, so the first admissible one is the strictest


def rates(pos_scores, neg_scores, thr):
    return float(np.mean(neg_scores >= thr)), float(np.mean(pos_scores < thr))


def far_macro_interval(scores, labels, thresholds, resamples=BOOTSTRAP_RESAMPLES, seed=BOOTSTRAP_SEED):
    """Percentile bootstrap interval of the macro FAR: clips resampled with replacement, thresholds fixed.
    Vectorized: each resample is a vector of clip counts, so every FAR is one matrix product."""
    cols = [CLASSES.index(k) for k in KEYWORDS]
    negative = labels[:, None] != np.array(cols)[None, :]  # [N, K]
    accepted = negative & (scores[:, cols] >= np.array([thresholds[k] for k in KEYWORDS])[None, :])
    n = len(labels)
    counts = np.random.default_rng(seed).multinomial(n, np.full(n, 1 / n), size=resamples).astype(np.float64)
    far_macro = (counts @ accepted / np.maximum(counts @ negative, 1)).mean(1)
    lo, hi = np.quantile(far_macro, [(1 - CONFIDENCE) / 2, (1 + CONFIDENCE) / 2])
    return float(lo), float(hi)


def far_at_frr(scores_fit, labels_fit, scores_eval, labels_eval, max_frr=0.01):
    """Thresholds set on (scores_fit, labels_fit), applied to (scores_eval, labels_eval).

    Returns per-keyword {threshold, far, frr, far_filler} and macro/worst summaries."""
    per_kw = {}
    for k in KEYWORDS:
        i = CLASSES.index(k)
        thr = threshold_at_frr(scores_fit[labels_fit == i, i], scores_fit[labels_fit != i, i], max_frr)
        pos, neg = scores_eval[labels_eval == i, i], scores_eval[labels_eval != i, i]
        far, frr = rates(pos, neg, thr)
        filler = scores_eval[np.isin(labels_eval, FILLER), i]
        per_kw[k] = {"threshold": thr, "far": far, "frr": frr, "far_filler": float(np.mean(filler >= thr))}
    fars = {k: v["far"] for k, v in per_kw.items()}
    worst = max(fars, key=fars.get)
    return {"far_macro": float(np.mean(list(fars.values()))), "far_worst": fars[worst], "worst_keyword": worst,
            "frr_macro": float(np.mean([v["frr"] for v in per_kw.values()])),
            "far_filler_macro": float(np.mean([v["far_filler"] for v in per_kw.values()])), "per_keyword": per_kw}


def det_rows(scores, labels):
    """DET curve (FRR at a fixed FAR grid) per keyword and pooled over keywords, as plot rows."""
    rows, pooled_y, pooled_s = [], [], []
    for k in KEYWORDS + ["pooled"]:
        if k == "pooled":
            y, s = np.concatenate(pooled_y), np.concatenate(pooled_s)
        else:
            i = CLASSES.index(k)
            y, s = (labels == i).astype(int), scores[:, i]
            pooled_y.append(y)
            pooled_s.append(s)
        fpr, fnr, _ = det_curve(y, s)
        order = np.argsort(fpr)
        frr = np.interp(DET_GRID, fpr[order], fnr[order])
        rows += [{"keyword": k, "far": float(a), "frr": float(b)} for a, b in zip(DET_GRID, frr)]
    return rows


def confusion_rows(labels, pred):
    """One row per clip, in split order, in the form DVC's confusion template reads. The order is the
    same for every model, which is what paired comparisons (mcnemar) rely on."""
    return [{"actual": CLASSES[a], "predicted": CLASSES[p]} for a, p in zip(labels, pred)]


def mcnemar(correct_a, correct_b):
    """Exact McNemar test of two models on the same clips: a two-sided binomial test on the clips
    exactly one of them gets right. Returns the two discordant counts and the p-value."""
    correct_a, correct_b = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
    if correct_a.shape != correct_b.shape:
        raise ValueError(f"paired test needs the same clips, got {correct_a.shape} and {correct_b.shape}")
    only_a, only_b = int((correct_a & ~correct_b).sum()), int((correct_b & ~correct_a).sum())
    return {"only_a_right": only_a, "only_b_right": only_b, "p_value": mcnemar_p(only_a, only_b)}


def mcnemar_p(only_a_right, only_b_right):
    """Two-sided exact McNemar p-value from the discordant counts alone (so the counts of
    disjoint clip sets, such as speaker folds, add up to one test)."""
    n = only_a_right + only_b_right
    return float(binomtest(only_a_right, n).pvalue) if n else 1.0


def evaluate(val_logits, val_labels, test_logits, test_labels, max_frr=0.01):
    """The metrics block of one model: top-1 and per class on test, FAR@FRR with validation thresholds
    (applied to test) and with test thresholds, and the validation split's own top-1 and FAR (what
    models are chosen by: nothing is chosen on test)."""
    val_labels, test_labels = np.asarray(val_labels), np.asarray(test_labels)
    sv, st = keyword_scores(val_logits), keyword_scores(test_logits)
    acc, pred = accuracy_report(test_logits, test_labels)
    val_acc, _ = accuracy_report(val_logits, val_labels)
    at_val_thresholds = far_at_frr(sv, val_labels, st, test_labels, max_frr)
    thresholds = {k: v["threshold"] for k, v in at_val_thresholds["per_keyword"].items()}
    at_val_thresholds["far_macro_ci"] = far_macro_interval(st, test_labels, thresholds)
    return {**acc,
            "far_at_frr_val_thresholds": at_val_thresholds,
            "far_at_frr_test_thresholds": far_at_frr(st, test_labels, st, test_labels, max_frr),
            "validation": {"top1": val_acc["top1"], "top1_ci": val_acc["top1_ci"], "clips": val_acc["clips"],
                           "far_at_frr": far_at_frr(sv, val_labels, sv, val_labels, max_frr)}}, pred


def top1_agreement(logits, references, tie_margin=None):
    """Share of clips on which `logits`' top-1 matches each reference's: name -> logits [N, C].

    With `tie_margin`, only the clips whose reference top-1 leads its runner-up by more than that
    count: a near-tie can flip on one rounding step with nothing wrong (1.0 when no clip is clear)."""
    top1 = np.asarray(logits).argmax(1)
    shares = {}
    for name, ref in references.items():
        ref = np.asarray(ref)
        runner_up, best = np.sort(ref, axis=1)[:, -2:].T
        clear = np.ones(len(ref), bool) if tie_margin is None else best - runner_up > tie_margin
        shares[name] = float(np.mean(top1[clear] == ref[clear].argmax(1))) if clear.any() else 1.0
    return shares

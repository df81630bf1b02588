"""Accuracy and detection metrics from logits. Every model is scored by the same functions.

FAR at a fixed FRR: per keyword k, one-vs-rest on the softmax score of k. The threshold is the
strictest one whose miss rate on clips of k stays within the budget; FAR is the share of other
clips scoring at or above it. Curves come from scikit-learn's roc_curve/det_curve.
"""
import numpy as np
import torch
from sklearn.metrics import confusion_matrix, det_curve, roc_curve

from kws.sources import CLASSES, KEYWORDS, SILENCE, UNKNOWN

FILLER = [CLASSES.index(SILENCE), CLASSES.index(UNKNOWN)]
DET_GRID = np.logspace(-4, 0, 60)  # FAR points the DET curves are sampled at (diffable, small)


def softmax(logits):
    return torch.softmax(torch.as_tensor(logits, dtype=torch.float32), dim=1).numpy()


def accuracy_report(logits, labels):
    labels = np.asarray(labels)
    pred = np.asarray(logits).argmax(1)
    cm = confusion_matrix(labels, pred, labels=range(len(CLASSES)))
    per_class = {c: float(cm[i, i] / cm[i].sum()) if cm[i].sum() else float("nan") for i, c in enumerate(CLASSES)}
    return {"top1": float((pred == labels).mean()), "per_class": per_class}, pred


def threshold_at_frr(pos_scores, neg_scores, max_frr):
    """Highest threshold whose FRR (share of positives below it) is <= max_frr."""
    y = np.r_[np.ones(len(pos_scores)), np.zeros(len(neg_scores))]
    fpr, tpr, thr = roc_curve(y, np.r_[pos_scores, neg_scores], drop_intermediate=False)
    ok = (1 - tpr) <= max_frr + 1e-12
    return float(thr[ok][0])  # thresholds descend, so the first admissible one is the strictest


def rates(pos_scores, neg_scores, thr):
    return float(np.mean(neg_scores >= thr)), float(np.mean(pos_scores < thr))


def far_at_frr(probs_fit, labels_fit, probs_eval, labels_eval, max_frr=0.01):
    """Thresholds set on (probs_fit, labels_fit), applied to (probs_eval, labels_eval).

    Returns per-keyword {threshold, far, frr, far_filler} and macro/worst summaries."""
    per_kw = {}
    for k in KEYWORDS:
        i = CLASSES.index(k)
        thr = threshold_at_frr(probs_fit[labels_fit == i, i], probs_fit[labels_fit != i, i], max_frr)
        pos, neg = probs_eval[labels_eval == i, i], probs_eval[labels_eval != i, i]
        far, frr = rates(pos, neg, thr)
        filler = probs_eval[np.isin(labels_eval, FILLER), i]
        per_kw[k] = {"threshold": thr, "far": far, "frr": frr, "far_filler": float(np.mean(filler >= thr))}
    fars = {k: v["far"] for k, v in per_kw.items()}
    worst = max(fars, key=fars.get)
    return {"far_macro": float(np.mean(list(fars.values()))), "far_worst": fars[worst], "worst_keyword": worst,
            "frr_macro": float(np.mean([v["frr"] for v in per_kw.values()])),
            "far_filler_macro": float(np.mean([v["far_filler"] for v in per_kw.values()])), "per_keyword": per_kw}


def det_rows(probs, labels):
    """DET curve (FRR at a fixed FAR grid) per keyword and pooled over keywords, as plot rows."""
    rows, pooled_y, pooled_s = [], [], []
    for k in KEYWORDS + ["pooled"]:
        if k == "pooled":
            y, s = np.concatenate(pooled_y), np.concatenate(pooled_s)
        else:
            i = CLASSES.index(k)
            y, s = (labels == i).astype(int), probs[:, i]
            pooled_y.append(y)
            pooled_s.append(s)
        fpr, fnr, _ = det_curve(y, s)
        order = np.argsort(fpr)
        frr = np.interp(DET_GRID, fpr[order], fnr[order])
        rows += [{"keyword": k, "far": float(a), "frr": float(b)} for a, b in zip(DET_GRID, frr)]
    return rows


def confusion_rows(labels, pred):
    """One row per clip in the form DVC's confusion template reads."""
    return [{"actual": CLASSES[a], "predicted": CLASSES[p]} for a, p in zip(labels, pred)]


def evaluate(val_logits, val_labels, test_logits, test_labels, max_frr=0.01):
    """The metrics block of one model: top-1, per class, FAR@FRR both ways."""
    val_labels, test_labels = np.asarray(val_labels), np.asarray(test_labels)
    pv, pt = softmax(val_logits), softmax(test_logits)
    acc, pred = accuracy_report(test_logits, test_labels)
    return {**acc,
            "far_at_frr_val_thresholds": far_at_frr(pv, val_labels, pt, test_labels, max_frr),
            "far_at_frr_test_thresholds": far_at_frr(pt, test_labels, pt, test_labels, max_frr)}, pred

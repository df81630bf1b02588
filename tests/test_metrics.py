import numpy as np
import pytest

from kws import metrics
from kws.sources import CLASSES, KEYWORDS


def test_threshold_keeps_frr_within_budget():
    pos = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05])
    neg = np.array([0.65, 0.35, 0.01])
    # 10% budget allows one miss: the strictest such threshold is the 9th-highest positive score.
    assert metrics.threshold_at_frr(pos, neg, 0.10) == pytest.approx(0.1)
    far, frr = metrics.rates(pos, neg, 0.1)
    assert frr == pytest.approx(0.1) and far == pytest.approx(2 / 3)
    # zero budget: every positive accepted, so the lowest positive score
    assert metrics.threshold_at_frr(pos, neg, 0.0) == pytest.approx(0.05)


def one_hot_probs(labels, noise=0.0, seed=0):
    rng = np.random.default_rng(seed)
    p = np.full((len(labels), len(CLASSES)), 0.01) + rng.uniform(0, noise, (len(labels), len(CLASSES)))
    p[np.arange(len(labels)), labels] = 0.9
    return p / p.sum(1, keepdims=True)


def test_perfect_scores_give_zero_far():
    labels = np.repeat(np.arange(len(CLASSES)), 20)
    p = one_hot_probs(labels, 0.02)
    m = metrics.far_at_frr(p, labels, p, labels, 0.01)
    assert m["far_macro"] == 0.0 and m["frr_macro"] == 0.0 and set(m["per_keyword"]) == set(KEYWORDS)


def test_far_counts_impostors_above_threshold():
    labels = np.repeat(np.arange(len(CLASSES)), 10)
    p = one_hot_probs(labels)
    yes = CLASSES.index("yes")
    # two silence clips look exactly like "yes"
    idx = np.flatnonzero(labels == CLASSES.index("_silence_"))[:2]
    p[idx] = p[np.flatnonzero(labels == yes)[0]]
    m = metrics.far_at_frr(p, labels, p, labels, 0.01)
    kw = m["per_keyword"]["yes"]
    assert kw["far"] == pytest.approx(2 / (len(labels) - 10))
    assert kw["far_filler"] == pytest.approx(2 / 20)
    assert m["worst_keyword"] == "yes"


def test_det_rows_cover_every_keyword_and_pooled():
    labels = np.repeat(np.arange(len(CLASSES)), 10)
    rows = metrics.det_rows(one_hot_probs(labels, 0.5), labels)
    assert {r["keyword"] for r in rows} == set(KEYWORDS) | {"pooled"}
    assert all(0 <= r["frr"] <= 1 for r in rows)

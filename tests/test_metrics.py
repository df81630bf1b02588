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


def saturating_logits(labels, margin=60.0):
    """Logits of a model that is certain of every clip: +margin for its label, -margin elsewhere."""
    z = np.full((len(labels), len(CLASSES)), -margin)
    z[np.arange(len(labels)), labels] = margin
    return z


def test_scores_rank_like_softmax_and_never_saturate():
    rng = np.random.default_rng(0)
    z = rng.normal(0, 3, (50, len(CLASSES)))
    s = metrics.keyword_scores(z)
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    assert np.allclose(s, np.log(p) - np.log1p(-p))  # the log-odds of the softmax probability
    # float32 softmax gives exactly 1.0 for both of these; the scores still tell them apart
    z = saturating_logits([0, 0], 60.0)
    z[1, 0] = 61.0
    s = metrics.keyword_scores(z)[:, 0]
    assert s[1] - s[0] == pytest.approx(1.0) and np.isfinite(s).all()


def test_saturating_logits_keep_thresholds_strict_and_far_right():
    labels = np.repeat(np.arange(len(CLASSES)), 100)
    z = saturating_logits(labels)
    yes, no = CLASSES.index("yes"), CLASSES.index("no")
    z[labels == yes, yes] += np.linspace(0, 10, 100)  # confident "yes" clips, each a little more so
    # three "no" clips say "yes" as confidently as the least confident "yes" clip
    impostors = np.flatnonzero(labels == no)[:3]
    z[impostors] = z[np.flatnonzero(labels == yes)[0]]
    s = metrics.keyword_scores(z)
    m = metrics.far_at_frr(s, labels, s, labels, 0.01)["per_keyword"]["yes"]
    # 1% of 100 "yes" clips may be missed: the threshold sits on the second least confident one, so the
    # impostors (tied with the least confident) are rejected along with that one miss
    assert m["frr"] == pytest.approx(0.01) and m["far"] == 0.0
    assert m["threshold"] == pytest.approx(s[np.flatnonzero(labels == yes)[1], yes])
    m = metrics.far_at_frr(s, labels, s, labels, 0.0)["per_keyword"]["yes"]  # no miss allowed: all three accepted
    assert m["frr"] == 0.0 and m["far"] == pytest.approx(3 / 1100)


def test_wilson_interval_matches_the_formula():
    lo, hi = metrics.wilson(90, 100)
    z, p, n = 1.959964, 0.9, 100
    centre, half = (p + z * z / (2 * n)) / (1 + z * z / n), z / (1 + z * z / n) * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    assert (lo, hi) == pytest.approx((centre - half, centre + half), abs=1e-5)
    assert metrics.wilson(100, 100)[1] == pytest.approx(1.0) and metrics.wilson(100, 100)[0] < 1
    report, _ = metrics.accuracy_report(np.eye(len(CLASSES))[np.repeat(np.arange(len(CLASSES)), 5)],
                                        np.repeat(np.arange(len(CLASSES)), 5))
    assert report["top1"] == 1.0 and report["top1_ci"][0] < 1.0 and set(report["per_class_ci"]) == set(CLASSES)


def test_far_bootstrap_interval_brackets_the_figure_and_is_seeded():
    labels = np.repeat(np.arange(len(CLASSES)), 40)
    s = metrics.keyword_scores(np.log(one_hot_probs(labels, 1.5, seed=1)))
    m = metrics.far_at_frr(s, labels, s, labels, 0.01)
    thr = {k: v["threshold"] for k, v in m["per_keyword"].items()}
    lo, hi = metrics.far_macro_interval(s, labels, thr)
    assert 0 < lo < m["far_macro"] < hi < 1
    assert (lo, hi) == metrics.far_macro_interval(s, labels, thr)  # seeded: same clips, same interval
    # four times the clips, the same rates: the interval narrows by about half
    lo4, hi4 = metrics.far_macro_interval(np.tile(s, (4, 1)), np.tile(labels, 4), thr)
    assert 0.35 < (hi4 - lo4) / (hi - lo) < 0.65


def test_evaluate_reports_validation_figures_and_intervals():
    labels = np.repeat(np.arange(len(CLASSES)), 20)
    val, test = np.log(one_hot_probs(labels, 0.5, seed=2)), np.log(one_hot_probs(labels, 2.0, seed=3))
    m, pred = metrics.evaluate(val, labels, test, labels, 0.05)
    assert m["validation"]["top1"] == 1.0 and m["top1"] == (pred == labels).mean()
    lo, hi = m["far_at_frr_val_thresholds"]["far_macro_ci"]
    assert lo <= m["far_at_frr_val_thresholds"]["far_macro"] <= hi
    assert m["top1_ci"][0] <= m["top1"] <= m["top1_ci"][1]


def test_mcnemar_counts_discordant_clips():
    a = np.array([1] * 90 + [0] * 10, bool)
    b = a.copy()
    b[:12] = False  # b misses 12 clips a gets right; a misses 10 that b also misses
    r = metrics.mcnemar(a, b)
    assert (r["only_a_right"], r["only_b_right"]) == (12, 0) and r["p_value"] == pytest.approx(2 * 0.5 ** 12)
    assert metrics.mcnemar(a, a)["p_value"] == 1.0
    with pytest.raises(ValueError, match="same clips"):
        metrics.mcnemar(a, a[:50])


def test_det_rows_cover_every_keyword_and_pooled():
    labels = np.repeat(np.arange(len(CLASSES)), 10)
    rows = metrics.det_rows(one_hot_probs(labels, 0.5), labels)
    assert {r["keyword"] for r in rows} == set(KEYWORDS) | {"pooled"}
    assert all(0 <= r["frr"] <= 1 for r in rows)


def test_det_rows_put_false_accepts_on_far_and_misses_on_frr():
    """30 of 100 "yes" clips score below every other clip, 70 above: whatever share of impostors a
    threshold lets in (0 < FAR < 1), it misses those 30, so FRR is 0.3 along the whole curve."""
    labels = np.repeat(np.arange(len(CLASSES)), 100)
    yes = CLASSES.index("yes")
    scores = one_hot_probs(labels, 0.5)
    rng = np.random.default_rng(0)
    scores[:, yes] = rng.uniform(0.0, 1.0, len(labels))  # impostors spread over (0, 1)
    scores[labels == yes, yes] = np.r_[np.full(30, -1.0), np.full(70, 2.0)]
    curve = [r for r in metrics.det_rows(scores, labels) if r["keyword"] == "yes"]
    assert [r["far"] for r in curve] == pytest.approx(list(metrics.DET_GRID))
    inner = [r["frr"] for r in curve if 2 / 1100 <= r["far"] <= 0.99]
    assert len(inner) >= 35 and inner == pytest.approx([0.3] * len(inner))


def test_top1_agreement_can_leave_out_near_ties():
    ref = np.array([[2.0, 1.95, 0.0], [3.0, 0.0, 0.0], [0.0, 1.0, 0.9], [0.0, 0.0, 5.0]])
    got = np.array([[1.9, 2.0, 0.0], [3.0, 0.0, 0.0], [0.0, 0.9, 1.0], [5.0, 0.0, 0.0]])  # 1 clear flip, 2 near-ties
    assert metrics.top1_agreement(got, {"r": ref})["r"] == 0.25
    assert metrics.top1_agreement(got, {"r": ref}, tie_margin=0.2)["r"] == 0.5  # the two clear clips
    assert metrics.top1_agreement(got[:1], {"r": ref[:1]}, tie_margin=0.2)["r"] == 1.0  # nothing clear to check

import json
import struct

import numpy as np
import pandas as pd
import pytest

from scipy.stats import binomtest

from kws import chain, memo, metrics, stream_eval, summary
from kws.sources import CLASSES, KEYWORDS

CLIPS_PER_CLASS = 41  # 492 test clips / 12 classes, as the synthetic default gives
DET_GRID = np.logspace(-4, 0, 60)

# name: params, MACs, INT8 bytes, SRAM (liveness, planned), top-1, FAR macro, worst keyword
MODELS = {
    "teacher": (65180, 1563264, 67652, (5656, 5656), 0.9898, 0.0, "off"),
    "pruned_wide": (37260, 930300, 39412, (4242, 4608), 0.9837, 0.0011, "go"),
    "pruned_wide_ptq": (37260, 930300, 39412, (4242, 4608), 0.9817, 0.0015, "go"),
    "pruned_narrow": (17012, 421640, 18230, (2828, 3072), 0.9634, 0.0046, "no"),
    "pruned_narrow_ptq": (17012, 421640, 18230, (2828, 3072), 0.9593, 0.0052, "no"),
    "student_nokd": (34868, 612480, 36925, (3712, 4096), 0.9512, 0.0078, "off"),
    "student_kd": (34868, 612480, 36925, (3712, 4096), 0.9695, 0.0035, "off"),
    "student_ptq": (34868, 612480, 36925, (3712, 4096), 0.9672, 0.0041, "off"),
    "student_qat": (34868, 612480, 36925, (3712, 4096), 0.9654, 0.0049, "off"),
}
# validation top-1: the deployed model is the best INT8 model on validation within budget, as kws.summary
# picks it, although pruned_wide_ptq is better on test
VAL_TOP1 = {"teacher": 0.985, "pruned_wide": 0.981, "pruned_wide_ptq": 0.962, "pruned_narrow": 0.958,
            "pruned_narrow_ptq": 0.955, "student_nokd": 0.951, "student_kd": 0.968, "student_ptq": 0.966,
            "student_qat": 0.963}
DEPLOYED = "student_ptq"
STAGE_EFFORT = {"teacher": (113040, 880.0), "prune/wide": (0, 1.5), "finetune/wide": (56520, 820.0),
                "prune/narrow": (0, 1.2), "finetune/narrow": (56520, 810.0), "teacher_replicas": (0, 0.1), "distill/kd": (113040, 1400.0),
                "distill/nokd": (113040, 1100.0), "export": (0, 6.0), "qat": (18840, 240.0)}  # clip-epochs, s


def model_entry(name):
    """One model of summary.json, with its label, step and stages from kws.chain as the summary stage does."""
    params, macs, int8, sram, top1, far, worst = MODELS[name]
    _, label, step, stages = chain.MODELS[name]
    return {"label": label, "step": step, "precision": "int8" if name in chain.INT8 else "fp32", "params": params,
            "macs": macs, "fp32_bytes": 4 * params, "int8_bytes": int8, "sram_liveness": sram[0],
            "sram_planned": sram[1], "tflite_bytes": int8 + 12000, "tflm_arena_bytes": sram[1] + 11000,
            "latency_fp32_ms": round(macs / 1.1e7, 3),
            "latency_int8_ms": round(macs / 0.8e7, 3),
            "top1": top1, "top1_lo": metrics.wilson(round(top1 * 492), 492)[0],
            "top1_hi": metrics.wilson(round(top1 * 492), 492)[1],
            "far_macro": far, "far_macro_lo": round(far * 0.5, 4), "far_macro_hi": round(far * 1.8 + 0.0005, 4),
            "frr_macro": 0.012, "far_worst": round(far * 2.6, 4),
            "worst_keyword": worst, "far_filler": round(far / 2, 4), "far_macro_test_thr": round(far * 0.7, 4),
            "val_top1": VAL_TOP1[name], "val_far_macro": round(far * 0.9, 4),
            "effort": {"clip_epochs": sum(STAGE_EFFORT[s][0] for s in stages),
                       "wall_s": sum(STAGE_EFFORT[s][1] for s in stages), "steps": stages}}


def paired_test(a, b, only_a_right, only_b_right):
    return {"a": a, "b": b, "only_a_right": only_a_right, "only_b_right": only_b_right,
            "p_value": binomtest(only_a_right, only_a_right + only_b_right).pvalue}


# deployed vs teacher: p 0.013; KD vs no-KD: p 0.078; QAT vs PTQ: p 1
PAIRED_TESTS = {"deployed_vs_teacher": paired_test(DEPLOYED, "teacher", 3, 14),
                "kd_vs_nokd": paired_test("student_kd", "student_nokd", 15, 6),
                "qat_vs_ptq": paired_test("student_qat", "student_ptq", 2, 3)}


def det_rows(scale, seed):
    """A staircase DET per keyword: FRR falls with FAR in steps of one clip, reaching 0."""
    rng = np.random.default_rng(seed)
    rows, pooled = [], np.zeros_like(DET_GRID)
    for k in KEYWORDS:
        frr = np.floor(CLIPS_PER_CLASS * scale * rng.uniform(0.5, 1.5) * DET_GRID ** -0.45) / CLIPS_PER_CLASS
        frr = np.clip(frr, 0, 1)
        pooled += frr / len(KEYWORDS)
        rows += [{"keyword": k, "far": a, "frr": b} for a, b in zip(DET_GRID, frr)]
    return rows + [{"keyword": "pooled", "far": a, "frr": b} for a, b in zip(DET_GRID, pooled)]


def confusion_rows(errors, seed):
    """CLIPS_PER_CLASS test clips per class, `errors` of them mislabelled to random classes."""
    rng = np.random.default_rng(seed)
    actual = np.repeat(CLASSES, CLIPS_PER_CLASS)
    predicted = actual.copy()
    wrong = rng.choice(len(actual), errors, replace=False)
    predicted[wrong] = rng.choice(CLASSES, errors)
    return pd.DataFrame({"actual": actual, "predicted": predicted})


def summary_selection(models):
    return summary.selection(models, 51200, 65536)


def write_metrics(root, **overrides):
    """A metrics/ tree as the pipeline writes it: summary.json plus DET/confusion of every model."""
    models = {name: model_entry(name) for name in MODELS}
    summary = {"dataset": {"source": "synthetic", "root": "data/cache/synthetic-400x3", "split_by": "speaker hash",
                           "test_clips": 12 * CLIPS_PER_CLASS, "val_clips": 540, "train_clips": 3768},
               "max_frr": 0.01, "budget_bytes": 51200, "arena_budget_bytes": 65536,
               "measured_on": "host TFLM, reference kernels", "deployed": DEPLOYED,
               "selection": summary_selection(models)[1], "paired_tests": PAIRED_TESTS, "models": models}
    summary.update(overrides)
    root.mkdir(parents=True, exist_ok=True)
    (root / "summary.json").write_text(json.dumps(summary, indent=2))
    write_stream(root, summary["deployed"])
    for i, name in enumerate(MODELS):
        d = root / "eval" / name
        d.mkdir(parents=True)
        pd.DataFrame(det_rows(0.002 * (1 + i), i)).to_csv(d / "det.csv", index=False)
        confusion_rows(round(len(CLASSES) * CLIPS_PER_CLASS * (1 - MODELS[name][4])), i).to_csv(
            d / "confusion.csv", index=False)
    return summary


def write_stream(root, deployed):
    """metrics/stream.json and the DET plot the stream stage draws beside the memo (memo/, next to metrics/)."""
    def row(fa, miss, false_accepts):
        return {"fa_per_hour": fa, "fa_per_hour_lo": fa / 2, "fa_per_hour_hi": 2 * fa, "miss_rate": miss,
                "miss_rate_lo": miss / 2, "miss_rate_hi": 2 * miss, "false_accepts": false_accepts}
    models = {name: {"path": f"models/{name}", "label": name, "thresholds": dict.fromkeys(KEYWORDS, 0.9),
                     "test": {**row(fa, miss, int(fa)),
                              "false_accept_sources": {"false_accepts": int(fa), "from_noise": 1,
                                                       "distinct_clips": 2, "most_from_one_clip": int(fa) - 2}},
                     "val": {**row(0.0, miss - 0.01, 0), "fa_per_hour_hi": metrics.poisson_rate(0, 0.5)[1]},
                     "test_per_snr": {"20": row(fa + 1, miss / 2, 0), "5": row(fa - 1, 2 * miss, 0)}}
              for name, fa, miss in [("teacher", 3.0, 0.052), (deployed, 5.0, 0.081)]}
    stream = {"deployed": deployed, "detector": {"hop_ms": 100.0, "smooth_windows": 3, "refractory_s": 1.0},
              "target_fa_per_hour": 1.0, "models": models,
              "streams": {split: {"hours": hours, "keyword_words": 600, "unknown_words": 610, "distinct_keyword_clips": 140,
                                  "distinct_unknown_clips": 14, "uses_per_keyword_clip": 4.3}
                          for split, hours in (("val", 0.5), ("test", 1.0))}}
    (root / "stream.json").write_text(json.dumps(stream))
    curves = {m: [{"fa_per_hour": f, "miss_rate": 0.2 / (1 + f)} for f in (0, 1, 10, 100)] for m in models}
    (root.parent / "memo").mkdir(exist_ok=True)
    stream_eval.plot_det(curves, {m: models[m]["test"] for m in models}, "streaming DET", root.parent / "memo" / memo.STREAM_PLOT)


def png_size(path):
    """(width, height) from the PNG header, which also proves the file is a PNG."""
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", head[16:24])


@pytest.fixture(scope="module")
def memo_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("memo")
    write_metrics(root / "metrics")
    memo.write_memo(root / "metrics", root / "memo")
    return root / "memo"


def test_every_plot_is_a_legible_png(memo_dir):
    for name in memo.PLOTS:
        w, h = png_size(memo_dir / name)
        assert 700 <= w <= 2000 and 500 <= h <= 1500, f"{name}: {w}x{h} px"
        assert (memo_dir / name).stat().st_size > 20_000


def test_memo_quotes_the_summary(memo_dir):
    text = (memo_dir / "MEMO.md").read_text()
    # deployed student_ptq: 36925 B estimated, 48925 B .tflite, top-1 0.9672, FAR 0.0041; teacher .tflite 79652 B, 0.9898
    assert ("Ship **Student, KD + PTQ INT8** (`student_ptq`): 47.8 KB INT8 .tflite, within the 50.0 KB budget (96%), "
            "tensor arena 14.7 KB (RAM budget 64.0 KB), both measured (host TFLM, reference kernels; estimated from "
            "the ONNX graph: 36.1 KB flash, 4.0 KB arena)") in text
    assert ("Top-1 96.7% (94.8-98.0), FAR@1%FRR 0.41% (0.21-0.79), versus the teacher's 99.0% and 0.00% at "
            "77.8 KB") in text
    assert "Chosen on validation, not test: the best validation top-1 (96.6%) of the 3 INT8 models within the flash and RAM budgets" in text  # pruned wide: 50.2 KB as .tflite
    assert "4.0 KB arena); 0.61 M MACs" in text
    assert "**Data:** synthetic corpus, split by speaker hash: 3768 train / 540 validation / 492 test clips" in text
    assert "Warning: synthetic speech" in text
    assert '1.07% for the worst keyword ("off")' in text
    # 492 clips, 41 of each keyword, so 451 clips that are not a given keyword
    assert "492 clips, 41 per keyword, so one miss is 2.4% FRR and one false accept 0.22% FAR" in text
    assert "not met" in text
    assert ("| Student, KD + PTQ INT8 **(deployed)** | PTQ | 47.8 KB (36.1 KB) | 14.7 KB (4.0 KB) | 0.61 M | 96.6% | "
            "96.7% (94.8-98.0) | 0.41% (0.21-0.79) |") in text
    for png in memo.PLOTS:
        assert f"]({png})" in text
    assert "nan" not in text.lower()
    assert len(text.splitlines()) <= 55  # one page


def test_deltas_are_worded_by_sign(memo_dir):
    text = (memo_dir / "MEMO.md").read_text()
    # QAT 96.54% < PTQ 96.72% (FAR 0.49% > 0.41%); KD 96.95% > no-KD 95.12% (FAR 0.35% < 0.78%)
    assert "**QAT vs PTQ** (same INT8 size): top-1 lost 0.2 pp, FAR rose 0.08 pp" in text
    assert "without KD: top-1 gained 1.8 pp, FAR fell 0.43 pp" in text
    assert "top-1 lost 2.6 pp, FAR rose 0.46 pp (teacher → narrow)" in text
    assert "QAT is worse than PTQ" not in text  # 2 vs 3 clips: no next step drawn from chance


def test_qat_is_called_worse_only_beyond_chance(tmp_path):
    write_metrics(tmp_path / "metrics", paired_tests={**PAIRED_TESTS,
                                                      "qat_vs_ptq": paired_test("student_qat", "student_ptq", 1, 15)})
    memo.write_memo(tmp_path / "metrics", tmp_path / "memo")
    assert "QAT is worse than PTQ beyond chance (top-1 lost 0.2 pp)" in (tmp_path / "memo" / "MEMO.md").read_text()


def test_paired_tests_say_when_models_are_not_distinguishable(memo_dir, tmp_path):
    text = (memo_dir / "MEMO.md").read_text()
    assert ("against the teacher: top-1 distinguishable (exact McNemar p = 0.013: 3 vs 14 clips only one got right), "
            "FAR intervals do not overlap") in text
    assert ("FAR fell 0.43 pp; top-1 **not distinguishable** (exact McNemar p = 0.078: 15 vs 6 clips only one got "
            "right), FAR intervals overlap") in text
    assert "Distillation did not beat the no-KD twin beyond chance" in text
    write_metrics(tmp_path / "metrics", paired_tests={**PAIRED_TESTS,
                                                      "kd_vs_nokd": paired_test("student_kd", "student_nokd", 16, 4)})
    memo.write_memo(tmp_path / "metrics", tmp_path / "memo")
    text = (tmp_path / "memo" / "MEMO.md").read_text()
    assert "FAR fell 0.43 pp; top-1 distinguishable (exact McNemar p = 0.012" in text
    assert "Distillation did not beat" not in text
    assert memo.change(0.00004, 1) == "no change" and memo.change(-0.012, 1, "rose", "fell") == "fell 1.2 pp"


def test_fixture_deploys_what_the_summary_would():
    assert summary_selection({name: model_entry(name) for name in MODELS})[0] == DEPLOYED


def test_chain_follows_the_stages_behind_each_model():
    models = {name: model_entry(name) for name in MODELS}
    assert sorted(memo.chain_edges(models)) == sorted([
        ("teacher", "pruned_wide"), ("pruned_wide", "pruned_narrow"), ("pruned_narrow", "student_kd"),
        ("pruned_wide", "pruned_wide_ptq"), ("pruned_narrow", "pruned_narrow_ptq"),
        ("student_kd", "student_ptq"), ("student_kd", "student_qat")])  # the no-KD student stands alone


def test_html_is_self_contained(memo_dir):
    page = (memo_dir / "memo.html").read_text()
    assert page.count("data:image/png;base64,") == len(memo.PLOTS) + 1  # and the stream stage's DET
    assert "<table>" in page and "<b>Student, KD + PTQ INT8</b>" in page and 'src="accuracy' not in page


def test_memo_quotes_false_accepts_per_hour_beside_the_per_clip_figures(memo_dir):
    text = (memo_dir / "MEMO.md").read_text()
    assert ("on 1 h of test streams, the deployed model false-accepts **5.0 times per hour** (all keywords together) "
            "and misses **8.1%** of keywords (teacher: 3.0/h, 5.2%); 20 dB SNR: 6.0/h, 4.0% missed; 5 dB SNR: 4.0/h, "
            "16.2% missed") in text
    assert "from 0.5 h of validation streams, where they kept false accepts to 0.0/h (target 1/h)" in text
    assert ("0 false accepts in 0.5 h bound the rate only below 7.4/h (95%, exact Poisson), so the validation streams "
            "cannot confirm the 1/h target; confirming it with none there takes 3.7 h of them") in text
    assert "deployed 5.0/h (2.5/h-10.0/h), 8.1% (4.0-16.2) missed; teacher 3.0/h (1.5/h-6.0/h), 5.2% (2.6-10.4) missed" in text
    assert "600 keywords and 610 unknown words from the test split's 140 keyword and 14 unknown-word clips" in text
    assert "a 1-s window every 100 ms, posteriors averaged over 3, 1 s refractory" in text
    assert ("The deployed model's 5 test false accepts fell on 2 distinct word clips (up to 3 on one) and 1 on "
            "background noise alone") in text and "the Poisson interval is optimistic" in text
    assert f"]({memo.STREAM_PLOT})" in text


def test_stream_paragraph_says_only_when_validation_streams_cannot_confirm_the_target(tmp_path):
    (tmp_path / "metrics").mkdir()
    write_stream(tmp_path / "metrics", DEPLOYED)
    stream = json.loads((tmp_path / "metrics" / "stream.json").read_text())
    assert "cannot confirm the 1/h target" in memo.stream_paragraph(stream, {"deployed": DEPLOYED})
    stream["streams"]["val"]["hours"] = 40.0  # long enough: 0 false accepts in 40 h bound the rate below 0.09/h
    stream["models"][DEPLOYED]["val"]["fa_per_hour_hi"] = metrics.poisson_rate(0, 40.0)[1]
    assert "cannot confirm" not in memo.stream_paragraph(stream, {"deployed": DEPLOYED})


def test_real_data_and_over_budget(tmp_path):
    s = write_metrics(tmp_path / "metrics")
    s["models"][DEPLOYED]["tflite_bytes"] = 53000
    write_metrics(tmp_path / "real", models=s["models"],
                  dataset={**s["dataset"], "source": "speech_commands", "split_by": "official lists"})
    memo.write_memo(tmp_path / "real", tmp_path / "memo")
    text = (tmp_path / "memo" / "MEMO.md").read_text()
    assert "Warning" not in text and "speech_commands corpus, split by official lists" in text
    assert "**Do not ship yet:**" in text and "**over** the 50.0 KB budget (104%)" in text
    assert "The deployed model is 1.8 KB over budget" in text


def test_missing_inputs_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="summary.json"):
        memo.write_memo(tmp_path / "metrics", tmp_path / "memo")
    s = write_metrics(tmp_path / "metrics")
    (tmp_path / "metrics" / "eval" / DEPLOYED / "det.csv").unlink()
    with pytest.raises(FileNotFoundError, match=f"{DEPLOYED}/det.csv"):
        memo.write_memo(tmp_path / "metrics", tmp_path / "memo")
    del s["models"]["teacher"]["worst_keyword"]
    (tmp_path / "metrics" / "summary.json").write_text(json.dumps(s))
    with pytest.raises(KeyError, match="teacher lacks \\['worst_keyword'\\]"):
        memo.write_memo(tmp_path / "metrics", tmp_path / "memo")
    s["models"]["teacher"]["worst_keyword"] = "off"
    s["paired_tests"] = {k: v for k, v in s["paired_tests"].items() if k != "kd_vs_nokd"}  # PAIRED_TESTS stays whole
    (tmp_path / "metrics" / "summary.json").write_text(json.dumps(s))
    with pytest.raises(KeyError, match="lacks paired tests \\['kd_vs_nokd'\\]"):
        memo.write_memo(tmp_path / "metrics", tmp_path / "memo")


def test_durations_read_in_seconds_or_minutes():
    assert memo.duration(30.4) == "30 s"
    assert memo.duration(119) == "119 s"
    assert memo.duration(600) == "10 min"


def test_a_validation_tie_is_said_in_the_memo(tmp_path):
    s = write_metrics(tmp_path / "metrics")
    s["selection"]["tied_with"] = ["student_qat"]
    (tmp_path / "metrics" / "summary.json").write_text(json.dumps(s))
    memo.write_memo(tmp_path / "metrics", tmp_path / "memo")
    assert "tied on validation top-1 and FAR with student_qat, so picked by chain order" in (
        tmp_path / "memo" / "MEMO.md").read_text()


def test_a_16x8_model_is_named_as_such(tmp_path):
    s = write_metrics(tmp_path / "metrics")
    for name in ("pruned_wide_ptq", s["deployed"]):
        s["models"][name].update(precision="16x8", label=chain.label(name, "16x8"))
    s["selection"] = summary_selection(s["models"])[1]
    (tmp_path / "metrics" / "summary.json").write_text(json.dumps(s))
    memo.write_memo(tmp_path / "metrics", tmp_path / "memo")
    text = (tmp_path / "memo" / "MEMO.md").read_text()
    assert "of the 3 INT8 models within the flash and RAM budgets" in text
    assert "At 16x8 (int16 activations, int8 weights" in text and "Pruned, wide + PTQ 16x8" in text
    assert "the deployed model among them: the firmware build needs TFLM's int16 kernels" in text

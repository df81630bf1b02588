"""Long streams from one split's clips, and their scoring: MLPerf Tiny's true-detection window,
merged false accepts, thresholds chosen for a false-accept target."""
import runpy

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import ROOT

from kws import stream_eval
from kws.sources import CLASSES, KEYWORDS, SILENCE, UNKNOWN

SR = 16000


def test_detection_is_true_from_word_start_to_one_second_after_its_end():
    starts = np.array([10.0, 20.0])  # 1-s clips at 10 s and 20 s: true windows [10, 12] and [20, 22]
    fires = np.array([10.5, 11.9, 12.5, 12.9, 14.0, 21.0])
    hits, false = stream_eval.keyword_outcome(fires, starts)
    assert hits == 2  # 10.5 and 11.9 are one clip
    assert false.tolist() == [12.5, 14.0]  # 12.5 and 12.9 merge (under 1 s apart); 14.0 is another
    assert stream_eval.keyword_outcome(np.array([9.9]), starts)[1].tolist() == [9.9]
    assert stream_eval.keyword_outcome(np.array([3.0, 5.0]), np.array([]))[1].tolist() == [3.0, 5.0]


def test_false_accepts_are_traced_to_the_clip_they_fell_on():
    """A keyword firing on a recurring unknown clip: each false accept names that clip, one between
    words names the noise, and the attribution counts what the sweep counts."""
    yes, unk = CLASSES.index("yes"), CLASSES.index(UNKNOWN)
    events = [(2.0, unk), (6.0, yes), (10.0, unk), (14.0, unk)]
    used = {"keyword": [4], "unknown": [7, 3, 7]}  # unknown clip 7 laid twice
    sources = stream_eval.event_sources(events, used)
    assert sources == ["unknown:7", "keyword:4", "unknown:3", "unknown:7"]
    times = np.arange(0, 18, 0.1)
    smoothed = np.zeros((len(times), len(CLASSES)))
    for t in (2.5, 6.5, 14.5, 17.5):  # on unknown 7, on the yes clip (a hit), on unknown 7 again, on noise
        smoothed[np.isclose(times, t), yes] = 0.9
    got = stream_eval.false_accept_sources(times, smoothed, events, sources, 10, dict.fromkeys(KEYWORDS, 0.5))
    assert got == ["unknown:7", "unknown:7", "noise"]
    counts = stream_eval.sweep(times, smoothed, events, 10, thresholds=np.array([0.5]))
    assert sum(int(c["false_accepts"][0]) for c in counts.values()) == len(got)
    assert stream_eval.source_summary(got) == {"false_accepts": 3, "from_noise": 1, "distinct_clips": 1,
                                               "most_from_one_clip": 2}
    assert stream_eval.source_summary([])["most_from_one_clip"] == 0


def manifest_and_wave():
    """Three clips of each class per split; every word clip is offset by 6000 x its split number (1, 2, 3)."""
    rows, waves = [], []
    rng = np.random.default_rng(0)
    for si, split in enumerate(("train", "val", "test")):
        for c in CLASSES:
            for i in range(3):
                rows.append({"split": split, "label": c, "label_index": CLASSES.index(c)})
                waves.append((rng.normal(0, 1000, SR) + 6000 * (si + 1) * (c != SILENCE)).astype(np.int16))
    return np.stack(waves), pd.DataFrame(rows)


def test_pools_hold_only_the_split_asked_for():
    wave, manifest = manifest_and_wave()
    pool = stream_eval.pools(wave, manifest, "test")
    assert len(pool["keyword"]) == 3 * len(KEYWORDS) and len(pool["unknown"]) == 3 and len(pool["noise"]) == 3
    assert np.allclose(pool["keyword"].mean(1), 18000 / 32768, atol=0.01)  # test clips only
    assert np.allclose(pool["unknown"].mean(1), 18000 / 32768, atol=0.01)
    assert sorted(set(pool["keyword_class"])) == [CLASSES.index(k) for k in KEYWORDS]
    manifest.loc[(manifest["split"] == "val") & (manifest["label"] == UNKNOWN), "split"] = "train"
    with pytest.raises(ValueError, match="val split has no unknown"):
        stream_eval.pools(wave, manifest, "val")


def test_stream_places_words_at_known_times_over_noise_at_the_snr():
    wave, manifest = manifest_and_wave()
    pool = stream_eval.pools(wave, manifest, "val")
    w, events, used = stream_eval.build(pool, 300.0, 10.0, np.random.default_rng(1), gap_s=(1.0, 3.0))
    assert len(w) == 300 * SR and w.dtype == np.float32
    starts = np.array([s for s, _ in events])
    gaps = np.diff(starts) - 1.0
    assert gaps.min() >= 1.0 - 1e-3 and gaps.max() <= 3.0 + 1e-3 and starts[-1] + 1 <= 300
    speech = np.zeros(len(w), bool)
    for s, c in events:
        speech[int(s * SR):int(s * SR) + SR] = True
    noise_rms = np.sqrt(np.mean(w[~speech].astype(np.float64) ** 2))
    assert noise_rms == pytest.approx(stream_eval.SPEECH_RMS / 10 ** 0.5, rel=0.02)
    # each keyword event is its clip (scaled to the speech level) on top of the noise
    s, c = next(e for e in events if e[1] != CLASSES.index(UNKNOWN))
    i = int(s * SR)
    assert w[i:i + SR].mean() > 10 * abs(w[~speech].mean())
    # without replacement until the pool is used up: 30 keyword clips, each once before any twice
    k = used["keyword"]
    assert len(set(k[:30])) == min(30, len(k)) and len(k) > 30
    again, _, _ = stream_eval.build(pool, 300.0, 10.0, np.random.default_rng(1))
    assert np.array_equal(again, w)  # seeded


def test_thresholds_meet_the_false_accept_target_on_validation():
    times = 1.0 + 0.1 * np.arange(3600 * 10)  # one hour of windows every 100 ms
    smoothed = np.zeros((len(times), len(CLASSES)))
    yes = CLASSES.index("yes")
    events = [(100.0 + 30 * j, yes) for j in range(10)]
    for j, (s, _) in enumerate(events):
        smoothed[int((s + 0.5 - 1.0) / 0.1), yes] = 0.5 + 0.04 * j  # the word: peaks 0.5 .. 0.86
    smoothed[int((50.0 - 1.0) / 0.1), yes] = 0.7  # one false accept at 50 s at thresholds up to 0.7
    counts = stream_eval.sweep(times, smoothed, events, refractory=10)
    chosen = stream_eval.choose_thresholds(counts, hours=1.0, target_fa_per_hour=1.0)  # 0.1/h per keyword: none
    assert chosen["yes"] == pytest.approx(0.75)
    result = stream_eval.at(counts, 1.0, chosen)
    y = result["per_keyword"]["yes"]
    assert (y["misses"], y["events"], y["false_accepts"]) == (7, 10, 0)  # peaks 0.78, 0.82, 0.86 remain
    loose = stream_eval.at(counts, 1.0, {**chosen, "yes": 0.5})
    assert loose["per_keyword"]["yes"]["false_accepts"] == 1 and loose["per_keyword"]["yes"]["misses"] == 0
    assert np.isnan(result["per_keyword"]["no"]["miss_rate"])  # no "no" words in this stream
    det = stream_eval.det_rows(counts, 1.0)
    assert [r["fa_per_hour"] for r in det] == sorted((r["fa_per_hour"] for r in det), reverse=True)


@pytest.mark.parametrize("bad, named", [({"minutes": {"val": 0, "test": 5}}, "stream.minutes"),
                                        ({"snr_db": []}, "stream.snr_db"), ({"gap_s": [3, 1]}, "stream.gap_s"),
                                        ({"keyword_share": 0}, "stream.keyword_share")])
def test_stage_refuses_bad_stream_params_by_name(bad, named):
    check = runpy.run_path(str(ROOT / "stages" / "stream.py"))["check"]
    good = yaml.safe_load((ROOT / "params.yaml").read_text())["stream"]
    check(good)
    with pytest.raises(ValueError, match=named):
        check({**good, **bad})


def test_stream_figures_carry_exact_intervals():
    from kws import metrics
    lo, hi = metrics.poisson_rate(0, 0.5)
    assert lo == 0 and hi == pytest.approx(-np.log(0.025) / 0.5, rel=1e-6)  # zero events: the classic 3.69 / exposure
    lo, hi = metrics.poisson_rate(10, 2.0)
    assert lo < 5.0 < hi and lo == pytest.approx(4.795 / 2, rel=1e-3) and hi == pytest.approx(18.39 / 2, rel=1e-3)

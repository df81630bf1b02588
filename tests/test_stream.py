"""The streaming detector: incremental features equal the clip-level front end, windows land at
the right times, smoothing, thresholds and the refractory period behave."""
import numpy as np
import pytest
import torch

from kws import features, stream
from kws.sources import CLASSES

CFG = features.make_config(mean=-6.0, std=4.0)


def noise(seconds, seed=0):
    return np.random.default_rng(seed).normal(0, 3000, int(seconds * 16000)).clip(-32768, 32767).astype(np.int16)


@pytest.mark.parametrize("kind", ["logmel", "mfcc"])
def test_a_clip_streamed_hop_by_hop_equals_the_clip_front_end(kind):
    cfg = features.make_config(kind=kind, mean=-6.0, std=4.0)
    clip = noise(1.0)
    want = features.compute(clip[None], cfg)[0]
    got = stream.stream_features(clip, cfg, block_samples=800)  # 50-ms hops, as a device receives them
    assert got.shape == want.shape == (features.n_channels(cfg), features.n_frames(cfg))
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("block", [1, 159, 160, 800, 7919, 16000 * 4])
def test_long_audio_frames_do_not_depend_on_how_it_arrives(block):
    wave = noise(3.7, seed=1)
    want = features.FrontEnd(CFG)(features.to_float(torch.as_tensor(wave))[None])[0]  # the whole recording as one "clip"
    torch.testing.assert_close(stream.stream_features(wave, CFG, block), want, rtol=1e-4, atol=1e-4)


def test_a_window_inside_a_stream_is_the_clip_front_end_of_its_second_but_the_edge_frames():
    wave, step = noise(3.0, seed=2), 160
    feats = stream.stream_features(wave, CFG, 800)
    f = 57  # a window starting at frame 57 covers samples [57 * 160, 57 * 160 + 16000)
    window = feats[:, f:f + features.n_frames(CFG)]
    clip = features.compute(wave[None, f * step:f * step + 16000], CFG)[0]
    torch.testing.assert_close(window[:, 2:-2], clip[:, 2:-2], rtol=1e-4, atol=1e-4)
    assert not torch.allclose(window[:, :2], clip[:, :2], atol=1e-3)  # the clip sees zero padding there


def test_posteriors_score_one_window_per_hop_and_ignore_block_size():
    wave = noise(5.3, seed=3)
    seen = []

    def score(x):  # logits from the mean of a few features: deterministic, depends on every window
        seen.append(x.shape)
        return np.stack([x[:, 0, :].mean(1) * k for k in range(len(CLASSES))], axis=1)

    t1, p1 = stream.posteriors({"a": score}, wave, CFG, hop_ms=50, block_s=0.05)
    t2, p2 = stream.posteriors({"a": score, "b": lambda x: -score(x)}, wave, CFG, hop_ms=50, block_s=2.0)
    p1, p2, p3 = p1["a"], p2["a"], p2["b"]
    assert all(s[1:] == (40, 101) for s in seen)
    np.testing.assert_allclose(t1, t2)
    np.testing.assert_allclose(p1, p2, rtol=1e-5)
    # windows end every 50 ms from 1 s to the end of the audio
    np.testing.assert_allclose(t1, 1.0 + 0.05 * np.arange(len(t1)))
    assert 5.3 - 0.05 < t1[-1] <= 5.3
    np.testing.assert_allclose(p1.sum(1), 1.0)
    assert not np.allclose(p2, p3)  # each scorer gets its own posteriors


def test_short_audio_is_padded_to_one_window():
    times, probs = stream.posteriors({"m": lambda x: np.zeros((len(x), len(CLASSES)))}, noise(0.4), CFG, hop_ms=100)
    assert times.tolist() == [1.0] and probs["m"].shape == (1, len(CLASSES))


def test_hop_must_be_whole_frames():
    with pytest.raises(ValueError, match="hop_ms=25"):
        stream.hop_frames(CFG, 25)


def test_smoothing_is_a_causal_moving_average():
    p = np.array([[1.0], [0.0], [0.0], [1.0], [1.0]])
    np.testing.assert_allclose(stream.smooth(p, 2)[:, 0], [1.0, 0.5, 0.0, 0.5, 1.0])
    np.testing.assert_allclose(stream.smooth(p, 1), p)


def test_refractory_period_holds_back_retriggers():
    trace = np.array([0, 0.9, 0.95, 0.9, 0.2, 0.9, 0.9, 0, 0, 0.9])
    assert stream.triggers(trace, 0.8, refractory=1).tolist() == [1, 2, 3, 5, 6, 9]
    assert stream.triggers(trace, 0.8, refractory=4).tolist() == [1, 5, 9]
    assert stream.triggers(trace, 0.99, refractory=4).tolist() == []


def test_detect_reports_each_keyword_with_its_own_threshold():
    times = np.arange(10) * 0.1 + 1.0
    post = np.zeros((10, len(CLASSES)))
    post[2:4, CLASSES.index("yes")] = 0.7
    post[6, CLASSES.index("no")] = 0.95
    found = stream.detect(times, post, {"yes": 0.6, "no": 0.96}, refractory_s=1.0, hop_ms=100)
    assert found == [{"time_s": pytest.approx(1.2), "keyword": "yes", "score": pytest.approx(0.7)}]
    found = stream.detect(times, post, {"yes": 0.6, "no": 0.9}, refractory_s=1.0, hop_ms=100)
    assert [d["keyword"] for d in found] == ["yes", "no"]
    with pytest.raises(ValueError, match="_silence_"):
        stream.detect(times, post, {"_silence_": 0.5}, 1.0, 100)

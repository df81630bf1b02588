import math

import numpy as np
import pytest
import torch

from kws import features


def textbook_filterbank(sr, n_fft, n_mels, f_min, f_max):
    """HTK mel filters written the long way, one weight at a time."""
    mel = lambda f: 2595 * math.log10(1 + f / 700)  # noqa: E731
    inv = lambda m: 700 * (10 ** (m / 2595) - 1)  # noqa: E731
    edges = [inv(mel(f_min) + i * (mel(f_max) - mel(f_min)) / (n_mels + 1)) for i in range(n_mels + 2)]
    fb = np.zeros((n_mels, n_fft // 2 + 1))
    for m in range(n_mels):
        lo, c, hi = edges[m], edges[m + 1], edges[m + 2]
        for k in range(n_fft // 2 + 1):
            f = k * sr / n_fft
            if lo <= f <= c:
                fb[m, k] = (f - lo) / (c - lo)
            elif c < f <= hi:
                fb[m, k] = (hi - f) / (hi - c)
    return fb


def test_mel_filterbank_matches_textbook():
    cfg = features.make_config()
    fb = features.mel_filterbank(cfg).numpy()
    ref = textbook_filterbank(16000, 512, 40, 20.0, 7600.0)
    np.testing.assert_allclose(fb, ref, atol=1e-5)


def test_logmel_matches_framewise_numpy():
    """STFT + filterbank + log against framing, Hann window and rfft done by hand in numpy."""
    cfg = features.make_config()
    rng = np.random.default_rng(0)
    wave = rng.normal(0, 0.1, 16000).astype(np.float32)
    got = features.FrontEnd(cfg)(torch.from_numpy(wave)[None])[0].numpy()
    win, hop, n_fft = 480, 160, 512
    padded = np.pad(wave, n_fft // 2)
    window = np.zeros(n_fft)
    window[(n_fft - win) // 2:(n_fft - win) // 2 + win] = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(win) / win)
    frames = np.stack([padded[t * hop:t * hop + n_fft] * window for t in range(1 + 16000 // hop)])
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    ref = np.log(power @ textbook_filterbank(16000, 512, 40, 20.0, 7600.0).T + 1e-6).T
    assert got.shape == (40, 101)
    np.testing.assert_allclose(got, ref, atol=2e-3)


def test_tone_lands_in_its_mel_band():
    cfg = features.make_config()
    t = torch.arange(16000) / 16000
    feats = features.FrontEnd(cfg)(torch.sin(2 * math.pi * 1000 * t)[None])[0]
    fb = features.mel_filterbank(cfg)
    expected = int(fb[:, round(1000 * 512 / 16000)].argmax())
    assert int(feats[:, 50].argmax()) == expected


def test_mfcc_is_orthonormal_dct_of_logmel():
    d = features.dct_matrix(40, 40)
    torch.testing.assert_close(d @ d.T, torch.eye(40), atol=1e-5, rtol=0)
    cfg = features.make_config(kind="mfcc", n_mfcc=13)
    wave = torch.randn(2, 16000) * 0.1
    mfcc = features.FrontEnd(cfg)(wave)
    logmel = features.FrontEnd(features.make_config())(wave)
    torch.testing.assert_close(mfcc, features.dct_matrix(13, 40) @ logmel, atol=1e-4, rtol=1e-4)


def test_normalization_stats_make_unit_features():
    cfg = features.make_config()
    wave = (np.random.default_rng(1).normal(0, 3000, (20, 16000))).astype(np.int16)
    cfg["mean"], cfg["std"] = features.norm_stats(features.mel_power(wave, cfg), cfg)
    x = features.compute(wave, cfg)
    assert abs(x.mean().item()) < 1e-3 and abs(x.std().item() - 1) < 1e-2


@pytest.mark.parametrize("bad", [{"kind": "spectrogram"}, {"win_ms": 50.0}, {"f_max": 9000.0}, {"n_bins": 3}])
def test_bad_feature_params_are_named(bad):
    with pytest.raises(ValueError, match="features"):
        features.make_config(**bad)

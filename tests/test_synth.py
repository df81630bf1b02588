"""kws.synth: a tiny corpus (3 words x 2 speakers) from the real espeak-ng synthesizer."""
import re

import numpy as np
import pytest
import soundfile as sf

from kws import synth

WORDS = ("yes", "marvin", "backward")
NOISE_SECONDS = 3.0

try:
    synth.pick_backend()
    NO_SYNTH = None
except RuntimeError as err:
    NO_SYNTH = str(err)
needs_synth = pytest.mark.skipif(NO_SYNTH is not None, reason=f"no espeak-ng: {NO_SYNTH}")


def _make(path, seed=0):
    return synth.synthesize_corpus(path, n_speakers=2, seed=seed, words=WORDS, progress=False,
                                   noise_seconds=NOISE_SECONDS)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth") / "corpus"
    return root, _make(root)


def _files(root):
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@needs_synth
def test_layout_and_wav_format(corpus):
    root, summary = corpus
    assert sorted(p.name for p in root.iterdir()) == sorted([*WORDS, "_background_noise_", "SOURCE.txt"])
    assert summary["n_clips"] == 6 and summary["clips_per_s"] > 0
    for word in WORDS:
        names = sorted(p.name for p in (root / word).iterdir())
        assert names == sorted(f"{s}_nohash_0.wav" for s in summary["speakers"])
        for name in names:
            info = sf.info(root / word / name)
            assert (info.samplerate, info.channels, info.frames, info.subtype) == (16000, 1, 16000, "PCM_16")
    assert all(re.fullmatch(r"[0-9a-f]{8}", s) for s in summary["speakers"])
    assert "SYNTHETIC" in (root / "SOURCE.txt").read_text()


@needs_synth
def test_clips_hold_speech_not_silence(corpus):
    root, _ = corpus
    for path in root.glob("*/*_nohash_*.wav"):
        audio, _ = sf.read(path, dtype="float32")
        frames = audio[: len(audio) // 160 * 160].reshape(-1, 160)  # 10 ms frames
        energy_db = 10 * np.log10(np.mean(frames ** 2, axis=1) + 1e-12)
        assert np.abs(audio).max() > 10 ** (-27 / 20), path  # the word's peak (>= -26 dBFS)
        # A word of speech (>= 0.15 s loud) standing well above the faint noise floor.
        assert np.sum(energy_db > np.percentile(energy_db, 5) + 20) >= 15, path


@needs_synth
def test_background_noise_files(corpus):
    root, summary = corpus
    noise = root / "_background_noise_"
    assert summary["noise_files"] == sorted(p.name for p in noise.iterdir())
    assert {"white_noise.wav", "pink_noise.wav", "brown_noise.wav", "mains_hum.wav", "babble.wav"} <= set(
        summary["noise_files"])
    for path in noise.iterdir():
        audio, rate = sf.read(path, dtype="int16")
        assert rate == 16000 and audio.ndim == 1 and len(audio) == NOISE_SECONDS * 16000
        assert np.abs(audio).max() > 1000, path


@needs_synth
def test_same_seed_is_byte_identical_across_worker_counts(corpus, tmp_path):
    root, _ = corpus
    again = tmp_path / "again"
    synth.synthesize_corpus(again, n_speakers=2, seed=0, words=WORDS, progress=False,
                            noise_seconds=NOISE_SECONDS, workers=1)
    assert _files(root) == _files(again)


@needs_synth
def test_speakers_differ(corpus):
    root, summary = corpus
    a, b = (sf.read(root / "marvin" / f"{s}_nohash_0.wav", dtype="float32")[0] for s in summary["speakers"])
    assert not np.array_equal(a, b)
    s1, s2 = synth.make_speakers(2, seed=0)
    assert s1 != s2 and s1.id != s2.id


def test_make_speakers_is_stable_and_distinct():
    many = synth.make_speakers(300, seed=5)
    assert synth.make_speakers(10, seed=5) == many[:10]
    assert len({s.id for s in many}) == 300
    assert synth.make_speakers(10, seed=6) != many[:10]


def test_missing_synthesizer_is_a_clear_error(monkeypatch, tmp_path):
    def no_library():
        raise OSError("libespeak-ng.so: cannot open shared object file")

    monkeypatch.setattr(synth, "_load_library", no_library)
    monkeypatch.setattr(synth.shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match="pip install espeakng-loader.*apt-get install espeak-ng"):
        synth.synthesize_corpus(tmp_path / "c", n_speakers=1, words=WORDS, progress=False)


def test_refuses_a_non_empty_out_dir(tmp_path):
    (tmp_path / "old.wav").write_bytes(b"")
    with pytest.raises(FileExistsError, match="not empty"):
        synth.synthesize_corpus(tmp_path, n_speakers=1, progress=False)

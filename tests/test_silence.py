"""Provided silence clips are found in the noise recordings and kept out of training noise."""
from pathlib import Path

import numpy as np
import pytest

from conftest import SHARED, run_fetch
from kws import audio, silence, sources


def test_locate_finds_scaled_excerpts_in_the_right_recording():
    rng = np.random.default_rng(0)
    n = 16000 * 30
    t = np.arange(n) / 16000
    recordings = [rng.normal(0, 3000, n),                                   # white
                  np.cumsum(rng.normal(0, 300, n)) % 20000 - 10000,         # brown-ish, wrapped
                  3000 * np.sin(2 * np.pi * 50 * t) + rng.normal(0, 30, n)]  # hum
    cut = [(0, 12345, 0.7), (1, 200000, 0.05), (2, 77777, 1.0), (0, n - 16000, 0.3), (1, 0, 1.0)]
    clips = [np.round(recordings[r][s:s + 16000] * g) for r, s, g in cut]
    clips.append(rng.normal(0, 3000, 16000))  # in no recording
    clips.append(np.zeros(16000))             # digital silence matches nothing
    found = silence.locate(np.stack(clips), recordings)
    assert found == [(r, s) for r, s, _ in cut] + [None, None]


def test_held_out_silence_is_never_heard_in_training(make_test_set, tmp_path, monkeypatch):
    root, noise_root, starts = make_test_set([f"{i:08x}" for i in range(40)])
    foreign = np.random.default_rng(7).normal(0, 3000, 16000).astype(np.int16)
    audio.write_clip(root / sources.SILENCE / "999.wav", foreign)
    # silence_percent 100: every provided clip is kept, so each one's split can be checked
    _, manifest, noise, report = run_fetch(tmp_path, monkeypatch, source="folder", root=str(root),
                                           noise_root=str(noise_root), silence_percent=100)
    provided = manifest[manifest["path"].str.contains(f"/{sources.SILENCE}/")]
    split_of = {Path(p).name: s for p, s in zip(provided["path"], provided["split"])}
    # the train noise chunks are the recording's first seconds: no held-out clip may touch them
    recording = audio.read_long(noise_root / sources.NOISE_DIR / "noise.wav")
    assert np.array_equal(noise.reshape(-1), recording[:noise.size])
    held_out = {name: starts[name] for name, s in split_of.items() if s != "train" and name in starts}
    assert {split_of[n] for n in held_out} == {"val", "test"}
    assert all(start >= noise.size for start in held_out.values())
    train = [starts[name] for name, s in split_of.items() if s == "train" and name in starts]
    assert max(train) + 16000 <= noise.size
    assert split_of["999.wav"] == sources.which_set("999", 10, 10, salt="resplit:")
    placement = report["provided_silence"]
    assert placement["held_out_clips_in_train_noise"] == 0 and sum(placement["not_located_split_by_speaker_hash"].values()) == 1
    assert sum(placement["located_in_noise"].values()) == len(starts) - placement["dropped_across_noise_ranges"]
    made_up = manifest[(manifest["label"] == sources.SILENCE) & (manifest["path"] == "")]
    assert set(made_up["source"]) == {sources.NOISE} and set(provided["source"]) == {sources.REAL}


def test_a_clip_across_two_noise_ranges_is_dropped(make_test_set, tmp_path):
    root, noise_root, _ = make_test_set(["aa11"], silence_clips=3, noise_seconds=20)
    recording = audio.read_long(noise_root / sources.NOISE_DIR / "noise.wav")
    audio.write_clip(root / sources.SILENCE / "across.wav", recording[16 * 16000 - 8000:][:16000])  # 16 s: train|val
    records, _ = sources.scan(root)
    placed, report = silence.place_provided(records, sources.noise_files(noise_root))
    assert report["dropped_across_noise_ranges"] == 1
    assert not any(r["path"].endswith("across.wav") for r in placed)
    assert len(placed) == len(records) - 1


@pytest.mark.skipif(not SHARED.exists(), reason="../shared/data not present")
def test_real_test_set_silence_comes_from_the_v001_noise_and_stays_out_of_training():
    records, _ = sources.scan(SHARED / "speech_commands_v0.02_test_dev")
    placed, report = silence.place_provided(records, sources.noise_files(SHARED / "speech_commands_v0.01_sample"))
    assert report["provided_clips"] == 275 and sum(report["not_located_split_by_speaker_hash"].values()) == 0
    assert report["held_out_clips_in_train_noise"] == 0
    assert min(report["located_in_noise"].values()) >= 15  # enough real silence in every split

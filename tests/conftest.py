from pathlib import Path

import numpy as np
import pytest

from kws import audio

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def tone(freq, seconds=1.0, sr=16000, amp=8000):
    t = np.arange(int(seconds * sr)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.int16)


@pytest.fixture
def make_folder(tmp_path):
    """A tiny Speech Commands folder in the full layout: `words` x `speakers` tone clips."""
    def make(words, speakers=("aa11", "bb22", "cc33"), noise=True, root=None):
        root = root or tmp_path / "corpus"
        for wi, w in enumerate(words):
            (root / w).mkdir(parents=True, exist_ok=True)
            for si, s in enumerate(speakers):
                audio.write_clip(root / w / f"{s}_nohash_0.wav", tone(200 + 40 * wi + 7 * si))
        if noise:
            (root / "_background_noise_").mkdir(exist_ok=True)
            rng = np.random.default_rng(0)
            audio.write_clip(root / "_background_noise_" / "white.wav", rng.normal(0, 2000, 16000 * 20).astype(np.int16))
        return root
    return make

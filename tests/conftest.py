import json
import runpy
from pathlib import Path

import numpy as np
import pytest
import yaml

from kws import audio, dataset
from kws.sources import KEYWORDS, NOISE_DIR, SILENCE

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


def tone(freq, seconds=1.0, sr=16000, amp=8000):
    t = np.arange(int(seconds * sr)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def run_fetch(tmp_path, monkeypatch, **data):
    """(audio, manifest, train noise, report) of the real fetch stage, run in a new folder under
    tmp_path with params.yaml's data block updated by `data`."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["data"].update(data)
    work = tmp_path / f"work{len(list(tmp_path.glob('work*')))}"
    work.mkdir()
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(work)
    runpy.run_path(str(ROOT / "stages" / "fetch.py"), run_name="__main__")
    wave, manifest, noise = dataset.load(work / "data" / "dataset")
    return np.asarray(wave), manifest, noise, json.loads((work / "data" / "dataset" / "report.json").read_text())


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


@pytest.fixture
def make_test_set(tmp_path, make_folder):
    """A tiny folder in the official test-set layout: keyword folders, `_unknown_/`, and numbered
    `_silence_/` clips cut at spread-out offsets and random volumes from one noise recording
    that lives in a second, full-layout folder (the data.noise_root of a real run).

    Returns (root, noise_root, {silence file name: start sample in the recording})."""
    def make(speakers, silence_clips=40, noise_seconds=40):
        root = make_folder(KEYWORDS, speakers, noise=False, root=tmp_path / "test_set")
        (root / "_unknown_").mkdir()
        for s in speakers:
            audio.write_clip(root / "_unknown_" / f"bed_{s}_nohash_0.wav.wav", tone(150))
        rng = np.random.default_rng(1)
        noise = rng.normal(0, 3000, 16000 * noise_seconds).astype(np.int16)
        noise_root = tmp_path / "noise_folder"
        (noise_root / NOISE_DIR).mkdir(parents=True)
        audio.write_clip(noise_root / NOISE_DIR / "noise.wav", noise)
        (root / SILENCE).mkdir()
        starts = {}
        for i, start in enumerate(np.linspace(0, len(noise) - 16000, silence_clips).astype(int)):
            clip = np.round(noise[start:start + 16000] * rng.uniform(0.05, 1.0)).astype(np.int16)
            audio.write_clip(root / SILENCE / f"{i}.wav", clip)
            starts[f"{i}.wav"] = int(start)
        return root, noise_root, starts
    return make


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """A small TC-ResNet8 as an INT8 .tflite (PTQ on random features), its torch reference and test features."""
    import torch  # here, not at the top: most tests need neither torch nor the converter
    from kws import firmware, models, quant
    torch.manual_seed(0)
    model = models.build("tc_resnet", models.tc_resnet_kwargs(8, 0.25, 40, 12)).eval()
    calib, test = torch.randn(64, 40, 101), torch.randn(32, 40, 101)
    reference = quant.ptq_reference(model, calib)
    path = firmware.to_tflite(reference, calib[:8], tmp_path_factory.mktemp("tflite") / "tiny.int8.tflite")
    return {"reference": reference, "bytes": path.read_bytes(), "path": path, "test": test.numpy(),
            "model": model, "calib": calib}

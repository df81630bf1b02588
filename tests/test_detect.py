"""`python -m kws.detect` on real speech: keywords found at their known times in a stream of real
test clips, nothing on minutes of held-out background noise, and clear errors for bad audio.

The one slow fixture here: it trains a TC-ResNet8 for 12 epochs on the train split of the real
`../shared` test-set folder (~45 s on two free cores; ~85% validation top-1), because no model
the suite trains elsewhere has heard real speech. Skipped where the folder is absent."""
import json
import shutil

import numpy as np
import soundfile as sf
import pytest
import torch
import yaml
from scipy.special import softmax

from conftest import ROOT, SHARED
from kws import audio, dataset, detect, evaluation, export, features, io, models, quant, silence, sources, train
from kws.sources import CLASSES, KEYWORDS

REAL = SHARED / "speech_commands_v0.02_test_dev"
NOISE = SHARED / "speech_commands_v0.01_sample"
SR = 16000
THRESHOLD = 0.8


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    """An INT8 ONNX model trained on real speech (feature config beside it), the test split's clips
    and labels, and the test time range of the background-noise recordings (never trained on)."""
    if not (REAL.is_dir() and NOISE.is_dir()):
        pytest.skip(f"real speech not found at {SHARED}")
    noise_paths = sources.noise_files(NOISE)
    records, _ = silence.place_provided(sources.scan(REAL)[0], noise_paths)  # as the fetch stage does
    labelled, need = sources.assign_labels(records, 10, 10, seed=0)
    wave, manifest, train_noise, _ = dataset.build(labelled, list(need.items()), noise_paths, progress=False)
    labels = torch.as_tensor(manifest["label_index"].to_numpy())
    split = {s: dataset.split_index(manifest, s) for s in sources.SPLITS}
    cfg = features.make_config()
    power = features.mel_power(wave[split["train"]], cfg)
    cfg["mean"], cfg["std"] = features.norm_stats(power, cfg)
    arch, kwargs = models.preset("tc_resnet8", 1.0, features.n_channels(cfg), len(CLASSES))
    model = models.build(arch, kwargs, 0)
    p = {"optimizer": "sgd", "momentum": 0.9, "lr": 0.1, "warmup_epochs": 2, "epochs": 12, "batch_size": 100,
         "weight_decay": 1e-3, "seed": 0, "device": "cpu", "average_share": 0,
         "augment": yaml.safe_load((ROOT / "params.yaml").read_text())["augment"]}
    train.fit(model, power, labels[split["train"]], features.mel_power(train_noise, cfg), cfg,
              features.compute(wave[split["val"]], cfg), labels[split["val"]], p)
    out = tmp_path_factory.mktemp("real_model")
    calib = features.compute(wave[split["train"][::10]], cfg)
    with torch.no_grad():
        fp32 = export.to_onnx(model, calib[:8], out / "real.fp32.onnx")
    int8 = quant.ptq(fp32, out / "real.int8.onnx", calib.numpy())
    io.write_json(out / "feature_config.json", cfg)
    test = split["test"]
    return {"model": str(int8), "cfg": cfg, "wave": np.asarray(wave[test]), "labels": labels[test].numpy(),
            "noise": dataset.noise_chunks(noise_paths, SR, SR)["test"]}


def keyword_stream(real, rng):
    """(wave, [(start s, keyword)]): one confidently recognized test clip per keyword (checked one
    clip at a time by the same model, so this tests the streaming, not the model) placed every
    3.5 s over held-out noise at a low level."""
    probs = softmax(evaluation.logits_fn(real["model"], real["cfg"])(features.compute(real["wave"], real["cfg"])), axis=1)
    placed, wave = [], []
    for k in KEYWORDS:
        ok = np.flatnonzero((real["labels"] == CLASSES.index(k)) & (probs[:, CLASSES.index(k)] >= 0.95))
        if len(ok):
            placed.append((1.5 + 3.5 * len(placed), k))
            wave.append(real["wave"][ok[0]])
    assert len(placed) >= 6, "the fixture model recognizes too few real test clips to build a stream"
    n = int((placed[-1][0] + 3.0) * SR)
    bed = np.concatenate([real["noise"][rng.integers(len(real["noise"]))] * rng.uniform(0.02, 0.1)
                          for _ in range(n // SR + 1)])[:n]
    for (start, _), clip in zip(placed, wave):
        i = int(start * SR)
        bed[i:i + SR] += clip
    return np.clip(bed, -32768, 32767).astype(np.int16), placed


def test_detect_finds_real_keywords_at_their_times(real, tmp_path, capsys):
    wave, placed = keyword_stream(real, np.random.default_rng(0))
    path = tmp_path / "stream.wav"
    audio.write_clip(path, wave)
    found = detect.main([real["model"], str(path), "--threshold", str(THRESHOLD)])
    printed = capsys.readouterr().out
    assert f"{len(found)} detections" in printed
    for start, k in placed:
        hits = [d for d in found if d["keyword"] == k and start <= d["time_s"] <= start + 2.0]  # word start to 1 s after its end
        assert hits, f"{k} at {start} s not detected; detections: {found}"
        # timed when it fires (the end of its 1-s window): within 0.5 s of the clip holding the word
        assert start - 0.5 <= hits[0]["time_s"] <= start + 1.0 + 0.5, (k, start, hits[0])
        assert f"{hits[0]['time_s']:.2f}\t{k}\t" in printed
    # nothing fires on the noise between words (a 12-epoch model may still call a word's onset another keyword)
    assert all(any(s <= d["time_s"] <= s + 2.0 for s, _ in placed) for d in found), found


def test_detect_reads_any_rate_and_channel_count_the_same(real, tmp_path):
    wave, placed = keyword_stream(real, np.random.default_rng(1))
    wave = wave[:int((placed[2][0] + 2.5) * SR)]  # three keywords are enough here
    audio.write_clip(tmp_path / "mono16k.wav", wave)
    stereo = audio.resample_int16(wave, SR, 44100)
    sf.write(tmp_path / "stereo44k.wav", np.stack([stereo, stereo], axis=1), 44100, subtype="PCM_16")
    a = detect.main([real["model"], str(tmp_path / "mono16k.wav"), "--threshold", str(THRESHOLD)])
    b = detect.main([real["model"], str(tmp_path / "stereo44k.wav"), "--threshold", str(THRESHOLD)])
    assert [d["keyword"] for d in a] == [d["keyword"] for d in b] and len(a) >= 3
    assert all(abs(x["time_s"] - y["time_s"]) <= 0.1 for x, y in zip(a, b))


def test_no_false_accepts_on_minutes_of_held_out_noise(real, tmp_path, capsys):
    rng = np.random.default_rng(2)
    chunks = [real["noise"][rng.integers(len(real["noise"]))] * rng.choice([0.0, 0.02, 0.1, 0.3, 1.0])
              for _ in range(180)]  # 3 minutes: silence and the test time range of every recording, at several levels
    audio.write_clip(tmp_path / "noise.wav", np.clip(np.concatenate(chunks), -32768, 32767).astype(np.int16))
    assert detect.main([real["model"], str(tmp_path / "noise.wav"), "--threshold", str(THRESHOLD)]) == []
    assert "180.0 s, 0 detections" in capsys.readouterr().out


def test_bad_audio_and_bad_thresholds_are_named(tiny_onnx, tmp_path):
    (tmp_path / "junk.wav").write_bytes(b"RIFF not really a wav")
    audio.write_clip(tmp_path / "empty.wav", np.zeros(0, np.int16))
    for name, why in [("junk.wav", "unreadable"), ("empty.wav", "no samples"), ("missing.wav", "no such file")]:
        with pytest.raises(SystemExit, match=f"{name}.*{why}"):
            detect.main([tiny_onnx, str(tmp_path / name)])
    (tmp_path / "thr.json").write_text('{"yes": 0.5, "maybe": 0.5}')
    with pytest.raises(SystemExit, match="maybe"):
        detect.main([tiny_onnx, str(tmp_path / "empty.wav"), "--thresholds", str(tmp_path / "thr.json")])
    with pytest.raises(SystemExit, match="expected a .pt checkpoint or an .onnx file"):
        detect.main([str(tmp_path / "thr.json"), str(tmp_path / "empty.wav")])
    (tmp_path / "alone").mkdir()
    shutil.copy(tiny_onnx, tmp_path / "alone" / "tiny.int8.onnx")
    with pytest.raises(SystemExit, match="feature_config.json not found"):
        detect.main([str(tmp_path / "alone" / "tiny.int8.onnx"), str(tmp_path / "empty.wav")])


def test_thresholds_from_the_stream_stage_metrics(tiny_onnx, tmp_path):
    other = {"path": "models/other.int8.onnx", "thresholds": {"yes": 0.1}}
    mine = {"path": tiny_onnx, "thresholds": {"no": 0.7}}
    (tmp_path / "stream.json").write_text(json.dumps({
        "detector": {"hop_ms": 100.0, "smooth_windows": 2, "refractory_s": 1.5},
        "models": {"teacher": other, "deployed": mine}}))
    point = detect.operating_point(tmp_path / "stream.json", tiny_onnx)
    assert point == {"hop_ms": 100.0, "smooth_windows": 2, "refractory_s": 1.5, "thresholds": {"no": 0.7}}
    with pytest.raises(ValueError, match="not for"):
        detect.operating_point(tmp_path / "stream.json", tmp_path / "x.onnx")


@pytest.fixture
def tiny_onnx(tmp_path):
    """An untrained small INT8 ONNX model with its feature config: enough to exercise the CLI."""
    torch.manual_seed(0)
    cfg = features.make_config()
    model = models.build("tc_resnet", models.tc_resnet_kwargs(8, 0.25, 40, 12)).eval()
    x = torch.randn(16, 40, 101)
    with torch.no_grad():
        fp32 = export.to_onnx(model, x[:8], tmp_path / "tiny.fp32.onnx")
    io.write_json(tmp_path / "feature_config.json", cfg)
    return str(quant.ptq(fp32, tmp_path / "tiny.int8.onnx", x.numpy()))


def test_detector_defaults_are_the_stream_stages():
    stage = yaml.safe_load((ROOT / "params.yaml").read_text())["stream"]
    assert detect.DEFAULTS == {k: stage[k] for k in detect.DEFAULTS}

"""The firmware hand-off: a port written from manifest.json alone reproduces the pipeline's
features, the golden vectors reproduce bit for bit in TFLM, the C array is the .tflite."""
import json

import numpy as np
import pandas as pd
import pytest

from conftest import tone
from kws import features, firmware, package
from kws.sources import CLASSES, KEYWORDS


def numpy_front_end(wave_int16, spec):
    """Features [N, channels, frames] of int16 clips from the manifest's front-end spec, in float64
    NumPy, written as a port would (no kws.features)."""
    assert spec["window"]["type"] == "hann" and spec["window"]["periodic"]  # the choices written out below
    assert spec["center"] and spec["pad_mode"] == "constant" and spec["mel"]["scale"] == "htk"
    n_fft, hop, win = spec["n_fft"], spec["hop_length"], spec["win_length"]
    window = np.zeros(n_fft)
    left = (n_fft - win) // 2
    window[left:left + win] = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(win) / win)
    x = np.pad(wave_int16.astype(np.float64) / 32768.0, [(0, 0), (n_fft // 2, n_fft // 2)])
    frames = x[:, hop * np.arange(spec["n_frames"])[:, None] + np.arange(n_fft)]  # [N, T, n_fft]
    power = np.abs(np.fft.rfft(frames * window, axis=-1)) ** 2
    feats = np.log(power @ np.array(spec["mel"]["matrix"]).T + spec["log"]["offset"])  # [N, T, n_mels]
    if spec["kind"] == "mfcc":
        feats = feats @ np.array(spec["dct"]["matrix"]).T
    norm = spec["normalization"]
    return ((feats - norm["mean"]) / norm["std"]).transpose(0, 2, 1)


def clips():
    """Speech-like test clips: a loud tone over noise, a quiet chirp, near-silence."""
    rng = np.random.default_rng(0)
    t = np.arange(16000) / 16000
    chirp = (300 * np.sin(2 * np.pi * (200 + 1500 * t) * t)).astype(np.int16)
    loud = np.clip(tone(440).astype(np.int32) + rng.normal(0, 800, 16000), -32768, 32767).astype(np.int16)
    return np.stack([loud, chirp, rng.normal(0, 3, 16000).astype(np.int16)])


@pytest.fixture(scope="module", params=["logmel", "mfcc"])
def handoff(request, tiny, tmp_path_factory):
    """A package of the tiny model, written the way the stage writes one; its folder and manifest."""
    cfg = features.make_config(kind=request.param, mean=-6.0, std=4.0)
    measured = firmware.measure(tiny["path"], tiny["test"][:2])
    detect = package.detection({k: {"threshold": 1.5 + i} for i, k in enumerate(KEYWORDS)}, 0.01)
    rows = [{"path": f"clip{i}.wav", "split": "test", "label": "yes", "source": "synthetic"} for i in range(3)]
    out = package.write(tmp_path_factory.mktemp(request.param), "student_ptq", tiny["path"], measured,
                        firmware.MEASURED_ON, detect, cfg, clips(), rows)
    return out, json.loads((out / "manifest.json").read_text()), cfg


def test_numpy_front_end_from_the_manifest_matches_the_pipeline(handoff):
    out, manifest, cfg = handoff
    golden = np.load(out / "golden.npz")
    got = numpy_front_end(golden["wave_int16"], manifest["front_end"])
    assert got.shape == golden["features"].shape == (3, *manifest["input"]["shape"][1:])
    np.testing.assert_allclose(got, golden["features"], rtol=0, atol=1e-4)
    np.testing.assert_allclose(got, features.compute(golden["wave_int16"], cfg).numpy(), rtol=0, atol=1e-4)


def test_golden_vectors_reproduce_in_tflm_with_the_manifest_arena(handoff):
    out, manifest, _ = handoff
    golden = np.load(out / "golden.npz")
    q = manifest["input"]
    info = np.iinfo(q["dtype"])
    want_input = np.clip(np.round(golden["features"] / q["scale"]) + q["zero_point"], info.min, info.max)
    np.testing.assert_array_equal(golden["input_tensor"], want_input.astype(q["dtype"]))
    model_bytes = (out / manifest["tflite"]).read_bytes()
    tflm = firmware.interpreter(model_bytes, manifest["tensor_arena_bytes"])
    np.testing.assert_array_equal(firmware.invoke(tflm, golden["input_tensor"]), golden["output_tensor"])
    index = json.loads((out / "golden.json").read_text())
    assert [c["output_tensor"] for c in index["clips"]] == golden["output_tensor"].tolist()


def test_c_array_round_trips_to_the_tflite_bytes(handoff):
    out, manifest, _ = handoff
    source = (out / "model_data.cc").read_text()
    model_bytes = (out / manifest["tflite"]).read_bytes()
    assert package.array_bytes(source) == model_bytes
    assert "alignas(16) const unsigned char g_model_data[]" in source
    assert f"g_model_data_len = {len(model_bytes)};" in source
    assert "extern const unsigned char g_model_data[];" in (out / "model_data.h").read_text()


def test_manifest_says_what_firmware_needs(handoff):
    out, manifest, _ = handoff
    assert manifest["classes"] == CLASSES and manifest["model"] == "student_ptq"
    assert manifest["measured_on"] == "host TFLM, reference kernels"
    assert manifest["flash_bytes"] == (out / manifest["tflite"]).stat().st_size
    assert list(manifest["detection"]["thresholds"]) == KEYWORDS
    assert manifest["output"]["shape"] == [1, len(CLASSES)]
    resolver = (out / "op_resolver.h").read_text()
    assert f"MicroMutableOpResolver<{len(manifest['ops'])}>" in resolver
    assert resolver.count("resolver.Add") == len(manifest["ops"]) and "AddConv2D()" in resolver


def test_unknown_op_is_refused_by_name():
    with pytest.raises(ValueError, match="FANCY_OP"):
        package.op_resolver_header({"CONV_2D": 2, "FANCY_OP": 1})


def test_golden_rows_cover_the_classes_in_output_order():
    labels = ["yes", "_silence_", "no", "yes", "_unknown_", "_silence_"]
    manifest = pd.DataFrame({"split": ["test"] * 6 + ["train"], "label": labels + ["up"]})
    assert package.golden_rows(manifest, 3) == [0, 1, 4]  # silence, unknown, yes: output order
    assert package.golden_rows(manifest, 4) == [0, 1, 2, 4]  # one per class before any class twice
    assert package.golden_rows(manifest, 10) == [0, 1, 2, 3, 4, 5]

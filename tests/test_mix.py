"""data.mix_synthetic_speakers: espeak-ng clips join a real source's train split only."""
import numpy as np
import pytest

from kws import data_source, sources
from kws.sources import KEYWORDS, SYNTHETIC, UNKNOWN
from conftest import run_fetch
from test_synth import needs_synth


@needs_synth
def test_synthetic_clips_join_train_only_and_leave_val_test_unchanged(make_folder, tmp_path, monkeypatch):
    root = make_folder(KEYWORDS + ["bed"], speakers=[f"{i:08x}" for i in range(40)])
    real = dict(source="folder", root=str(root), cache=str(tmp_path / "cache"),
                synthetic={"speakers": 3, "other_words": 1})
    wave0, manifest0, _, _ = run_fetch(tmp_path, monkeypatch, **real, mix_synthetic_speakers=0)
    wave, manifest, _, report = run_fetch(tmp_path, monkeypatch, **real, mix_synthetic_speakers=2)
    synthetic = manifest[manifest["source"] == SYNTHETIC]
    assert set(synthetic["split"]) == {"train"}
    assert set(synthetic["label"]) == set(KEYWORDS) | {UNKNOWN}  # 2 speakers x (10 keywords + 1 other word)
    assert len(synthetic) == 22 and report["sources"]["train"][SYNTHETIC] == 22
    assert (synthetic["label"] == np.where(synthetic["word"].isin(KEYWORDS), synthetic["word"], UNKNOWN)).all()
    for split in ("val", "test"):
        rows0, rows = manifest0["split"] == split, manifest["split"] == split
        assert manifest0[rows0].reset_index(drop=True).equals(manifest[rows].reset_index(drop=True))
        assert np.array_equal(wave0[rows0.to_numpy()], wave[rows.to_numpy()])
    # the synthetic pool brings its own share of silence (10% of its keyword clips), cut from train noise
    made_up_train = (manifest["split"] == "train") & (manifest["source"] == sources.NOISE)
    made_up_train0 = (manifest0["split"] == "train") & (manifest0["source"] == sources.NOISE)
    assert made_up_train.sum() == made_up_train0.sum() + 2


@pytest.mark.parametrize("value", [-1, 1.5, "3", True])
def test_bad_mix_parameter_is_named(value):
    with pytest.raises(ValueError, match="data.mix_synthetic_speakers"):
        data_source.synthetic_train_records({"mix_synthetic_speakers": value, "source": "folder"})


def test_mixing_into_the_synthetic_source_is_refused():
    with pytest.raises(ValueError, match="data.mix_synthetic_speakers.*data.synthetic.speakers"):
        data_source.synthetic_train_records({"mix_synthetic_speakers": 5, "source": "synthetic"})

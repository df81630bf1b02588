"""data.mix_synthetic_speakers: espeak-ng clips join a real source's train split only."""
import numpy as np
import pytest
import yaml

from kws import data_source, sources
from kws.sources import KEYWORDS, SYNTHETIC, UNKNOWN
from conftest import ROOT, run_fetch
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


AUGMENT = yaml.safe_load((ROOT / "params.yaml").read_text())["augment"]  # what the stages train with


def small_workspace(tmp_path, monkeypatch, synthetic):
    """params.yaml and data/features of a 12-class train split whose clips are espeak-ng where
    `synthetic` is True (random spectra: only the bookkeeping is under test)."""
    import torch
    from kws import features, io
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(yaml.safe_load((ROOT / "params.yaml").read_text())))
    io.FEATURES.mkdir(parents=True)
    cfg = {**features.make_config(), "mean": 0.0, "std": 1.0}
    io.write_json(io.FEATURES / "config.json", cfg)
    n, gen = len(synthetic), torch.Generator().manual_seed(0)
    labels = torch.arange(n) % 12
    power = torch.rand(n, cfg["n_mels"], features.n_frames(cfg), generator=gen)
    io.save_train(power, labels, power[:4], torch.tensor(synthetic))
    io.save_split("val", torch.randn(24, cfg["n_mels"], features.n_frames(cfg), generator=gen), torch.arange(24) % 12)
    return cfg


def test_pretraining_runs_on_synthetic_clips_then_on_recorded_ones(tmp_path, monkeypatch):
    from kws import models, train
    synthetic = [i % 3 != 0 for i in range(72)]  # 48 synthetic clips, 24 recorded
    cfg = small_workspace(tmp_path, monkeypatch, synthetic)
    model = models.build(*models.preset("tc_resnet8", 0.25, cfg["n_mels"], 12))
    p = {"optimizer": "sgd", "momentum": 0.9, "lr": 0.01, "warmup_epochs": 0, "epochs": 2, "batch_size": 16,
         "weight_decay": 0.0, "seed": 0, "device": "cpu", "average_share": 0}
    monkeypatch.setattr(train, "check_beats_chance", lambda *a: None)  # random spectra: nothing to learn
    result = train.train_on_dataset(model, p, AUGMENT, "t", pretrain_epochs=3)
    # pre-training: the 48 synthetic clips and the 6 silence clips (label 0, all recorded here)
    assert result["pretrain"]["epochs"] == 3 and result["pretrain"]["clip_epochs"] == 3 * (48 + 6)
    assert 0 <= result["pretrain"]["last_val_acc"] <= 1
    assert result["epochs"] == 2 and result["clip_epochs"] == 3 * 54 + 2 * 24
    assert len(result["history"]) == 2
    # one learning curve across both phases
    assert len((tmp_path / "dvclive/t/plots/metrics/val_acc.tsv").read_text().splitlines()) == 1 + 3 + 2


def test_pretraining_without_synthetic_clips_is_refused(tmp_path, monkeypatch):
    from kws import models, train
    cfg = small_workspace(tmp_path, monkeypatch, [False] * 24)
    model = models.build(*models.preset("tc_resnet8", 0.25, cfg["n_mels"], 12))
    with pytest.raises(ValueError, match="pretrain_epochs=2.*data.mix_synthetic_speakers"):
        train.train_on_dataset(model, {"epochs": 1}, AUGMENT, "teacher", pretrain_epochs=2)

"""data.extra_train_root: a second recorded folder joins a real source's train split only, and
never brings in a speaker whom the main source holds out."""
import pytest

from kws import data_source
from kws.sources import KEYWORDS, REAL
from conftest import run_fetch

MAIN = [f"{i:08x}" for i in range(40)]


def test_extra_clips_join_train_and_held_out_speakers_are_dropped(make_folder, tmp_path, monkeypatch):
    # three other words a speaker: every split's unknown clips are drawn down to 10%, so the draw
    # for validation and test must not depend on what train holds
    root = make_folder(KEYWORDS + ["bed", "bird", "cat"], speakers=MAIN)
    _, manifest0, _, _ = run_fetch(tmp_path, monkeypatch, source="folder", root=str(root))
    held_out = sorted(set(manifest0.loc[manifest0["split"] != "train", "speaker"]) & set(MAIN))
    trained = sorted(set(manifest0.loc[(manifest0["split"] == "train") & (manifest0["source"] == REAL), "speaker"]))
    new = ["f0f0f0f0", "f1f1f1f1"]
    extra = make_folder(KEYWORDS + ["dog"], speakers=held_out[:2] + trained[:1] + new, noise=False,
                        root=tmp_path / "extra")
    _, manifest, _, report = run_fetch(tmp_path, monkeypatch, source="folder", root=str(root),
                                       extra_train_root=str(extra))
    added = manifest[manifest["path"].str.startswith(str(extra))]
    assert set(added["split"]) == {"train"} and set(added["speaker"]) == set(trained[:1] + new)
    assert report["extra_train_root"] == {"root": str(extra), "layout": "full", "clips_found": 55,
                                          "dropped_held_out_speakers": 22, "clips_added": 33}
    for split in ("val", "test"):  # the held-out splits are the same clips with or without it
        assert manifest0[manifest0["split"] == split]["path"].tolist() == \
            manifest[manifest["split"] == split]["path"].tolist()


def test_extra_root_mistakes_are_named(make_folder, tmp_path):
    root = make_folder(KEYWORDS, speakers=MAIN[:3])
    p = {"source": "folder", "root": str(root), "extra_train_root": str(root)}
    with pytest.raises(ValueError, match="data.extra_train_root .* is data.root itself"):
        data_source.extra_train_records(p, [])
    with pytest.raises(FileNotFoundError, match="data.extra_train_root .*nope is not a folder"):
        data_source.extra_train_records({**p, "extra_train_root": str(tmp_path / "nope")}, [])
    with pytest.raises(ValueError, match="data.extra_train_root adds recorded speech to a real source"):
        data_source.extra_train_records({**p, "source": "synthetic"}, [])
    assert data_source.extra_train_records({**p, "extra_train_root": ""}, []) == ([], None)

import json
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conftest import SHARED, run_fetch, tone
from kws import audio, dataset, sources
from kws.sources import CLASSES, KEYWORDS


def test_speaker_id_from_gsc_names():
    assert sources.speaker_of("0c40e715_nohash_2.wav") == "0c40e715"
    assert sources.speaker_of("bed_0c40e715_nohash_0.wav.wav") == "0c40e715"


def test_hash_split_is_stable_and_speaker_disjoint(make_folder):
    root = make_folder(KEYWORDS + ["bed"], speakers=[f"{i:08x}" for i in range(60)], noise=False)
    records, report = sources.scan(root)
    assert report["split_by"] == "speaker hash"
    by_speaker = {}
    for r in records:
        by_speaker.setdefault(r["speaker"], set()).add(r["split"])
    assert all(len(s) == 1 for s in by_speaker.values())
    assert {r["split"] for r in records} == {"train", "val", "test"}
    assert records == sources.scan(root)[0]


def test_official_lists_decide_the_split(make_folder):
    root = make_folder(KEYWORDS)
    (root / "validation_list.txt").write_text("yes/aa11_nohash_0.wav\n")
    (root / "testing_list.txt").write_text("no/bb22_nohash_0.wav\nno/ffff_nohash_9.wav\n")
    records, report = sources.scan(root)
    split = {f"{r['word']}/{r['speaker']}": r["split"] for r in records}
    assert split["yes/aa11"] == "val" and split["no/bb22"] == "test" and split["up/cc33"] == "train"
    assert report["listed_but_missing"] == 1


def test_missing_keyword_is_a_clear_error(make_folder):
    root = make_folder([k for k in KEYWORDS if k != "stop"])
    (root / "stop").mkdir()
    with pytest.raises(ValueError, match=r"'stop'"):
        sources.scan(root)


def test_not_a_speech_commands_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="data.root"):
        sources.detect_layout(tmp_path / "nope")
    (tmp_path / "cats").mkdir()
    with pytest.raises(ValueError, match="keyword folders"):
        sources.detect_layout(tmp_path)


def test_labels_follow_the_tensorflow_proportions(make_folder):
    root = make_folder(KEYWORDS + ["bed", "cat", "dog"], speakers=[f"{i:08x}" for i in range(40)], noise=False)
    records, _ = sources.scan(root)
    labelled, need = sources.assign_labels(records, 10, 10, seed=0)
    for split in sources.SPLITS:
        known = sum(r["split"] == split and r["label"] in KEYWORDS for r in labelled)
        unknown = sum(r["split"] == split and r["label"] == "_unknown_" for r in labelled)
        assert unknown == -(-known // 10)
        assert need[split] == -(-known // 10)
    assert labelled == sources.assign_labels(records, 10, 10, seed=0)[0]


def test_bad_audio_is_refused_with_the_path(tmp_path):
    good = tmp_path / "good.wav"
    audio.write_clip(good, tone(440))
    no_data = tmp_path / "no_data.wav"
    no_data.write_bytes(good.read_bytes()[:30])
    truncated = tmp_path / "truncated.wav"  # header + 1,000 of the 16,000 samples it announces
    truncated.write_bytes(good.read_bytes()[:2044])
    zero_bytes = tmp_path / "zero_bytes.wav"
    zero_bytes.write_bytes(b"")
    stereo = tmp_path / "stereo.wav"
    sf.write(stereo, np.stack([tone(440), tone(440)], 1), 16000, subtype="PCM_16")
    header_only = tmp_path / "header_only.wav"
    sf.write(header_only, np.zeros(0, np.int16), 16000, subtype="PCM_16")
    for path, why in [(no_data, "unreadable"), (stereo, "not mono: 2 channels"), (header_only, "no samples"),
                      (truncated, "^truncated: header says 32000 data bytes, file holds 2000$"),
                      (zero_bytes, "^empty file$")]:
        with pytest.raises(audio.BadAudio) as e:
            audio.read_clip(path)
        assert re.search(why, e.value.reason) and str(e.value) == f"{path}: {e.value.reason}"
        # the kind counted in metrics/fetch.json: the same for every file that failed the same way
        assert audio.kind_of(e.value.reason) == why.strip("^$").split(":")[0]
    assert audio.read_clip(good)[1] == 16000


def test_wrong_rate_is_resampled_or_refused(tmp_path):
    path = tmp_path / "44k.wav"
    sf.write(path, tone(440, sr=44100), 44100, subtype="PCM_16")
    clip, rate = audio.read_clip(path)
    assert rate == 44100 and clip.shape == (16000,) and clip.dtype == np.int16
    spectrum = np.abs(np.fft.rfft(clip))
    assert abs(int(spectrum.argmax()) - 440) <= 1  # 1 Hz bins over one second
    with pytest.raises(audio.BadAudio, match="44100 Hz, expected 16000"):
        audio.read_clip(path, resample=False)


def test_short_clips_are_padded_at_the_end_and_long_ones_cropped_at_the_centre():
    short = np.arange(1, 101, dtype=np.int16)
    padded = audio.fit_length(short, 16000)
    assert padded.shape == (16000,) and np.array_equal(padded[:100], short) and not padded[100:].any()
    long = np.arange(16100, dtype=np.int32)
    assert np.array_equal(audio.fit_length(long, 16000), long[50:16050])


def test_the_official_test_set_is_re_split_by_a_salted_hash(make_folder):
    """The official test set holds exactly the speakers TensorFlow's unsalted hash puts in "test",
    so an unsalted split of it would have no train or validation clips."""
    in_test = [s for s in (f"{i:08x}" for i in range(2000)) if sources.which_set(s, 10, 10) == "test"][:60]
    root = make_folder(KEYWORDS, speakers=in_test, noise=False)
    (root / sources.UNKNOWN).mkdir()
    records, report = sources.scan(root)
    assert report["layout"] == "test_set" and report["split_by"] == "speaker hash (salted re-split)"
    share = {s: sum(r["split"] == s for r in records) / len(records) for s in sources.SPLITS}
    assert share["train"] > 0.6 and share["val"] > 0.03 and share["test"] > 0.03, share


def test_dataset_counts_and_skips_bad_files(make_folder):
    root = make_folder(KEYWORDS + ["bed"], speakers=[f"{i:08x}" for i in range(40)])
    (root / "yes" / "0000dead_nohash_0.wav").write_bytes(b"RIFF....garbage")
    records, _ = sources.scan(root)
    labelled, need = sources.assign_labels(records, 10, 10, 0)
    with pytest.raises(ValueError, match="max_bad_percent"):
        dataset.build(labelled, need.items(), sources.noise_files(root), max_bad_percent=0.1, progress=False)
    wave, manifest, noise, report = dataset.build(labelled, need.items(), sources.noise_files(root), max_bad_percent=5, progress=False)
    assert report["bad_files_skipped"] == 1 and "0000dead" in report["bad_files"][0]["path"]
    assert len(wave) == len(manifest) == report["clips"]
    assert (manifest["label"] == "_silence_").sum() == sum(need.values())
    assert len(noise) == 16  # 80% of the 20 one-second chunks of the noise recording
    dataset.check_classes(report)


def test_empty_split_class_is_refused(make_folder):
    root = make_folder(KEYWORDS, speakers=["aa11"], noise=False)
    records, _ = sources.scan(root)
    labelled, need = sources.assign_labels(records, 10, 10, 0)
    _, _, _, report = dataset.build(labelled, need.items(), [], progress=False)
    with pytest.raises(ValueError, match="missing classes"):
        dataset.check_classes(report)


@pytest.mark.skipif(not SHARED.exists(), reason="../shared/data not present")
@pytest.mark.parametrize("name,layout", [("speech_commands_v0.02_test_dev", "test_set"),
                                         ("speech_commands_v0.01_sample", "full")])
def test_real_gsc_folders_load(name, layout):
    records, report = sources.scan(SHARED / name)
    assert report["layout"] == layout
    labelled, _ = sources.assign_labels(records, 10, 10, 0)
    assert {r["label"] for r in labelled} >= set(KEYWORDS) | {"_unknown_"}
    if layout == "full":
        assert report["split_by"] == "official lists" and report["listed_but_missing"] > 0
        assert len(sources.noise_files(SHARED / name)) == 6
    else:
        assert {r["split"] for r in records} == {"train", "val", "test"}
        assert set(CLASSES) <= {r["label"] for r in labelled}


def test_speaker_folds_test_every_speaker_once():
    speakers = [f"{i:08x}" for i in range(2000)]
    folds = [[sources.which_set(s, 10, 20, fold=f) for s in speakers] for f in range(sources.n_folds(20))]
    assert len(folds) == 5
    assert [sum(split == "test" for split in by_fold) for by_fold in zip(*folds)] == [1] * len(speakers)
    for by_speaker in folds:  # each fold keeps the shares it was asked for
        assert abs(by_speaker.count("test") / len(speakers) - 0.20) < 0.03
        assert abs(by_speaker.count("val") / len(speakers) - 0.10) < 0.03
    # fold 0 is TensorFlow's which_set, unchanged
    assert folds[0] == [sources.which_set(s, 10, 20) for s in speakers]


def test_speaker_fold_out_of_range_or_with_official_lists_is_refused(make_folder):
    root = make_folder(KEYWORDS, speakers=[f"{i:08x}" for i in range(20)], noise=False)
    assert sources.scan(root, 10, 25, fold=3)[1]["speaker_fold"] == [3, 4]
    for fold in (4, -1, 1.0):
        with pytest.raises(ValueError, match=r"data.fold must be an integer in \[0, 3\]"):
            sources.scan(root, 10, 25, fold=fold)
    (root / "testing_list.txt").write_text(f"yes/{sorted((root / 'yes').iterdir())[0].name}\n")
    with pytest.raises(ValueError, match="data.fold=1.*official"):
        sources.scan(root, fold=1)


def test_fetch_reports_truncated_empty_resampled_and_missing_files(make_folder, tmp_path, monkeypatch, capsys):
    """Finding 4 and 6 of issue #11, through the real fetch stage: each odd file is named with what
    was wrong in report.json, counted in metrics/fetch.json and summed up on the console."""
    root = make_folder(KEYWORDS + ["bed"], speakers=[f"{i:08x}" for i in range(40)])
    records, _ = sources.scan(root)  # official lists that keep the hash split, plus one absent file
    listed = {s: [r["path"].removeprefix(f"{root}/") for r in records if r["split"] == s] for s in ("val", "test")}
    (root / "validation_list.txt").write_text("\n".join(listed["val"]) + "\n")
    (root / "testing_list.txt").write_text("\n".join(listed["test"] + ["left/ffffffff_nohash_0.wav"]) + "\n")
    truncated = root / "yes" / "00000000_nohash_0.wav"
    truncated.write_bytes(truncated.read_bytes()[:2044])
    empty = root / "no" / "0000beef_nohash_0.wav"
    empty.write_bytes(b"")
    slow = root / "up" / "0000cafe_nohash_0.wav"
    sf.write(slow, tone(300, sr=8000), 8000, subtype="PCM_16")
    _, manifest, _, report = run_fetch(tmp_path, monkeypatch, source="folder", root=str(root))
    assert sorted((b["path"], b["reason"]) for b in report["bad_files"]) == [
        (str(empty), "empty file"), (str(truncated), "truncated: header says 32000 data bytes, file holds 2000")]
    assert report["resampled_files"] == [{"path": str(slow), "reason": "resampled from 8000 Hz"}]
    assert str(slow) in set(manifest["path"]) and not {str(truncated), str(empty)} & set(manifest["path"])
    metrics = json.loads(Path("metrics/fetch.json").read_text())
    assert metrics["bad_files_skipped"] == 2 and metrics["bad_file_kinds"] == {"truncated": 1, "empty file": 1}
    assert metrics["resampled"] == 1 and metrics["listed_but_missing"] == 1
    line = next(l for l in capsys.readouterr().out.splitlines() if "bad files" in l)
    assert ("skipped 2 bad files" in line and "1 truncated" in line and "1 empty file" in line
            and "1 resampled from 8000 Hz" in line and "1 files named in the split lists are missing" in line), line

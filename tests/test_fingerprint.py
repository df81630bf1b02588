"""The data fingerprint the source stage writes: it changes when a clip is added, removed,
renamed or rewritten, and only then."""
import os

from kws import download, fingerprint, workspace


def test_folder_fingerprint_follows_names_sizes_and_mtimes(tmp_path):
    (tmp_path / "yes").mkdir()
    clip = tmp_path / "yes" / "a_nohash_0.wav"
    clip.write_bytes(b"1234")
    first = fingerprint.folder(tmp_path)
    assert first["files"] == 1 and first["bytes"] == 4 and fingerprint.folder(tmp_path) == first
    seen = {first["sha1"]}
    os.utime(clip, ns=(10**18, 10**18))  # rewritten in place: same name and size, new mtime
    seen.add(fingerprint.folder(tmp_path)["sha1"])
    (tmp_path / "yes" / "b_nohash_0.wav").write_bytes(b"")  # added
    seen.add(fingerprint.folder(tmp_path)["sha1"])
    clip.rename(tmp_path / "yes" / "c_nohash_0.wav")  # renamed
    seen.add(fingerprint.folder(tmp_path)["sha1"])
    (tmp_path / "yes" / "b_nohash_0.wav").unlink()  # removed
    seen.add(fingerprint.folder(tmp_path)["sha1"])
    assert len(seen) == 5
    assert fingerprint.folder(tmp_path / "nope") == {"path": str(tmp_path / "nope"), "missing": True}


def test_inputs_name_what_fetch_reads():
    block = {"source": "synthetic", "root": "/some/folder", "noise_root": "", "extra_train_root": ""}
    assert fingerprint.inputs(block) == {"folders": {}, "archive": None}  # root is unused there
    block = {"source": "folder", "root": "/a", "noise_root": "/b", "extra_train_root": "/c"}
    assert fingerprint.inputs(block) == {"folders": {"root": "/a", "noise_root": "/b", "extra_train_root": "/c"},
                                         "archive": None}
    downloaded = fingerprint.inputs({"source": "speech_commands", "root": "", "noise_root": "", "extra_train_root": ""})
    assert downloaded == {"folders": {}, "archive": {"url": download.GSC_URL, "sha256": download.GSC_SHA256,
                                                     "bytes": download.GSC_SIZE}}


def test_a_queued_experiment_reads_relative_folders_from_the_workspace(tmp_path):
    """`dvc exp run --queue` runs the stages in <workspace>/.dvc/tmp/exps/<copy>/: a relative
    data.root such as ../shared/... must name the folder it names from the workspace."""
    work = tmp_path / "project"
    copy = work / ".dvc" / "tmp" / "exps" / "tmpab12"
    (tmp_path / "shared" / "speech").mkdir(parents=True)
    copy.mkdir(parents=True)
    block = {"source": "folder", "root": "../shared/speech", "noise_root": "/abs/noise", "extra_train_root": "",
             "cache": "data/cache"}
    assert workspace.project_root(copy) == work and workspace.project_root(work) == work
    assert workspace.data_folders(block, work) == block  # the workspace itself: unchanged
    queued = workspace.data_folders(block, copy)
    assert queued == {**block, "root": str(work / "../shared/speech")}  # absolute and empty ones kept, cache too
    assert fingerprint.folder(queued["root"])["files"] == 0  # found, not "missing"
    assert fingerprint.folder(copy / block["root"]).get("missing")  # what the copy alone would read

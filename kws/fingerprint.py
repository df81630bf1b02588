"""A cheap fingerprint of a data folder, so DVC notices when clips are added, removed or replaced.

Why not make the folder itself a DVC dependency: its path is a parameter (`data.root`), empty for
the default synthetic source, and `dvc.yaml` cannot template an empty or optional path into
`deps`. So the source stage writes this fingerprint on every run and fetch depends on the file:
fetch reruns exactly when the fingerprint changes. This module imports no torch or scipy: the
stage runs on every `dvc repro`, and those imports alone take seconds.
"""
import hashlib
import os
from pathlib import Path

from kws import download


def inputs(p) -> dict:
    """What the fetch stage will read for the `data` block `p` (see kws/data_source.py), without
    fetching anything: the folders to fingerprint and, for the download, the pinned archive (its
    SHA-256 is its identity). The synthetic corpus is not listed: it follows from the parameters
    and the code alone."""
    folders, archive = {}, None
    if p["root"] and p["source"] in ("folder", "speech_commands"):
        folders["root"] = p["root"]
    elif p["source"] == "speech_commands":
        archive = {"url": download.GSC_URL, "sha256": download.GSC_SHA256, "bytes": download.GSC_SIZE}
    for name in ("noise_root", "extra_train_root"):
        if p[name]:
            folders[name] = p[name]
    return {"folders": folders, "archive": archive}


def folder(root) -> dict:
    """{path, files, bytes, sha1} of every file under `root` (recursively): the SHA-1 covers each
    file's relative path, size and modification time, not its contents. A stat per file keeps a
    recheck of Speech Commands (105k clips, 2.3 GB) around a second where reading the bytes
    would take a minute; a file touched but not changed costs one fetch rerun, never a stale one.
    A missing folder is reported as such (fetch says what was expected)."""
    root = Path(root)
    if not root.is_dir():
        return {"path": str(root), "missing": True}
    digest, files, size = hashlib.sha1(), 0, 0
    for path, stat in sorted(_walk(root)):
        digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        files, size = files + 1, size + stat.st_size
    return {"path": str(root), "files": files, "bytes": size, "sha1": digest.hexdigest()}


def _walk(root, prefix=""):
    """(relative path, stat) of every file under root; os.scandir, the fastest stdlib walk."""
    with os.scandir(root) as entries:
        for e in entries:
            rel = f"{prefix}{e.name}"
            if e.is_dir():
                yield from _walk(e.path, rel + "/")
            elif e.is_file():
                yield rel, e.stat()

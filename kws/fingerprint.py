"""A cheap fingerprint of a data folder, so DVC notices when clips are added, removed or replaced.

Why not make the folder itself a DVC dependency: its path is a parameter (`data.root`), empty for
the default synthetic source, and `dvc.yaml` cannot template an empty or optional path into
`deps`. So the source stage writes this fingerprint on every run and fetch depends on the file:
fetch reruns exactly when the fingerprint changes.
"""
import hashlib
import os
from pathlib import Path


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

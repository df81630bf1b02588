"""Resumable, checksummed download and safe extraction of the Google Speech Commands v0.02 archive.

download() streams into `<dest>.part`, resumes a partial file with an HTTP Range request (and
starts over when the server ignores Range), retries dropped connections, verifies size and
SHA-256, and only then renames the file into place, so `<dest>` existing means "verified".
extract() unpacks into `<out_dir>.partial` and renames it when done; the `.extracted` marker
inside tells a finished folder from a half-extracted one.
"""
import hashlib
import http.client
import os
import re
import shutil
import tarfile
import time
import urllib.error
import urllib.request
from pathlib import Path, PurePosixPath

GSC_URL = "http://download.tensorflow.org/data/speech_commands_v0.02.tar.gz"
# Pinned from TensorFlow Datasets, tensorflow_datasets/url_checksums/speech_commands.txt
# ("<url> <size> <sha256>"); torchaudio's SPEECHCOMMANDS _CHECKSUMS pins the same SHA-256.
GSC_SHA256 = "af14739ee7dc311471de98f5f9d2c9191b18aedfe957f4a6ff791c709868ff58"
GSC_SIZE = 2428923189
GSC_DIRNAME = "speech_commands_v0.02"

CHUNK_BYTES = 1 << 20
PROGRESS_EVERY_S = 2.0
RETRY_WAIT_S = 2.0  # times the attempt number
EXTRACTED_MARKER = ".extracted"


class ChecksumError(RuntimeError):
    """A downloaded file's size or SHA-256 is not the pinned one."""


class _Interrupted(OSError):
    """The server closed the connection before sending the whole body."""


def sha256_file(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK_BYTES), b""):
            digest.update(block)
    return digest.hexdigest()


def download(url, dest_path, sha256=None, size=None, progress=True, retries=3, timeout=60):
    """Download `url` to `dest_path` (resuming, verifying); returns the Path. See module docstring."""
    dest = Path(dest_path)
    part = dest.with_name(dest.name + ".part")
    if dest.exists():
        if _matches(dest, sha256, size):
            if progress:
                checked = "" if sha256 is None and size is None else " (size/SHA-256 match)"
                print(f"download: {dest} already there{checked}", flush=True)
            return dest
        aside = _set_aside(dest)
        print(f"download: {dest} does not match the pinned size/SHA-256; moved it to {aside} "
              "and downloading again", flush=True)
    dest.parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(retries + 1):
        try:
            _fetch(url, part, size, progress, timeout)
            break
        except (OSError, http.client.HTTPException) as err:  # dropped connection, timeout, DNS
            if isinstance(err, urllib.error.HTTPError) and err.code < 500:  # retrying cannot help
                raise RuntimeError(f"download: {url} answered HTTP {err.code} {err.reason}") from err
            if attempt == retries:
                raise RuntimeError(f"download: {url} failed after {retries + 1} attempts: {err}; "
                                   f"run again to resume from {part}") from err
            print(f"download: {err}; resuming in {RETRY_WAIT_S * (attempt + 1):.0f} s", flush=True)
            time.sleep(RETRY_WAIT_S * (attempt + 1))
    _verify(part, dest, sha256, size)
    os.replace(part, dest)  # atomic: dest only ever appears complete and verified
    return dest


def _matches(path, sha256, size):
    return ((size is None or path.stat().st_size == size)
            and (sha256 is None or sha256_file(path) == sha256.lower()))


def _set_aside(path):
    """Rename a bad file to `<name>.bad[.N]` so it is kept for inspection, never lost silently."""
    aside, n = path.with_name(path.name + ".bad"), 1
    while aside.exists():
        aside, n = path.with_name(f"{path.name}.bad.{n}"), n + 1
    os.replace(path, aside)
    return aside


def _verify(part, dest, sha256, size):
    actual_size = part.stat().st_size
    if size is not None and actual_size != size:
        aside = _set_aside(part)
        raise ChecksumError(f"download: {dest}: expected {size} bytes, got {actual_size}; "
                            f"the file was kept as {aside}")
    if sha256 is not None:
        actual = sha256_file(part)
        if actual != sha256.lower():
            aside = _set_aside(part)
            raise ChecksumError(f"download: {dest}: SHA-256 mismatch: expected {sha256.lower()}, "
                                f"got {actual}; the file was kept as {aside}")


def _fetch(url, part, size, progress, timeout):
    """One HTTP request that appends to (or restarts) `part` until the body is complete."""
    offset = part.stat().st_size if part.exists() else 0
    if size is not None and offset > size:  # cannot be a prefix of the right file
        print(f"download: {part} is larger than {size} bytes; starting over", flush=True)
        offset = 0
    if size is not None and offset == size:
        return
    request = urllib.request.Request(url, headers={"Range": f"bytes={offset}-"} if offset else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code != 416 or not offset:
            raise
        if _range_total(err.headers) == offset:
            return  # the .part already holds the whole file
        aside = _set_aside(part)
        print(f"download: server cannot resume {part.name} (HTTP 416); kept it as {aside}, "
              "starting over", flush=True)
        return _fetch(url, part, size, progress, timeout)
    with response:
        if offset and response.status != 206:
            print(f"download: server ignored the Range request; restarting {part.name} from 0",
                  flush=True)
            offset = 0
        elif offset and _range_start(response.headers) != offset:
            raise http.client.HTTPException(
                f"asked for bytes from {offset}, got Content-Range "
                f"{response.headers.get('Content-Range')!r}")
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length is not None else size
        _stream(response, part, offset, total, progress)


def _stream(response, part, offset, total, progress):
    done, start = offset, time.monotonic()
    last_report = start
    with open(part, "ab" if offset else "wb") as f:
        for block in iter(lambda: response.read(CHUNK_BYTES), b""):
            f.write(block)
            done += len(block)
            now = time.monotonic()
            if progress and now - last_report >= PROGRESS_EVERY_S:
                _report(part, done, total, (done - offset) / (now - start))
                last_report = now
    if total is not None and done < total:  # http.client ends a short body quietly
        raise _Interrupted(f"connection closed after {done} of {total} bytes")
    if progress:
        _report(part, done, total, (done - offset) / max(time.monotonic() - start, 1e-9))


def _report(part, done, total, bytes_per_s):
    share = f"{100 * done / total:5.1f}% " if total else ""
    of = f"/{total / 1e6:.1f}" if total else ""
    print(f"download: {part.name} {share}{done / 1e6:.1f}{of} MB, {bytes_per_s / 1e6:.1f} MB/s",
          flush=True)


def _range_start(headers):
    match = re.fullmatch(r"bytes (\d+)-\d+/(\d+|\*)", headers.get("Content-Range", "").strip())
    return int(match.group(1)) if match else None


def _range_total(headers):
    match = re.fullmatch(r"bytes \*/(\d+)", headers.get("Content-Range", "").strip())
    return int(match.group(1)) if match else None


def extract(archive_path, out_dir):
    """Safely unpack a tar(.gz) into `out_dir` (reused if already complete); returns the Path."""
    archive, out_dir = Path(archive_path), Path(out_dir)
    if (out_dir / EXTRACTED_MARKER).exists():
        return out_dir
    if out_dir.exists():
        raise FileExistsError(f"extract: {out_dir} exists but has no {EXTRACTED_MARKER} marker, so "
                              "it was not made by extract(); remove or rename it")
    staging = out_dir.with_name(out_dir.name + ".partial")
    if staging.exists():
        print(f"extract: {staging} is a half-finished extraction; starting it over", flush=True)
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    try:
        n_members = _extract_members(archive, staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)  # only ever our own staging folder
        raise
    (staging / EXTRACTED_MARKER).write_text(f"{archive.name}\n{n_members} members\n")
    os.replace(staging, out_dir)
    return out_dir


def _extract_members(archive, target):
    """One pass over the archive (a second pass would re-decompress 2.4 GB); returns the count."""
    n_members = 0
    with tarfile.open(archive) as tar:
        for member in tar:
            path = PurePosixPath(member.name)
            if path.is_absolute() or ".." in path.parts:
                raise ValueError(f"extract: {archive}: unsafe member {member.name!r} (absolute path "
                                 "or '..'); refusing to extract this archive")
            # filter="data" also refuses links out of the tree, devices and odd permissions.
            tar.extract(member, target, filter="data")
            n_members += 1
    return n_members


def fetch_speech_commands(cache_dir, url=GSC_URL, sha256=GSC_SHA256, size=GSC_SIZE, progress=True):
    """Path to the extracted GSC v0.02 root under `cache_dir`, downloading/extracting if needed.

    The verified archive stays beside it; the extracted copy is reused even once that is deleted."""
    cache_dir = Path(cache_dir)
    root = cache_dir / GSC_DIRNAME
    if (root / EXTRACTED_MARKER).exists():
        return root
    archive = download(url, cache_dir / f"{GSC_DIRNAME}.tar.gz", sha256, size, progress)
    if progress:
        print(f"extract: {archive} -> {root}", flush=True)
    return extract(archive, root)

"""kws.download against a local HTTP server (127.0.0.1 only) that can honour Range, ignore it,
or drop the connection part-way, serving a small tar.gz in the GSC layout."""
import hashlib
import http.server
import io
import os
import re
import tarfile
import threading

import pytest

from kws import download as dl

WAV_BYTES = 40_000


def _gsc_tar(path, extra=()):
    """A small tar.gz shaped like GSC: <word>/<speaker>_nohash_<n>.wav plus _background_noise_."""
    names = ["yes/0a1b2c3d_nohash_0.wav", "no/0a1b2c3d_nohash_0.wav", "yes/ffee0011_nohash_1.wav",
             "_background_noise_/white_noise.wav", *extra]
    with tarfile.open(path, "w:gz") as tar:
        for name in names:
            data = os.urandom(WAV_BYTES)  # incompressible, so the archive is big enough to cut
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves `payload`; knobs: honour_range, drop_after (bytes sent on the first GET only)."""
    payload = b""
    honour_range = True
    drop_after = None
    ranges = []  # Range header of every GET (None when absent)

    def do_GET(self):
        srv = type(self)
        rng = self.headers.get("Range")
        srv.ranges.append(rng)
        if self.path != "/gsc.tar.gz":
            self.send_error(404)
            return
        start = 0
        match = re.fullmatch(r"bytes=(\d+)-", rng or "")
        if match and srv.honour_range:
            start = int(match.group(1))
            if start >= len(srv.payload):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(srv.payload)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(srv.payload) - 1}/{len(srv.payload)}")
        else:
            self.send_response(200)
        body = srv.payload[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if srv.drop_after is not None:
            body, srv.drop_after = body[:srv.drop_after], None
            self.close_connection = True
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path):
    archive = _gsc_tar(tmp_path / "src.tar.gz")
    handler = type("Handler", (_Handler,), {"payload": archive.read_bytes(), "ranges": []})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    handler.url = f"http://127.0.0.1:{httpd.server_address[1]}/gsc.tar.gz"
    handler.sha256 = hashlib.sha256(handler.payload).hexdigest()
    yield handler
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(autouse=True)
def no_retry_wait(monkeypatch):
    monkeypatch.setattr(dl, "RETRY_WAIT_S", 0.0)


def test_download_verifies_and_skips_a_good_existing_file(server, tmp_path):
    dest = tmp_path / "out" / "gsc.tar.gz"
    got = dl.download(server.url, dest, sha256=server.sha256, size=len(server.payload), progress=False)
    assert got == dest and dest.read_bytes() == server.payload
    assert not dest.with_name("gsc.tar.gz.part").exists()
    dl.download(server.url, dest, sha256=server.sha256, progress=False)
    assert server.ranges == [None]  # the second call did not touch the network


def test_dropped_connection_is_resumed_with_range(server, tmp_path):
    cut = len(server.payload) // 3
    server.drop_after = cut
    dest = dl.download(server.url, tmp_path / "gsc.tar.gz", sha256=server.sha256, progress=False)
    assert dl.sha256_file(dest) == server.sha256
    assert server.ranges == [None, f"bytes={cut}-"]


def test_existing_part_file_is_resumed(server, tmp_path):
    dest = tmp_path / "gsc.tar.gz"
    half = len(server.payload) // 2
    dest.with_name("gsc.tar.gz.part").write_bytes(server.payload[:half])
    dl.download(server.url, dest, sha256=server.sha256, progress=False)
    assert dest.read_bytes() == server.payload
    assert server.ranges == [f"bytes={half}-"]


def test_complete_part_file_is_not_fetched_again(server, tmp_path):
    dest = tmp_path / "gsc.tar.gz"
    dest.with_name("gsc.tar.gz.part").write_bytes(server.payload)
    dl.download(server.url, dest, sha256=server.sha256, progress=False)  # server answers 416
    assert dest.read_bytes() == server.payload
    assert server.ranges == [f"bytes={len(server.payload)}-"]


def test_server_ignoring_range_restarts_from_zero(server, tmp_path):
    server.honour_range = False
    dest = tmp_path / "gsc.tar.gz"
    dest.with_name("gsc.tar.gz.part").write_bytes(server.payload[:1000])
    dl.download(server.url, dest, sha256=server.sha256, progress=False)
    assert dest.read_bytes() == server.payload


def test_wrong_checksum_raises_and_keeps_the_file_aside(server, tmp_path):
    dest = tmp_path / "gsc.tar.gz"
    wrong = "0" * 64
    with pytest.raises(dl.ChecksumError) as err:
        dl.download(server.url, dest, sha256=wrong, progress=False)
    message = str(err.value)
    assert str(dest) in message and wrong in message and server.sha256 in message
    assert not dest.exists()
    assert (tmp_path / "gsc.tar.gz.part.bad").read_bytes() == server.payload


def test_wrong_size_raises(server, tmp_path):
    with pytest.raises(dl.ChecksumError, match="expected 123 bytes"):
        dl.download(server.url, tmp_path / "gsc.tar.gz", size=123, progress=False)


def test_http_error_is_clear_and_not_retried(server, tmp_path):
    with pytest.raises(RuntimeError, match="HTTP 404"):
        dl.download(server.url.replace("gsc", "nope"), tmp_path / "x.tar.gz", progress=False)
    assert len(server.ranges) == 1


def test_progress_is_printed(server, tmp_path, capsys):
    dl.download(server.url, tmp_path / "gsc.tar.gz", progress=True)
    assert re.search(r"100\.0% .* MB/s", capsys.readouterr().out)


def test_extract_writes_marker_and_redoes_a_half_extraction(tmp_path):
    archive = _gsc_tar(tmp_path / "a.tar.gz")
    out = tmp_path / "gsc"
    half_done = tmp_path / "gsc.partial"
    (half_done / "yes").mkdir(parents=True)
    (half_done / "yes" / "truncated.wav").write_bytes(b"RIFF")
    assert dl.extract(archive, out) == out
    assert (out / dl.EXTRACTED_MARKER).exists() and not half_done.exists()
    assert not (out / "yes" / "truncated.wav").exists()
    assert (out / "yes" / "ffee0011_nohash_1.wav").stat().st_size == WAV_BYTES
    assert (out / "_background_noise_" / "white_noise.wav").exists()
    (out / "no" / "0a1b2c3d_nohash_0.wav").unlink()
    dl.extract(archive, out)  # complete copy is reused, not extracted again
    assert not (out / "no" / "0a1b2c3d_nohash_0.wav").exists()


def test_extract_refuses_parent_paths(tmp_path):
    archive = _gsc_tar(tmp_path / "evil.tar.gz", extra=["../evil.wav"])
    with pytest.raises(ValueError, match=r"unsafe member '\.\./evil\.wav'"):
        dl.extract(archive, tmp_path / "x" / "gsc")
    assert not (tmp_path / "x" / "evil.wav").exists()
    assert not (tmp_path / "x" / "gsc").exists() and not (tmp_path / "x" / "gsc.partial").exists()


def test_extract_refuses_a_foreign_folder(tmp_path):
    archive = _gsc_tar(tmp_path / "a.tar.gz")
    (tmp_path / "mine").mkdir()
    with pytest.raises(FileExistsError, match="not made by extract"):
        dl.extract(archive, tmp_path / "mine")


def test_fetch_speech_commands_end_to_end(server, tmp_path):
    root = dl.fetch_speech_commands(tmp_path / "cache", url=server.url, sha256=server.sha256,
                                    size=len(server.payload), progress=False)
    assert root == tmp_path / "cache" / dl.GSC_DIRNAME
    assert (root / "yes" / "0a1b2c3d_nohash_0.wav").exists()
    (tmp_path / "cache" / f"{dl.GSC_DIRNAME}.tar.gz").unlink()
    assert dl.fetch_speech_commands(tmp_path / "cache", url=server.url, progress=False) == root
    assert server.ranges == [None]  # reused without the archive or the network


"""Outputs are replaced whole or not at all: a full disk or a file-size limit mid-write leaves the
previous file as it was and says what happened, naming the file."""
import errno
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from kws import checkpoint, export, io, models


def fail_midway(monkeypatch, method, code):
    """Path.<method> writes half its data, then fails as a full disk does."""
    original = getattr(Path, method)

    def half_then_fail(self, data, *args, **kwargs):
        original(self, data[:len(data) // 2], *args, **kwargs)
        raise OSError(code, os.strerror(code))
    monkeypatch.setattr(Path, method, half_then_fail)


def test_a_full_disk_leaves_the_previous_json_and_names_the_file(tmp_path, monkeypatch):
    path = tmp_path / "metrics" / "teacher.json"
    io.write_json(path, {"best_val_acc": 0.9})
    fail_midway(monkeypatch, "write_text", errno.ENOSPC)
    with pytest.raises(OSError, match=rf"writing {path}: disk full / file size limit reached \(No space left") as e:
        io.write_json(path, {"best_val_acc": 0.1, "padding": list(range(1000))})
    assert e.value.errno == errno.ENOSPC
    monkeypatch.undo()
    assert io.read_json(path) == {"best_val_acc": 0.9}
    assert os.listdir(path.parent) == ["teacher.json"]  # no half-written temporary left behind


def test_a_file_size_limit_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "teacher.pt"
    arch, kwargs = models.preset("tc_resnet8", 0.25, 40, 12)
    checkpoint.save(path, models.build(arch, kwargs, seed=0), arch, kwargs, {}, stage="teacher")
    before = path.read_bytes()
    save = torch.save

    def half_then_fail(obj, f):  # the file-size limit hits midway through torch's write
        save(obj, f)
        f.truncate(f.tell() // 2)
        raise OSError(errno.EFBIG, os.strerror(errno.EFBIG))
    monkeypatch.setattr(torch, "save", half_then_fail)
    with pytest.raises(OSError, match=r"teacher.pt: disk full / file size limit reached \(File too large\)"):
        checkpoint.save(path, models.build(arch, kwargs, seed=1), arch, kwargs, {}, stage="teacher")
    monkeypatch.undo()
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["teacher.pt"]
    checkpoint.load(path)


EXPORT = """
import sys, torch
from kws import export, models
model = models.build(*models.preset("tc_resnet8", 0.25, 40, 12), seed=1).eval()
export.to_onnx(model, torch.randn(2, 40, 101), sys.argv[1])
"""


def test_onnx_export_under_ulimit_f_keeps_the_previous_file(tmp_path):
    # the finding: `ulimit -f` during export left a truncated teacher.fp32.onnx and a raw OSError
    path = tmp_path / "teacher.fp32.onnx"
    export.to_onnx(models.build(*models.preset("tc_resnet8", 0.25, 40, 12), seed=0).eval(), torch.randn(2, 40, 101),
                   path)
    before = path.read_bytes()
    limit = len(before) // 2

    def ulimit_f():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
    out = subprocess.run([sys.executable, "-c", EXPORT, str(path)], capture_output=True, text=True,
                         preexec_fn=ulimit_f, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode != 0
    assert f"writing {path}: disk full / file size limit reached (File too large)" in out.stderr, out.stderr[-2000:]
    assert path.read_bytes() == before and os.listdir(tmp_path) == [path.name]


def test_the_train_features_are_byte_identical_from_run_to_run(tmp_path, monkeypatch):
    # DVC hashes the file: bytes that changed with the writer's pid would rerun every later stage
    monkeypatch.chdir(tmp_path)
    power, y = torch.rand(6, 4, 5, generator=torch.Generator().manual_seed(0)), torch.arange(6)
    files = []
    for pid in (1234, 56789):
        monkeypatch.setattr(os, "getpid", lambda: pid)
        io.save_train(power, y, power[:2], torch.zeros(6, dtype=torch.bool))
        files.append(Path("data/features/train.pt").read_bytes())
    assert files[0] == files[1]
    assert torch.equal(io.load_train()[0], power)


SAVE_TRAIN = """
import torch
from kws import io
power = torch.rand(64, 40, 101, generator=torch.Generator().manual_seed(1))
io.save_train(power, torch.arange(64) % 12, power[:4], torch.zeros(64, dtype=torch.bool))
"""


def test_train_features_under_ulimit_f_keep_the_previous_file(tmp_path, monkeypatch):
    # torch.save streaming to a file reports the full disk as 'unexpected pos'; the error names it
    monkeypatch.chdir(tmp_path)
    power = torch.rand(8, 40, 101, generator=torch.Generator().manual_seed(0))
    io.save_train(power, torch.arange(8), power[:2], torch.zeros(8, dtype=torch.bool))
    path = Path("data/features/train.pt")
    before = path.read_bytes()

    def ulimit_f():
        resource.setrlimit(resource.RLIMIT_FSIZE, (len(before), resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
    out = subprocess.run([sys.executable, "-c", SAVE_TRAIN], capture_output=True, text=True, preexec_fn=ulimit_f,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode != 0
    assert "writing data/features/train.pt: disk full / file size limit reached (File too large)" in out.stderr, \
        out.stderr[-2000:]
    assert path.read_bytes() == before and os.listdir(path.parent) == ["train.pt"]

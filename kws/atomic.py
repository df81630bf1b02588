"""Outputs written whole or not at all. A writer writes a temporary file beside its target and
renames it over the target once complete (os.replace is atomic within a file system), so a
crash, a kill or a full disk leaves the previous file or none, never a truncated one that a
later stage, or a person, would take for a result."""
import errno
import os
from contextlib import contextmanager
from pathlib import Path


# The errors of a full disk, a full quota and a file-size limit (`ulimit -f`).
FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


@contextmanager
def writing(path):
    """Yield a temporary path beside `path` (same name and suffix, hidden: writers that choose a
    format by the suffix still do); when the block ends without error it replaces `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        full = _full_disk_error(e)
        if full:
            raise OSError(full.errno, f"writing {path}: disk full / file size limit reached ({os.strerror(full.errno)}); "
                          f"{path.name} is left as it was before this run (or absent)") from e
        raise


def _full_disk_error(e):
    """The full-disk OSError behind `e`, if any: torch.save streaming to a file reports one as a
    RuntimeError ('unexpected pos') raised while handling it."""
    while e is not None:
        if isinstance(e, OSError) and e.errno in FULL:
            return e
        e = e.__cause__ or e.__context__
    return None


def write_text(path, text):
    with writing(path) as tmp:
        tmp.write_text(text)


def torch_save(obj, path):
    """torch.save, atomically, streamed to an open file: no copy in memory (train features are
    about a gigabyte at GSC size), and the bytes do not depend on the temporary's name (given a
    path, torch.save names the archive inside after it, pid and all, so DVC's hash would change
    on every run). A full disk comes as torch's 'unexpected pos'; `writing` names it."""
    import torch  # here, not at the top: the source stage writes atomically without paying for torch
    with writing(path) as tmp, open(tmp, "wb") as f:
        torch.save(obj, f)

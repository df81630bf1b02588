"""Where relative data folders are read from: the workspace the user runs DVC in, also when DVC runs
the stages somewhere else. No torch here: the source stage runs on every `dvc repro`."""
from pathlib import Path

FOLDERS = ("root", "noise_root", "extra_train_root")  # the data block's folder parameters
QUEUED = (".dvc", "tmp", "exps")  # `dvc exp run --queue` runs each experiment in a copy under here


def project_root(cwd):
    """The workspace a stage's working directory belongs to: `cwd` itself, or the project that
    holds it when it is a queued experiment's copy (<workspace>/.dvc/tmp/exps/<copy>/)."""
    parts = Path(cwd).parts
    for i in range(len(parts) - len(QUEUED) + 1):
        if parts[i:i + len(QUEUED)] == QUEUED:
            return Path(*parts[:i])
    return Path(cwd)


def data_folders(p, cwd):
    """The data block `p` with its relative folders read from the workspace, as the user typed them:
    in a queued experiment's copy `../shared/...` would name nothing. data.cache stays the copy's
    own (two queued runs filling one cache at once would collide), so a queued run re-synthesizes
    the espeak-ng corpus and would re-download Speech Commands: give such runs data.root."""
    base = project_root(cwd)
    if base == Path(cwd):
        return p
    return {**p, **{k: str(base / p[k]) for k in FOLDERS if p[k] and not Path(p[k]).is_absolute()}}

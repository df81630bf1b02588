"""source: fingerprint what fetch will read (data/source.json), on every run (always_changed in
dvc.yaml), so added, removed or replaced clips rerun fetch and nothing else does.

params.yaml is read here with yaml and checked by kws.params rather than through kws.io, which
imports torch: seconds of imports on every `dvc repro` for a stage that otherwise takes a stat per
file."""
import json
from pathlib import Path

import yaml

from kws import atomic, fingerprint, params, workspace

OUT = Path("data/source.json")


def main():
    p = params.check(yaml.safe_load(Path("params.yaml").read_text()), "data")
    what = fingerprint.inputs(workspace.data_folders(p, Path.cwd()))
    folders = {name: fingerprint.folder(path) for name, path in what["folders"].items()}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_text(OUT, json.dumps({"folders": folders, "archive": what["archive"]}, indent=2) + "\n")
    for name, f in folders.items():
        seen = "missing" if f.get("missing") else f"{f['files']} files, {f['bytes'] / 1e6:.1f} MB"
        print(f"[source] data.{name} {f['path']}: {seen}", flush=True)


if __name__ == "__main__":
    main()

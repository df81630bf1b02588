"""source: fingerprint what fetch will read (data/source.json), on every run (always_changed in
dvc.yaml), so added, removed or replaced clips rerun fetch and nothing else does."""
from pathlib import Path

from kws import data_source, fingerprint, io

OUT = Path("data/source.json")


def main():
    what = data_source.inputs(io.params("data"))
    folders = {name: fingerprint.folder(path) for name, path in what["folders"].items()}
    io.write_json(OUT, {"folders": folders, "archive": what["archive"]})
    for name, f in folders.items():
        seen = "missing" if f.get("missing") else f"{f['files']} files, {f['bytes'] / 1e6:.1f} MB"
        print(f"[source] data.{name} {f['path']}: {seen}", flush=True)


if __name__ == "__main__":
    main()

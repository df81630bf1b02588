"""Resolve params.yaml's `data` block to a Speech Commands folder on disk (and its noise)."""
import hashlib
import json
import shutil
from pathlib import Path

from kws import download, synth

SOURCES = ("synthetic", "folder", "speech_commands")


def corpus_root(p):
    """(root folder in a Speech Commands layout, folder holding background noise)."""
    source = p["source"]
    if source not in SOURCES:
        raise ValueError(f"data.source must be one of {SOURCES}, got {source!r}")
    if source == "folder":
        if not p["root"]:
            raise ValueError("data.source=folder needs data.root, a Speech Commands folder (full or test-set layout)")
        root = Path(p["root"])
    elif source == "speech_commands":
        root = Path(p["root"]) if p["root"] else download.fetch_speech_commands(Path(p["cache"]) / "speech_commands")
    else:
        root = synthetic_corpus(p["synthetic"], p["seed"], Path(p["cache"]))
    noise = Path(p["noise_root"]) if p["noise_root"] else root
    return root, noise


def synthetic_corpus(s, seed, cache):
    """The espeak-ng corpus for these settings, made once per settings and reused after."""
    if s["speakers"] < 3:
        raise ValueError(f"data.synthetic.speakers must be >= 3 (one per split at least), got {s['speakers']}")
    key = hashlib.sha1(json.dumps({**s, "seed": seed}, sort_keys=True).encode()).hexdigest()[:10]
    root = cache / f"synthetic-{key}"
    if (root / "SOURCE.txt").exists():  # written last, so its presence means complete
        print(f"[fetch] reusing synthetic corpus {root}", flush=True)
        return root
    shutil.rmtree(root, ignore_errors=True)  # a half-written corpus from an interrupted run
    print(f"[fetch] synthesizing {s['speakers']} speakers with espeak-ng into {root}", flush=True)
    synth.synthesize_corpus(root, n_speakers=s["speakers"], seed=seed, other_words=s["other_words"])
    return root

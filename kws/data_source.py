"""Resolve params.yaml's `data` block to a Speech Commands folder on disk (and its noise)."""
from pathlib import Path

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
        from kws import download
        root = Path(p["root"]) if p["root"] else download.fetch_speech_commands(Path(p["cache"]) / "speech_commands")
    else:
        from kws import synth
        s = p["synthetic"]
        root = Path(p["cache"]) / f"synthetic-{s['speakers']}spk-seed{p['seed']}"
        synth.synthesize_corpus(root, n_speakers=s["speakers"], seed=p["seed"])
    noise = Path(p["noise_root"]) if p["noise_root"] else root
    return root, noise

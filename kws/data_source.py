"""Resolve params.yaml's `data` block to a Speech Commands folder on disk (and its noise)."""
import hashlib
import json
import shutil
from pathlib import Path

from kws import download, sources, synth

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
        if p["synthetic"]["speakers"] < 3:
            raise ValueError(f"data.synthetic.speakers must be >= 3 (one per split at least), "
                             f"got {p['synthetic']['speakers']}")
        root = synthetic_corpus(p["synthetic"], p["seed"], Path(p["cache"]))
    noise = Path(p["noise_root"]) if p["noise_root"] else root
    return root, noise


def synthetic_corpus(s, seed, cache):
    """The espeak-ng corpus for these settings, made once per settings and reused after."""
    key = hashlib.sha1(json.dumps({**s, "seed": seed}, sort_keys=True).encode()).hexdigest()[:10]
    root = cache / f"synthetic-{key}"
    if (root / "SOURCE.txt").exists():  # written last, so its presence means complete
        print(f"[fetch] reusing synthetic corpus {root}", flush=True)
        return root
    shutil.rmtree(root, ignore_errors=True)  # a half-written corpus from an interrupted run
    print(f"[fetch] synthesizing {s['speakers']} speakers with espeak-ng into {root}", flush=True)
    synth.synthesize_corpus(root, n_speakers=s["speakers"], seed=seed, other_words=s["other_words"])
    return root


def extra_train_records(p, records):
    """Every clip of the folder data.extra_train_root, in the train split, but those of speakers
    whom the main source's `records` put in validation or test, so those speakers stay unheard
    ([] when unset). Returns (records, report)."""
    root = p["extra_train_root"]
    if not root:
        return [], None
    if p["source"] == "synthetic":
        raise ValueError("data.extra_train_root adds recorded speech to a real source (data.source folder or "
                         "speech_commands); with data.source=synthetic there is no real split to add it to")
    if p["root"] and Path(root).resolve() == Path(p["root"]).resolve():
        raise ValueError(f"data.extra_train_root {root} is data.root itself: its validation and test clips "
                         "would be trained on; name a second folder, or leave it empty")
    extra, scanned = sources.scan(root, origin=sources.REAL, param="data.extra_train_root")
    held_out = {r["speaker"] for r in records if r["split"] != "train"}
    kept = [dict(r, split="train") for r in extra if r["speaker"] not in held_out]
    report = {"root": str(root), "layout": scanned["layout"], "clips_found": len(extra),
              "dropped_held_out_speakers": len(extra) - len(kept), "clips_added": len(kept)}
    return kept, report


def synthetic_train_records(p):
    """Records of every clip of a synthetic corpus of data.mix_synthetic_speakers speakers, all in
    the train split (validation and test stay real speakers only); [] when it is 0."""
    n = p["mix_synthetic_speakers"]
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"data.mix_synthetic_speakers must be an integer >= 0 (0 = no mix), got {n!r}")
    if n == 0:
        return []
    if p["source"] == "synthetic":
        raise ValueError("data.mix_synthetic_speakers adds synthetic speech to a real source; with "
                         "data.source=synthetic set data.synthetic.speakers instead")
    # Same settings as data.synthetic but the speaker count, so a matching corpus is reused.
    root = synthetic_corpus({**p["synthetic"], "speakers": n}, p["seed"], Path(p["cache"]))
    records, _ = sources.scan(root, origin=sources.SYNTHETIC)
    return [dict(r, split="train") for r in records]

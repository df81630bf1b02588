"""Turn labelled records into the arrays every later stage reads: one int16 audio matrix, a
manifest, and background-noise chunks per split. Decoding once here keeps training free of
file I/O, so the 2 cores stay busy on the model."""
import json
import random
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from kws import audio
from kws.sources import CLASSES, NOISE, ORIGINS, SILENCE, SPLITS

NOISE_SPLIT = {"train": (0.0, 0.8), "val": (0.8, 0.9), "test": (0.9, 1.0)}  # time ranges of each recording


def read_clips(records, sample_rate, clip_samples, progress=True):
    """(audio, kept records, bad files, resampled files): bad files are skipped, resampled ones
    kept; both come as {path, reason} so the report can say what was wrong with each."""
    waves, kept, bad, resampled = [], [], [], []
    t0, last = time.time(), time.time()
    for i, r in enumerate(records):
        try:
            clip, rate = audio.read_clip(r["path"], sample_rate, clip_samples)
        except audio.BadAudio as e:
            bad.append({"path": e.path, "reason": e.reason})
        else:
            waves.append(clip)
            kept.append(r)
            if rate != sample_rate:
                resampled.append({"path": r["path"], "reason": f"resampled from {rate} Hz"})
        if progress and time.time() - last > 5:
            last = time.time()
            print(f"  read {i + 1}/{len(records)} clips ({(i + 1) / (last - t0):.0f}/s)", flush=True)
    wave = np.stack(waves) if waves else np.zeros((0, clip_samples), np.int16)
    return wave, kept, bad, resampled


def noise_ranges(n_samples, clip_samples):
    """Sample range [start, end) of each split in a recording of n_samples (cut on the 1-s chunk
    grid; the last range runs to the end)."""
    n = n_samples // clip_samples
    return {s: (int(a * n) * clip_samples, n_samples if b == 1.0 else int(b * n) * clip_samples)
            for s, (a, b) in NOISE_SPLIT.items()}


def noise_chunks(paths, sample_rate, clip_samples):
    """1-s chunks of each recording, split by time range (no split hears another's noise)."""
    chunks = {s: [] for s in SPLITS}
    for p in paths:
        wave = audio.read_long(p, sample_rate)
        for s, (start, end) in noise_ranges(len(wave), clip_samples).items():
            for i in range(start // clip_samples, end // clip_samples):
                chunks[s].append(wave[i * clip_samples:(i + 1) * clip_samples])
    return {s: np.stack(c) if c else np.zeros((0, clip_samples), np.int16) for s, c in chunks.items()}


def silence_clips(n, noise, clip_samples, rng):
    """Silence = a noise chunk at a random volume (TensorFlow's recipe); faint white noise when
    the source has no background recordings."""
    out = np.zeros((n, clip_samples), np.int16)
    for i in range(n):
        gain = rng.uniform(0.0, 1.0)
        base = noise[rng.randrange(len(noise))] if len(noise) else np.random.default_rng(rng.randrange(2**31)).normal(0, 30, clip_samples)
        out[i] = np.clip(base * gain, -32768, 32767).astype(np.int16)
    return out


def build(records, need_silence, noise_paths, sample_rate=16000, clip_samples=16000, seed=0,
          max_bad_percent=1.0, progress=True):
    """(audio [N, S] int16, manifest DataFrame, train noise [M, S] int16, report dict).

    need_silence: (split, clips) pairs of silence to cut from noise, drawn in that order (so a
    pair appended later, like a synthetic mix's, leaves the earlier splits' silence unchanged)."""
    wave, kept, bad, resampled = read_clips(records, sample_rate, clip_samples, progress)
    if records and 100.0 * len(bad) / len(records) > max_bad_percent:
        examples = [f"{b['path']}: {b['reason']}" for b in bad[:3]]
        raise ValueError(f"{len(bad)} of {len(records)} clips are unreadable or malformed (more than "
                         f"data.max_bad_percent={max_bad_percent}%), e.g. {examples}")
    noise = noise_chunks(noise_paths, sample_rate, clip_samples)
    rng = random.Random(seed)
    parts, rows, made = [wave], list(kept), dict.fromkeys(SPLITS, 0)
    for split, n in need_silence:
        parts.append(silence_clips(n, noise[split], clip_samples, rng))
        rows += [{"path": "", "word": SILENCE, "speaker": f"noise{made[split] + i}", "split": split,
                  "label": SILENCE, "source": NOISE} for i in range(n)]
        made[split] += n
    manifest = pd.DataFrame(rows, columns=["path", "word", "speaker", "split", "label", "source"])
    manifest["label_index"] = manifest["label"].map(CLASSES.index)
    # Every bad file is listed (at most data.max_bad_percent of the clips); resampled ones can be
    # the whole corpus, so they are counted and the first 20 listed.
    report = {"clips": len(manifest), "bad_files_skipped": len(bad),
              "bad_file_kinds": dict(Counter(audio.kind_of(b["reason"]) for b in bad)), "bad_files": bad,
              "resampled": len(resampled), "resampled_kinds": dict(Counter(r["reason"] for r in resampled)),
              "resampled_files": resampled[:20],
              "noise_recordings": [str(p) for p in noise_paths],
              "noise_chunks": {s: int(len(c)) for s, c in noise.items()},
              "counts": counts(manifest, "label", CLASSES),
              "sources": counts(manifest, "source", ORIGINS),
              # provided silence clips (source real) apart from those cut from noise here: figures
              # on either can flatter, so evaluation can tell them apart
              "silence_sources": counts(manifest[manifest["label"] == SILENCE], "source", ORIGINS)}
    return np.concatenate(parts), manifest, noise["train"], report


def counts(manifest, column, values):
    """{split: {value: clips}} of one manifest column."""
    table = manifest.groupby(["split", column]).size().unstack(fill_value=0)
    table = table.reindex(index=list(SPLITS), columns=list(values), fill_value=0)
    return {s: {v: int(table.loc[s, v]) for v in values} for s in SPLITS}


def check_classes(report):
    """Every split must hold every class, or training/evaluation would be silently wrong."""
    holes = [f"{s}/{c}" for s in SPLITS for c in CLASSES if report["counts"][s][c] == 0]
    if holes:
        raise ValueError(f"dataset is missing classes in some splits: {holes[:12]}; the source is too "
                         "small or its split lists do not match its files (see data/dataset/report.json)")


def save(out_dir, wave, manifest, noise, report):
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "audio.npy", wave)
    np.save(out / "noise.npy", noise)
    manifest.to_csv(out / "manifest.csv", index=False)
    (out / "report.json").write_text(json.dumps(report, indent=2))


def load(out_dir):
    """(audio int16 [N, S], manifest, train noise) as written by `save`."""
    out = Path(out_dir)
    for name in ("audio.npy", "noise.npy", "manifest.csv"):
        if not (out / name).exists():
            raise FileNotFoundError(f"{out / name} missing; run the fetch stage (dvc repro fetch)")
    return np.load(out / "audio.npy", mmap_mode="r"), pd.read_csv(out / "manifest.csv", keep_default_na=False), np.load(out / "noise.npy")


def split_index(manifest, name):
    return np.flatnonzero(manifest["split"].to_numpy() == name)


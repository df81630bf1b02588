"""Scan a Speech Commands folder (either official layout) into records, split and label them.

Two layouts exist in the wild:
- full data set: one folder per word, `_background_noise_/`, optional `validation_list.txt` /
  `testing_list.txt` (official split);
- test set: keyword folders plus `_silence_/` and `_unknown_/` (`<word>_<speaker>_nohash_<n>.wav.wav`),
  with no lists, so it is split by speaker hash the way TensorFlow's `which_set` does.
The synthetic corpus and the download are written/unpacked in the full layout, so every source
ends up here.
"""
import hashlib
import math
import random
import re
from pathlib import Path

KEYWORDS = ["yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go"]
SILENCE, UNKNOWN = "_silence_", "_unknown_"
CLASSES = [SILENCE, UNKNOWN] + KEYWORDS  # TensorFlow speech_commands order
SPLITS = ("train", "val", "test")
# Where a clip's audio came from (the manifest's `source`): recorded speech, espeak-ng speech,
# or silence cut from background noise by the fetch stage.
REAL, SYNTHETIC, NOISE = "real", "synthetic", "noise"
ORIGINS = (REAL, SYNTHETIC, NOISE)
NOISE_DIR = "_background_noise_"
MAX_NUM_WAVS_PER_CLASS = 2 ** 27 - 1  # from TensorFlow's recipe, keeps its hash split stable


def speaker_of(filename):
    """GSC speaker id: the hex field before `_nohash_` (numbered silence clips: the stem)."""
    m = re.search(r"([0-9a-fA-F]+)_nohash_", filename)
    return m.group(1) if m else Path(filename).name.split(".")[0]


def which_set(speaker, val_percent, test_percent, salt="", fold=0):
    """TensorFlow's hash split on the speaker id, so one speaker never spans two splits.

    Fold f moves the test share (and the validation share before it) round the hash circle by
    f * test_percent: folds 0 .. n_folds(test_percent) - 1 put every speaker in test exactly once."""
    h = int(hashlib.sha1((salt + speaker).encode()).hexdigest(), 16)
    pct = (h % (MAX_NUM_WAVS_PER_CLASS + 1)) * (100.0 / MAX_NUM_WAVS_PER_CLASS)
    pct = (pct - fold * test_percent) % 100.0
    if pct < val_percent:
        return "val"
    return "test" if pct < val_percent + test_percent else "train"


def n_folds(test_percent):
    """Speaker folds whose test shares tile the speakers (the last one shorter if test_percent
    does not divide 100)."""
    return math.ceil(100.0 / test_percent)


def detect_layout(root, param="data.root"):
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{param} {root} is not a folder; expected a Speech Commands folder")
    if (root / UNKNOWN).is_dir() or (root / SILENCE).is_dir():
        return "test_set"
    if any((root / k).is_dir() for k in KEYWORDS):
        return "full"
    raise ValueError(f"{param} {root} has no keyword folders ({', '.join(KEYWORDS)}); "
                     "expected the Speech Commands full or test-set layout")


def read_list(path):
    return {line.strip() for line in path.read_text().splitlines() if line.strip()} if path.exists() else set()


def scan(root, val_percent=10.0, test_percent=10.0, origin=REAL, fold=0, param="data.root"):
    """Records {path, word, speaker, split, source=origin} for every clip, plus a report of what was odd.

    Split by the official lists when the folder has them, else by speaker hash (fold: `which_set`).
    `param` names the folder's parameter in errors."""
    root = Path(root)
    layout = detect_layout(root, param)
    val_list, test_list = read_list(root / "validation_list.txt"), read_list(root / "testing_list.txt")
    use_lists = layout == "full" and bool(val_list or test_list)
    if not (isinstance(fold, int) and 0 <= fold < n_folds(test_percent)):
        raise ValueError(f"data.fold must be an integer in [0, {n_folds(test_percent) - 1}] with "
                         f"data.test_percent={test_percent} (the folds tile the speakers), got {fold!r}")
    if fold and use_lists:
        raise ValueError(f"data.fold={fold}: {root} has official validation/testing lists, which fix the "
                         "split; speaker folds apply to folders split by speaker hash (set data.fold 0)")
    # The official test set was itself cut by which_set, so unsalted every speaker would land in
    # "test" again: re-split it with a salted hash (still speaker-disjoint).
    salt = "resplit:" if layout == "test_set" else ""
    records, empty = [], []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and p.name != NOISE_DIR and not p.name.startswith(".")):
        files = sorted(folder.glob("*.wav"))
        if not files:
            empty.append(folder.name)
        for f in files:
            rel = f"{folder.name}/{f.name}"
            word = folder.name
            if word == UNKNOWN:
                word = f.name.split("_")[0]
            speaker = speaker_of(f.name)
            if use_lists:
                split = "val" if rel in val_list else "test" if rel in test_list else "train"
            else:
                split = which_set(speaker, val_percent, test_percent, salt, fold)
            records.append({"path": str(f), "word": word, "speaker": speaker, "split": split, "source": origin})
    present = {f"{r['path'].split('/')[-2]}/{Path(r['path']).name}" for r in records}
    missing_listed = sorted((val_list | test_list) - present)
    missing_kw = [k for k in KEYWORDS if not any(r["word"] == k for r in records)]
    if missing_kw:
        raise ValueError(f"{root}: no clips for keyword(s) {missing_kw} (folders empty or missing); "
                         "every keyword needs clips")
    report = {"root": str(root), "layout": layout, "split_by": "official lists" if use_lists else f"speaker hash{' (salted re-split)' if salt else ''}",
              "speaker_fold": None if use_lists else [fold, n_folds(test_percent)],
              "clips_found": len(records), "empty_folders": empty,
              "listed_but_missing": len(missing_listed), "listed_but_missing_examples": missing_listed[:5]}
    return records, report


def noise_files(root):
    d = Path(root) / NOISE_DIR if (Path(root) / NOISE_DIR).is_dir() else Path(root)
    return sorted(d.glob("*.wav"))


def assign_labels(records, silence_percent, unknown_percent, seed):
    """12-class labels as in TensorFlow's recipe: keywords keep their word, other words become
    `_unknown_` sampled to unknown_percent of the keyword clips of each split; silence clips
    (given ones, else placeholders cut from noise later) make silence_percent.

    Returns (labelled records, number of silence placeholders needed per split)."""
    out, need_silence = [], {}
    for split in SPLITS:
        # One generator per split: clips added to train (data.extra_train_root) must not change
        # which validation and test clips are drawn.
        rng = random.Random(f"{seed}:{split}")
        in_split = [r for r in records if r["split"] == split]
        known = [dict(r, label=r["word"]) for r in in_split if r["word"] in KEYWORDS]
        unknown = [dict(r, label=UNKNOWN) for r in in_split if r["word"] not in KEYWORDS and r["word"] != SILENCE]
        silence = [dict(r, label=SILENCE) for r in in_split if r["word"] == SILENCE]
        n_unknown = math.ceil(len(known) * unknown_percent / 100)
        n_silence = math.ceil(len(known) * silence_percent / 100)
        rng.shuffle(unknown)
        rng.shuffle(silence)
        out += known + unknown[:n_unknown] + silence[:n_silence]
        need_silence[split] = max(0, n_silence - len(silence))
    return out, need_silence

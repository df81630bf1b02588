"""Where were the provided `_silence_` clips cut from? The test-set layout's silence clips are
scaled 1-s excerpts of the same background-noise recordings that augmentation and made-up
silence use, so a clip is placed in the split of the noise time range it came from: no
validation or test silence is then heard in training.

Locating 275 clips in six 60-95 s recordings by one cross-correlation per (clip, recording) takes
minutes; here clips are correlated in groups (the sum of a group's templates, one inverse FFT per
group and recording), and each group's few highest peaks are then checked clip by clip.
"""
import numpy as np
from scipy import fft

from kws import audio, dataset
from kws.sources import SILENCE, SPLITS

GROUP = 32          # clips per summed template: few enough that a true peak (~1) stands well above
                    # the others' background (std ~sqrt(GROUP / clip length) = 0.05 at 1 s)
PEAK_BLOCK = 256    # samples: one candidate peak per block
MIN_NCC = 0.9       # a scaled copy scores ~1 (int16 rounding costs a little), unrelated noise < 0.2


def locate(clips, recordings, min_ncc=MIN_NCC):
    """For each clip (rows of `clips`, float [C, L]), (recording index, start sample) of the
    excerpt it is a scaled copy of (normalized cross-correlation >= min_ncc), or None."""
    clips = np.asarray(clips, np.float32)  # float32: FFTs ~3x faster, ample for scores near 1
    length = clips.shape[1]
    # First differences whiten low-frequency noise (hum, brown-ish recordings), whose broad
    # correlation peaks would otherwise drown a group's true peak.
    templates = _unit_rows(np.diff(clips, axis=1))
    usable = np.flatnonzero(np.abs(templates).sum(axis=1) > 0)  # an all-constant clip matches nothing
    groups = [usable[i:i + GROUP] for i in range(0, len(usable), GROUP)]
    n_fft = fft.next_fast_len(max((len(r) for r in recordings), default=0) + length)
    group_spectra = [fft.rfft(templates[g].sum(axis=0)[::-1], n_fft) for g in groups]
    best = np.full(len(clips), min_ncc)
    found = [None] * len(clips)
    for index, recording in enumerate(recordings):
        recording = np.asarray(recording, np.float32)
        if len(recording) < length:
            continue
        diffs = np.diff(recording)
        spectrum = fft.rfft(diffs, n_fft)
        norms = _window_norms(diffs, length - 1)
        for members, group_spectrum in zip(groups, group_spectra):
            # correlation at start s sits at index s + length - 2 of the full convolution
            corr = fft.irfft(spectrum * group_spectrum, n_fft)[length - 2:length - 2 + len(norms)] / norms
            for clip, start, score in _check_peaks(corr, members, clips, recording, min_ncc):
                if score >= best[clip]:
                    best[clip], found[clip] = score, (index, int(start))
    return found


def _check_peaks(corr, members, clips, recording, min_ncc):
    """(clip, start, ncc >= min_ncc) of the member clips at the group's highest peaks."""
    blocks = np.pad(corr, (0, -len(corr) % PEAK_BLOCK), constant_values=-np.inf).reshape(-1, PEAK_BLOCK)
    block_peaks = np.arange(len(blocks)) * PEAK_BLOCK + blocks.argmax(axis=1)
    # a peak on a block edge can fill two blocks, so take three per member
    starts = block_peaks[np.argsort(corr[block_peaks])[-3 * len(members):]]
    windows = _unit_rows(recording[starts[:, None] + np.arange(clips.shape[1])])
    scores = windows @ _unit_rows(clips[members]).T  # [peaks, members]
    return [(members[m], starts[p], scores[p, m]) for p, m in zip(*np.nonzero(scores >= min_ncc))]


def _unit_rows(x):
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)


def _window_norms(x, width):
    """L2 norm of every window x[s:s + width] (tiny floor: digital silence correlates with nothing)."""
    energy = np.concatenate([[0.0], np.cumsum(x.astype(np.float64) ** 2)])
    return np.sqrt(np.maximum(energy[width:] - energy[:-width], 1e-9)).astype(np.float32)


def place_provided(records, noise_paths, sample_rate=16000, clip_samples=16000):
    """(records, report): each provided silence clip found in a noise recording moves to the split
    of the noise time range it was cut from (dataset.NOISE_SPLIT, where that split's noise chunks
    come from). Why this rule: the noise chunks stay as they are, no split hears another's
    silence, and the clips still divide about 80/10/10 like the speaker hash did. A clip across
    two ranges is dropped (its audio is in both; ~4% of GSC's); a clip found nowhere keeps its
    speaker-hash split."""
    provided, waves = [], []
    for r in records:
        if r["word"] == SILENCE:
            try:
                waves.append(audio.read_clip(r["path"], sample_rate, clip_samples)[0])
                provided.append(r)
            except audio.BadAudio:
                pass  # dataset.build skips and reports it
    recordings = [audio.read_long(p, sample_rate) for p in noise_paths] if provided else []
    found = locate(np.stack(waves), recordings) if recordings else [None] * len(provided)
    where = {r["path"]: f for r, f in zip(provided, found) if f}
    split_of = {path: _range_split(f, recordings, clip_samples) for path, f in where.items()}
    placed = []
    for r in records:
        if r["path"] not in split_of:
            placed.append(r)
        elif split_of[r["path"]]:
            placed.append(dict(r, split=split_of[r["path"]]))
    located = [r for r in placed if r["path"] in where]
    # recorded as a check of the rule above, for whoever reads the report
    held_out_in_train_noise = [r for r in located if r["split"] != "train"
                               and _overlaps_train(where[r["path"]], recordings, clip_samples)]
    return placed, {
        "provided_clips": len(provided),
        "located_in_noise": _per_split(located),
        "not_located_split_by_speaker_hash": _per_split([r for r in provided if r["path"] not in where]),
        "dropped_across_noise_ranges": len(where) - len(located),
        "held_out_clips_in_train_noise": len(held_out_in_train_noise)}


def _range_split(found, recordings, clip_samples):
    """The split whose noise range holds the whole clip, or None when it spans two."""
    index, start = found
    for split, (a, b) in dataset.noise_ranges(len(recordings[index]), clip_samples).items():
        if a <= start and start + clip_samples <= b:
            return split
    return None


def _overlaps_train(found, recordings, clip_samples):
    index, start = found
    a, b = dataset.noise_ranges(len(recordings[index]), clip_samples)["train"]
    return start < b and start + clip_samples > a


def _per_split(records):
    return {s: sum(r["split"] == s for r in records) for s in SPLITS}

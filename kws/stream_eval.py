"""Long test streams and what a product owner asks of them: false accepts per hour and the miss
rate per keyword, with the streaming detector of kws.stream.

A stream is held-out background noise with words laid on it: keyword and unknown-word clips of
one split, each scaled to the same speech level, one every few seconds, the noise scaled to a
signal-to-noise ratio. Scoring follows MLPerf Tiny's streaming wake-word rule: a detection of
keyword k is true from the start of a k clip to 1 s after its end (GSC clips are 1 s around the
word and carry no word boundaries, so the clip stands for the word); any other detection of k is
a false accept, and false accepts of k less than 1 s apart count once.
"""
import matplotlib

matplotlib.use("Agg")  # files only: the stage runs headless
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

from kws import metrics, stream  # noqa: E402
from kws.sources import CLASSES, KEYWORDS, SILENCE, UNKNOWN  # noqa: E402

SPEECH_RMS = 0.05   # every word clip scaled to this RMS (-26 dBFS over its 1-s clip), so an SNR means one level
TRUE_AFTER_S = 1.0  # a detection is true up to this long after the word's clip ends (MLPerf Tiny)
MERGE_S = 1.0       # false accepts closer than this count once (MLPerf Tiny)
# Posterior thresholds swept for the DET curves and the threshold choice: coarse in the middle,
# fine near 1 where a well-trained model's smoothed posteriors sit.
THRESHOLDS = np.unique(np.round(np.r_[np.arange(0.05, 0.951, 0.05), 0.97, 0.98, 0.99, 1 - np.logspace(-2.3, -6, 12)], 7))


def pools(wave, manifest, split: str) -> dict:
    """The clips one split's streams are made of, as float in [-1, 1): keyword clips with their
    class indices, unknown-word clips, and the split's silence clips as background noise (cut
    from that split's time range of the noise recordings, see kws.silence / kws.dataset)."""
    rows = manifest["split"].to_numpy() == split
    label = manifest["label"].to_numpy()
    take = lambda mask: np.asarray(wave[np.flatnonzero(rows & mask)], np.float32) / 32768.0  # noqa: E731
    keyword = np.isin(label, KEYWORDS)
    noise = take(label == SILENCE)
    out = {"keyword": take(keyword), "keyword_class": manifest["label_index"].to_numpy()[rows & keyword],
           "unknown": take(label == UNKNOWN), "noise": noise[rms(noise) > 1e-5]}  # digital silence has no level to scale
    empty = [k for k in ("keyword", "unknown", "noise") if len(out[k]) == 0]
    if empty:
        raise ValueError(f"the {split} split has no {', '.join(empty)} clips to build streams from")
    return out


def rms(x):
    return np.sqrt(np.mean(np.square(x, dtype=np.float64), axis=-1))


def build(pool: dict, seconds: float, snr_db: float, rng: np.random.Generator, gap_s=(1.0, 3.0),
          keyword_share: float = 0.5):
    """(wave float32, events [(start s, class index)], clips used {kind: indices}) of one stream:
    a gap of noise (uniform in gap_s), then a keyword clip (share keyword_share) or an unknown
    word, and so on. Clips are drawn without replacement until a pool runs out, then reshuffled,
    so they repeat only as often as the stream's length needs."""
    sr = pool["keyword"].shape[1]  # clips are 1 s
    n = int(seconds * sr)
    noise_level = SPEECH_RMS / 10 ** (snr_db / 20)
    beds = pool["noise"] / rms(pool["noise"])[:, None]
    wave = np.concatenate([beds[i] for i in rng.integers(len(beds), size=n // sr + 1)])[:n] * noise_level
    draws = {kind: _cycle(len(pool[kind]), rng) for kind in ("keyword", "unknown")}
    events, used, t = [], {"keyword": [], "unknown": []}, 0.0
    while True:
        t += rng.uniform(*gap_s)
        if t + 1.0 > seconds:
            break
        kind = "keyword" if rng.random() < keyword_share else "unknown"
        i = next(draws[kind])
        clip = pool[kind][i]
        start = int(t * sr)
        wave[start:start + sr] += clip * (SPEECH_RMS / max(rms(clip), 1e-9))
        events.append((start / sr, int(pool["keyword_class"][i]) if kind == "keyword" else CLASSES.index(UNKNOWN)))
        used[kind].append(i)
        t = (start + sr) / sr
    return np.clip(wave, -1.0, 32767 / 32768).astype(np.float32), events, used


def _cycle(n, rng):
    while True:
        yield from rng.permutation(n)


def _latest_within(starts: np.ndarray, times: np.ndarray) -> tuple:
    """(index of the latest clip starting before each time, whether the time falls within that
    clip's true window: its 1 s plus TRUE_AFTER_S)."""
    j = np.searchsorted(starts, times, side="right") - 1
    inside = (j >= 0) & (times - starts[np.maximum(j, 0)] <= 1.0 + TRUE_AFTER_S) if len(starts) else j >= 0
    return j, inside


def keyword_outcome(fire_times: np.ndarray, starts: np.ndarray) -> tuple:
    """(hits, false accept times) of one keyword: its detection times against the start times of
    its own clips in the stream; false detections less than MERGE_S apart count once (the first)."""
    j, inside = _latest_within(starts, fire_times)
    false = fire_times[~inside]
    return len(np.unique(j[inside])), false[np.diff(false, prepend=-np.inf) >= MERGE_S]


def event_sources(events: list, used: dict) -> list:
    """Which clip each event of a stream is, as 'keyword:i' / 'unknown:i' (build's `used` lists
    the clips in the order they were laid)."""
    order = {kind: iter(ids) for kind, ids in used.items()}
    return [f"{kind}:{next(order[kind])}" for kind in ("unknown" if c == CLASSES.index(UNKNOWN) else "keyword"
                                                         for _, c in events)]


def false_accept_sources(times, smoothed, events, sources, refractory: int, chosen: dict) -> list:
    """The clip behind each false accept of a stream at per-keyword thresholds `chosen`: the word
    (any class) whose window it falls in, or 'noise' between words. Clips recur in a stream, so
    false accepts cluster on the few confusable ones; this says how much."""
    classes, starts_all = np.array([c for _, c in events], dtype=int), np.array([t for t, _ in events])
    out = []
    for k in KEYWORDS:
        fire = times[stream.triggers(smoothed[:, CLASSES.index(k)], chosen[k], refractory)]
        _, false = keyword_outcome(fire, starts_all[classes == CLASSES.index(k)])
        j, inside = _latest_within(starts_all, false)
        out += [sources[i] if ok else "noise" for i, ok in zip(j, inside)]
    return out


def source_summary(sources: list) -> dict:
    """How concentrated false accepts are: distinct word clips behind them, the most from one, and
    how many fell on background noise alone."""
    words = [s for s in sources if s != "noise"]
    counts = np.unique(words, return_counts=True)[1] if words else np.array([0])
    return {"false_accepts": len(sources), "from_noise": len(sources) - len(words),
            "distinct_clips": len(set(words)), "most_from_one_clip": int(counts.max())}


def sweep(times, smoothed, events, refractory: int, thresholds=THRESHOLDS) -> dict:
    """{keyword: {"hits", "false_accepts": [per threshold], "events"}} of one scored stream."""
    out = {}
    classes = np.array([c for _, c in events], dtype=int)
    starts_all = np.array([s for s, _ in events])
    for k in KEYWORDS:
        kc = CLASSES.index(k)
        starts = starts_all[classes == kc]
        hits, fas = zip(*(keyword_outcome(times[stream.triggers(smoothed[:, kc], thr, refractory)], starts)
                          for thr in thresholds))
        out[k] = {"hits": np.array(hits), "false_accepts": np.array([len(f) for f in fas]), "events": len(starts)}
    return out


def add(a: dict, b: dict) -> dict:
    """Two sweeps' counts summed (the streams of one split)."""
    return {k: {f: a[k][f] + b[k][f] for f in ("hits", "false_accepts", "events")} for k in a}


def choose_thresholds(counts: dict, hours: float, target_fa_per_hour: float, thresholds=THRESHOLDS) -> dict:
    """Per keyword, the lowest swept threshold (fewest misses) whose false accepts per hour stay
    within target_fa_per_hour / number of keywords: the target holds for all keywords together.
    Where none does, the highest threshold."""
    per_keyword = target_fa_per_hour / len(KEYWORDS)
    chosen = {}
    for k, c in counts.items():
        ok = np.flatnonzero(c["false_accepts"] / hours <= per_keyword)
        chosen[k] = float(thresholds[ok[0] if len(ok) else -1])
    return chosen


def at(counts: dict, hours: float, chosen: dict, thresholds=THRESHOLDS) -> dict:
    """Miss rate and false accepts per hour at per-keyword thresholds, per keyword and overall
    (misses: macro mean over keywords; false accepts per hour: summed over keywords, i.e. how often
    the device fires wrongly at all), each overall figure with its 95% interval: exact Poisson for
    the false-accept count, Wilson for the misses pooled over keywords (their word counts are
    near-equal, so it brackets the macro rate; optimistic where keyword clips recur in the stream)."""
    per = {}
    for k, c in counts.items():
        i = int(np.flatnonzero(np.isclose(thresholds, chosen[k]))[0])
        misses = c["events"] - int(c["hits"][i])
        per[k] = {"threshold": chosen[k], "events": c["events"], "misses": misses,
                  "miss_rate": misses / c["events"] if c["events"] else float("nan"),
                  "false_accepts": int(c["false_accepts"][i]), "fa_per_hour": c["false_accepts"][i] / hours}
    false_accepts = sum(p["false_accepts"] for p in per.values())
    miss_lo, miss_hi = metrics.wilson(sum(p["misses"] for p in per.values()), sum(p["events"] for p in per.values()))
    fa_lo, fa_hi = metrics.poisson_rate(false_accepts, hours)
    return {"miss_rate": float(np.nanmean([p["miss_rate"] for p in per.values()])), "miss_rate_lo": miss_lo,
            "miss_rate_hi": miss_hi, "fa_per_hour": false_accepts / hours, "fa_per_hour_lo": fa_lo,
            "fa_per_hour_hi": fa_hi, "false_accepts": false_accepts, "per_keyword": per}


def det_rows(counts: dict, hours: float, thresholds=THRESHOLDS) -> list:
    """DET curve at one threshold for every keyword: macro miss rate and total false accepts per hour."""
    return [{"threshold": float(thr), **{m: v for m, v in at(counts, hours, dict.fromkeys(counts, thr), thresholds).items()
                                          if m in ("miss_rate", "fa_per_hour")}} for thr in thresholds]


def plot_det(curves: dict, points: dict, title: str, path) -> None:
    """Miss rate against false accepts per hour, one curve per model (one threshold for all
    keywords) and a marker at its chosen per-keyword operating point."""
    fig, ax = plt.subplots(figsize=(6.5, 4.6), dpi=150)
    for (label, rows), color in zip(curves.items(), ["tab:blue", "crimson", "tab:green"]):
        ax.plot([r["fa_per_hour"] for r in rows], [100 * r["miss_rate"] for r in rows], color=color, lw=1.6, label=label)
        p = points[label]
        ax.plot(p["fa_per_hour"], 100 * p["miss_rate"], "o", color=color, ms=7,
                label=f"{label}: operating point ({p['fa_per_hour']:.2g} FA/h, {100 * p['miss_rate']:.1f}% misses)")
    ax.set_xscale("symlog", linthresh=0.1)  # symlog: 0 false accepts per hour stays on the plot
    ax.set_yscale("symlog", linthresh=1.0)
    ax.set_ylim(-0.05, 100)
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))  # 0.1, 1, 10 rather than 10^-1, 10^0, 10^1
    ax.set_xlabel("false accepts per hour (all ten keywords, symlog)")
    ax.set_ylabel("miss rate (% of keyword words, macro, symlog)")
    ax.set_title(title + "\ncurves: one threshold for every keyword; dots: per-keyword thresholds from validation",
                 fontsize=8)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)

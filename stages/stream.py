"""stream: the teacher and the deployed INT8 model as streaming detectors on long streams of
held-out audio -> metrics/stream.json (false accepts per hour and miss rate per keyword, the
streams' make-up), metrics/stream/det_*.csv and memo/stream_det.png (DET: misses vs FA/h).
Thresholds are chosen on validation streams and reported on test streams."""
import time
from pathlib import Path

import numpy as np
import pandas as pd

from kws import atomic, chain, dataset, evaluation, io, params, stream, stream_eval
from kws.sources import KEYWORDS

DET_DIR = Path("metrics/stream")
PLOT = Path("memo/stream_det.png")


def score_split(split, wave, manifest, scorers, cfg, p, rng):
    """(counts {model: summed sweep}, counts per SNR {snr: {model: sweep}}, make-up, scored streams
    [(times, {model: smoothed posteriors}, events, event sources)]) of one split's streams."""
    pool = stream_eval.pools(wave, manifest, split)
    seconds = 60.0 * p["minutes"][split] / len(p["snr_db"])
    refractory = stream.refractory_windows(p["refractory_s"], p["hop_ms"])
    total, per_snr, used, n_events = {}, {}, {"keyword": set(), "unknown": set()}, {"keyword": 0, "unknown": 0}
    scored = []
    for snr in p["snr_db"]:
        w, events, u = stream_eval.build(pool, seconds, snr, rng, tuple(p["gap_s"]), p["keyword_share"])
        times, probs = stream.posteriors(scorers, w, cfg, p["hop_ms"])
        smoothed = {n: stream.smooth(pr, p["smooth_windows"]) for n, pr in probs.items()}
        per_snr[snr] = {n: stream_eval.sweep(times, sm, events, refractory) for n, sm in smoothed.items()}
        scored.append((times, smoothed, events, stream_eval.event_sources(events, u)))
        total = {n: stream_eval.add(total[n], s) if n in total else s for n, s in per_snr[snr].items()}
        for kind in used:
            used[kind] |= set(u[kind])
            n_events[kind] += len(u[kind])
    makeup = {"hours": seconds * len(p["snr_db"]) / 3600, "snr_db": p["snr_db"], "minutes_per_snr": seconds / 60,
              "keyword_words": n_events["keyword"], "unknown_words": n_events["unknown"],
              "distinct_keyword_clips": len(used["keyword"]), "keyword_clips_in_split": len(pool["keyword"]),
              "distinct_unknown_clips": len(used["unknown"]), "unknown_clips_in_split": len(pool["unknown"]),
              "noise_clips": len(pool["noise"]),
              "uses_per_keyword_clip": n_events["keyword"] / max(1, len(used["keyword"])),
              "layout": f"noise gaps of {p['gap_s'][0]:g}-{p['gap_s'][1]:g} s, then a keyword ({p['keyword_share']:.0%}) "
                        f"or an unknown word, each word scaled to {stream_eval.SPEECH_RMS} RMS; background: the "
                        f"{split} split's silence clips (its own time range of the noise recordings)"}
    return total, per_snr, makeup, scored


def check(p):
    """The stream block by the schema (kws.params), plus what it cannot say: gap_s is [min, max]."""
    p = params.check({"stream": p}, "stream")
    if not p["gap_s"][0] <= p["gap_s"][1]:
        raise ValueError(f"stream.gap_s must be [min, max] seconds with min <= max, got {p['gap_s']}")
    return p


def main():
    p = io.params("stream")
    check(p)
    t0 = time.time()
    cfg = io.feature_config()
    wave, manifest, _ = dataset.load("data/dataset")
    summary = io.read_json("metrics/summary.json")
    deployed = summary["deployed"]
    paths = {"teacher": chain.MODELS["teacher"][0], deployed: chain.MODELS[deployed][0]}
    scorers = {n: evaluation.logits_fn(path, cfg) for n, path in paths.items()}
    # one generator per split: the test streams stay the same audio whatever the validation settings
    val, _, val_makeup, _ = score_split("val", wave, manifest, scorers, cfg, p, np.random.default_rng([p["seed"], 0]))
    test, test_snr, test_makeup, test_streams = score_split("test", wave, manifest, scorers, cfg, p,
                                              np.random.default_rng([p["seed"], 1]))
    hours_val, hours_test = val_makeup["hours"], test_makeup["hours"]
    per_snr_hours = hours_test / len(p["snr_db"])
    models, curves, points = {}, {}, {}
    DET_DIR.mkdir(parents=True, exist_ok=True)
    PLOT.parent.mkdir(parents=True, exist_ok=True)  # the stream stage runs before the memo stage makes memo/
    refractory = stream.refractory_windows(p["refractory_s"], p["hop_ms"])
    for n, path in paths.items():
        thr = stream_eval.choose_thresholds(val[n], hours_val, p["target_fa_per_hour"])
        sources = [src for times, smoothed, events, ids in test_streams
                   for src in stream_eval.false_accept_sources(times, smoothed[n], events, ids, refractory, thr)]
        models[n] = {"path": path, "label": summary["models"][n]["label"], "thresholds": thr,
                     "test": {**stream_eval.at(test[n], hours_test, thr),
                              "false_accept_sources": stream_eval.source_summary(sources)},
                     "val": {k: v for k, v in stream_eval.at(val[n], hours_val, thr).items() if k != "per_keyword"},
                     "test_per_snr": {str(snr): {k: v for k, v in stream_eval.at(s[n], per_snr_hours, thr).items()
                                                 if k != "per_keyword"} for snr, s in test_snr.items()}}
        curves[models[n]["label"]] = rows = stream_eval.det_rows(test[n], hours_test)
        points[models[n]["label"]] = models[n]["test"]
        atomic.write_text(DET_DIR / f"det_{'teacher' if n == 'teacher' else 'deployed'}.csv",
                          pd.DataFrame(rows).to_csv(index=False))
    stream_eval.plot_det(curves, points, f"Streaming DET on {hours_test:.2g} h of test streams "
                         f"(hop {p['hop_ms']:g} ms, SNR {', '.join(f'{s:g}' for s in p['snr_db'])} dB)", PLOT)
    io.write_json("metrics/stream.json", {
        "deployed": deployed,
        "detector": {k: p[k] for k in ("hop_ms", "smooth_windows", "refractory_s")},
        "target_fa_per_hour": p["target_fa_per_hour"],
        "rule": f"per keyword, the lowest threshold whose false accepts on the validation streams stay within "
                f"{p['target_fa_per_hour']:g}/h over all {len(KEYWORDS)} keywords "
                f"({p['target_fa_per_hour'] / len(KEYWORDS):g}/h each); reported on the test streams",
        "scoring": f"true from a keyword clip's start to {stream_eval.TRUE_AFTER_S:g} s after its end; false accepts "
                   f"of a keyword within {stream_eval.MERGE_S:g} s merged; miss rate macro over keywords, "
                   "false accepts per hour summed over keywords",
        "streams": {"val": val_makeup, "test": test_makeup},
        "models": models, "effort": {"wall_s": time.time() - t0}})
    for n, m in models.items():
        print(f"[stream] {n}: test {m['test']['fa_per_hour']:.2f} false accepts/h, {m['test']['miss_rate']:.1%} misses "
              f"(validation {m['val']['fa_per_hour']:.2f}/h, {m['val']['miss_rate']:.1%})", flush=True)
    print(f"[stream] {hours_val:.2g} h validation + {hours_test:.2g} h test streams, {test_makeup['distinct_keyword_clips']} "
          f"distinct test keyword clips, in {time.time() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    main()

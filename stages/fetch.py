"""fetch: one data source -> data/dataset (int16 audio matrix, 12-class manifest, noise, report)."""
import time
from pathlib import Path

from kws import dataset, io, silence, sources, workspace
from kws.data_source import corpus_root, extra_train_records, synthetic_train_records

OUT = Path("data/dataset")


def main():
    p = workspace.data_folders(io.params("data"), Path.cwd())
    t0 = time.time()
    mixed = synthetic_train_records(p)
    root, noise_root = corpus_root(p)
    print(f"[fetch] scanning {root}", flush=True)
    origin = sources.SYNTHETIC if p["source"] == "synthetic" else sources.REAL
    records, scan_report = sources.scan(root, p["val_percent"], p["test_percent"], origin, p["fold"])
    # Labelled with the main source's train split, so both share its unknown-word share.
    extra, extra_report = extra_train_records(p, records)
    records += extra
    noise_paths = sources.noise_files(noise_root)
    records, silence_report = silence.place_provided(records, noise_paths)
    labelled, need_silence = sources.assign_labels(records, p["silence_percent"], p["unknown_percent"], p["seed"])
    # The synthetic clips are labelled as a pool of their own, and their silence drawn after the
    # real splits', so validation and test are the same clips with or without the mix.
    mixed_labelled, mixed_silence = sources.assign_labels(mixed, p["silence_percent"], p["unknown_percent"], p["seed"])
    wave, manifest, noise, report = dataset.build(labelled + mixed_labelled,
                                                  [*need_silence.items(), *mixed_silence.items()],
                                                  noise_paths, seed=p["seed"], max_bad_percent=p["max_bad_percent"])
    # No timings in the report: it is part of a DVC output, whose hash must not change when the
    # data does not (or every downstream stage would rerun).
    report = {"source": p["source"], **scan_report, "extra_train_root": extra_report,
              "provided_silence": silence_report, **report}
    dataset.save(OUT, wave, manifest, noise, report)
    print(f"[fetch] {problem_line(report)}", flush=True)
    dataset.check_classes(report)
    wall_s = time.time() - t0
    problems = {"bad_files_skipped": report["bad_files_skipped"], "bad_file_kinds": report["bad_file_kinds"],
                "resampled": report["resampled"], "listed_but_missing": report["listed_but_missing"]}
    io.write_json("metrics/fetch.json", {"clips": report["clips"], **problems, "effort": {"wall_s": wall_s}})
    for split in sources.SPLITS:
        print(f"[fetch] {split:5s} {sum(report['counts'][split].values()):6d} clips", flush=True)
    print(f"[fetch] wrote {OUT}/ in {wall_s:.0f} s", flush=True)


def problem_line(report):
    """One line on what was wrong with the source; the files and reasons are in report.json."""
    def detail(kinds):
        return f" ({', '.join(f'{n} {kind}' for kind, n in kinds.items())})" if kinds else ""
    return (f"skipped {report['bad_files_skipped']} bad files{detail(report['bad_file_kinds'])}; "
            f"kept {report['resampled']} files at other sample rates{detail(report['resampled_kinds'])}; "
            f"{report['listed_but_missing']} files named in the split lists are missing "
            f"(see {OUT / 'report.json'})")


if __name__ == "__main__":
    main()

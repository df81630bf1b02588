"""package: the firmware hand-off of the deployed model (metrics/summary.json "deployed"): its
.tflite, C array, op resolver, manifest.json (classes, I/O quantization, measured flash and arena,
validation thresholds, the front end as numbers) and golden vectors of real test clips
-> models/firmware/."""
from pathlib import Path

from kws import chain, dataset, firmware, io, package

OUT = Path("models/firmware")


def main():
    p = io.params("package")
    name = io.read_json("metrics/summary.json")["deployed"]
    tflite = chain.tflite_file(name)  # written by the firmware stage
    key = firmware.model_key(tflite)
    firmware_metrics = io.read_json("metrics/firmware.json")
    details = io.read_json(f"metrics/eval/{name}/details.json")
    detect = package.detection(details["far_at_frr_val_thresholds"]["per_keyword"], details["max_frr"])
    wave, manifest, _ = dataset.load("data/dataset")
    rows = package.golden_rows(manifest, p["golden_clips"])
    clip_rows = manifest.loc[rows, ["path", "split", "label", "source"]].to_dict("records")
    out = package.write(OUT, name, tflite, firmware_metrics["models"][key],
                        firmware_metrics["measured_on"], detect, io.feature_config(), wave[rows], clip_rows)
    print(f"[package] {name} ({tflite}), {len(rows)} golden clips -> {out}/", flush=True)


if __name__ == "__main__":
    main()

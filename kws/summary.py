"""One table of every model on the curve: accuracy and FAR (from the evaluate stages), INT8
flash, peak SRAM, MACs and latency (from the ONNX files), and cumulative effort (from each
stage's own metrics); which model is deployed and why (validation figures only); and paired tests
of the comparisons the memo draws. The memo reads only this."""
from pathlib import Path

import pandas as pd

from kws import chain, checkpoint, firmware, footprint, io, metrics, models

METRICS = Path("metrics")


def effort(stages):
    """Clip-epochs and wall seconds summed over the stages that led to a model."""
    total = {"clip_epochs": 0, "wall_s": 0.0, "steps": []}
    for s in stages:
        e = io.read_json(METRICS / f"{s}.json")["effort"]
        total["clip_epochs"] += int(e.get("clip_epochs", 0))
        total["wall_s"] += float(e["wall_s"])
        total["steps"].append(s)
    return total


def model_row(name, latency_runs, firmware_metrics):
    """One model's figures. Flash and arena twice: estimated from the integer ONNX graph (int8_bytes,
    sram_*) and measured on its .tflite by TFLite Micro (tflite_bytes, tflm_arena_bytes); precision,
    for an INT8 model, the activations its .tflite carries (int8 or 16x8)."""
    _, _, step, stages = chain.MODELS[name]
    n_params = models.n_params(checkpoint.load(chain.checkpoint_file(name))[0])
    int8 = footprint.summarize(chain.int8_file(name), n_runs=latency_runs)
    measured = firmware.measured_figures(firmware_metrics, chain.int8_file(name))
    head = io.read_json(chain.eval_file(name))
    precision = measured["precision"] if name in chain.INT8 else "fp32"
    return {"label": chain.label(name, precision), "step": step, "precision": precision,
            "params": n_params, "macs": int8["macs"], "fp32_bytes": 4 * n_params,
            "int8_bytes": int8["flash"]["total"], "sram_liveness": int8["sram_liveness"]["bytes"],
            "sram_planned": int8["sram_planned"], "tflite_bytes": measured["flash_bytes_measured"],
            "tflm_arena_bytes": measured["arena_bytes_measured"],
            "latency_fp32_ms": footprint.latency_ms(chain.fp32_file(name), n_runs=latency_runs)["median_ms"],
            "latency_int8_ms": int8["latency"]["median_ms"],
            **head, "effort": effort(stages)}


def selection(rows, budget_bytes, arena_budget_bytes):
    """The deployed model and why: of the INT8 models whose .tflite fits the flash budget and whose
    TFLM tensor arena fits the RAM budget (both measured), the highest validation top-1, then the
    lowest validation FAR. Test figures play no part, so they stay unbiased. A 16x8 model competes
    like any other: its .tflite carries the precision it was scored at, and its measured bytes are
    the 16-bit ones."""
    candidates = {n: {"tflite_bytes": rows[n]["tflite_bytes"], "tflm_arena_bytes": rows[n]["tflm_arena_bytes"],
                      "fits_budget": (rows[n]["tflite_bytes"] <= budget_bytes
                                      and rows[n]["tflm_arena_bytes"] <= arena_budget_bytes),
                      "precision": rows[n]["precision"],
                      "val_top1": rows[n]["val_top1"], "val_far_macro": rows[n]["val_far_macro"]}
                  for n in chain.INT8}
    fitting = [n for n, c in candidates.items() if c["fits_budget"]]
    if not fitting:
        sizes = ", ".join(f"{n} {c['tflite_bytes']} B flash / {c['tflm_arena_bytes']} B arena ({c['precision']})"
                          for n, c in candidates.items())
        raise ValueError(f"no INT8 model fits distill.budget_bytes={budget_bytes} and distill.arena_budget_bytes="
                         f"{arena_budget_bytes} as measured on its .tflite ({sizes}); pick a smaller student, or "
                         "raise quantize.max_int8_loss so that fewer models go to 16-bit activations (16x8)")
    def key(n):
        return candidates[n]["val_top1"], -candidates[n]["val_far_macro"]
    best = max(fitting, key=key)  # on a tie, the first in chain order
    return best, {"rule": ".tflite within budget_bytes (flash) and TFLM arena within arena_budget_bytes (RAM), "
                          "highest validation top-1, then lowest validation FAR, then chain order",
                  "tied_with": [n for n in fitting if n != best and key(n) == key(best)],
                  "candidates": candidates}


def per_clip_correct(name):
    """Which test clips model `name` got right, in split order (its confusion rows, one per clip)."""
    rows = pd.read_csv(METRICS / "eval" / name / "confusion.csv")
    return (rows["actual"] == rows["predicted"]).to_numpy()


def paired_tests(deployed_name):
    """Exact McNemar tests, on the same test clips, of the comparisons the memo draws."""
    pairs = {"deployed_vs_teacher": (deployed_name, "teacher"), "kd_vs_nokd": ("student_kd", "student_nokd"),
             "qat_vs_ptq": ("student_qat", "student_ptq")}
    return {key: {"a": a, "b": b, **metrics.mcnemar(per_clip_correct(a), per_clip_correct(b))}
            for key, (a, b) in pairs.items()}


def build(dataset_report, firmware_metrics, max_frr, budget_bytes, arena_budget_bytes, latency_runs=200):
    rows = {name: model_row(name, latency_runs, firmware_metrics) for name in chain.MODELS}
    best, why = selection(rows, budget_bytes, arena_budget_bytes)
    counts = dataset_report["counts"]
    return {"dataset": {"source": dataset_report["source"], "root": dataset_report["root"],
                        "split_by": dataset_report["split_by"],
                        **{f"{s}_clips": sum(counts[s].values()) for s in ("train", "val", "test")}},
            "max_frr": max_frr, "budget_bytes": budget_bytes,
            "arena_budget_bytes": arena_budget_bytes, "measured_on": firmware_metrics["measured_on"], "deployed": best, "selection": why,
            "paired_tests": paired_tests(best), "models": rows}

"""One table of every model on the curve: accuracy and FAR (from the evaluate stages), INT8
flash, peak SRAM, MACs and latency (from the ONNX files), and cumulative effort (from each
stage's own metrics). The memo reads only this."""
from pathlib import Path

from kws import chain, checkpoint, footprint, io, models

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


def model_row(name, latency_runs):
    _, label, step, stages = chain.MODELS[name]
    n_params = models.n_params(checkpoint.load(chain.checkpoint_file(name))[0])
    int8 = footprint.summarize(chain.int8_file(name), n_runs=latency_runs)
    head = io.read_json(METRICS / "eval" / f"{name}.json")
    return {"label": label, "step": step, "precision": "int8" if name in chain.INT8 else "fp32",
            "params": n_params, "macs": int8["macs"], "fp32_bytes": 4 * n_params,
            "int8_bytes": int8["flash"]["total"], "sram_liveness": int8["sram_liveness"]["bytes"],
            "sram_planned": int8["sram_planned"],
            "latency_fp32_ms": footprint.latency_ms(chain.fp32_file(name), n_runs=latency_runs)["median_ms"],
            "latency_int8_ms": int8["latency"]["median_ms"],
            **head, "effort": effort(stages)}


def deployed(rows):
    """The better INT8 student: higher top-1, then lower FAR."""
    return max(chain.INT8, key=lambda n: (rows[n]["top1"], -rows[n]["far_macro"]))


def build(dataset_report, max_frr, budget_bytes, latency_runs=200):
    rows = {name: model_row(name, latency_runs) for name in chain.MODELS}
    best = deployed(rows)
    if rows[best]["int8_bytes"] > budget_bytes:
        raise ValueError(f"deployed model {best} takes {rows[best]['int8_bytes']} bytes of flash as INT8, over "
                         f"distill.budget_bytes={budget_bytes}; pick a smaller student")
    counts = dataset_report["counts"]
    return {"dataset": {"source": dataset_report["source"], "root": dataset_report["root"],
                        "split_by": dataset_report["split_by"],
                        **{f"{s}_clips": sum(counts[s].values()) for s in ("train", "val", "test")}},
            "max_frr": max_frr, "budget_bytes": budget_bytes, "deployed": best, "models": rows}

"""summary: every model's accuracy, FAR, footprint and effort in one table -> metrics/summary.json
(what `dvc metrics diff` compares between experiments) and metrics/summary.csv."""
import pandas as pd

from kws import atomic, io, summary


def main():
    d, max_frr = io.params("distill"), io.params("evaluate")["max_frr"]
    s = summary.build(io.read_json("data/dataset/report.json"), io.read_json("metrics/firmware.json"), max_frr,
                      d["budget_bytes"], d["arena_budget_bytes"])
    io.write_json("metrics/summary.json", s)
    table = pd.DataFrame.from_dict(s["models"], orient="index").drop(columns=["effort", "label"])
    table["clip_epochs"] = [r["effort"]["clip_epochs"] for r in s["models"].values()]
    table["wall_s"] = [r["effort"]["wall_s"] for r in s["models"].values()]
    atomic.write_text("metrics/summary.csv", table.to_csv(index_label="model", float_format="%.6g"))
    cols = ["tflite_bytes", "int8_bytes", "tflm_arena_bytes", "sram_planned", "macs", "val_top1", "top1", "far_macro", "clip_epochs"]
    print(table[cols].to_string(float_format=lambda v: f"{v:.4f}"), flush=True)
    print(f"[summary] deployed: {s['deployed']} (best validation top-1 within the flash and RAM budgets, int8 as its .tflite) "
          "-> metrics/summary.json", flush=True)


if __name__ == "__main__":
    main()

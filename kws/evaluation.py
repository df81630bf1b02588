"""Score one model file (torch checkpoint or ONNX) on the shared val/test features."""
from pathlib import Path

import pandas as pd

from kws import atomic, checkpoint, export, io, metrics, models


def logits_fn(model_path, feature_config):
    """A function features -> logits (numpy) for a .pt checkpoint or an .onnx file; the model is
    loaded (the ONNX session opened) once, however often the function is called."""
    path = Path(model_path)
    if path.suffix == ".onnx":
        sess = export.session(path)
        return lambda x: export.ort_logits(sess, x)
    model, _ = checkpoint.load(path, feature_config)
    return lambda x: models.logits(model, x).numpy()


def headline(m):
    """The few figures worth a row in `dvc metrics diff`, each test rate with its 95% interval, and the
    validation figures models are chosen by; the rest goes to details.json."""
    v, t, val = m["far_at_frr_val_thresholds"], m["far_at_frr_test_thresholds"], m["validation"]
    return {"top1": m["top1"], "top1_lo": m["top1_ci"][0], "top1_hi": m["top1_ci"][1],
            "far_macro": v["far_macro"], "far_macro_lo": v["far_macro_ci"][0], "far_macro_hi": v["far_macro_ci"][1],
            "frr_macro": v["frr_macro"], "far_worst": v["far_worst"], "worst_keyword": v["worst_keyword"],
            "far_filler": v["far_filler_macro"], "far_macro_test_thr": t["far_macro"],
            "val_top1": val["top1"], "val_far_macro": val["far_at_frr"]["far_macro"],
            "test_clips": m["clips"], "val_clips": val["clips"]}  # what pooling speaker folds weighs by


def evaluate_model(model_path, out_dir, name, max_frr):
    """Write metrics/eval/<name>.json (headline), <out_dir>/<name>/ details, DET and confusion rows
    (test: confusion.csv; validation: val_confusion.csv; one row per clip in split order)."""
    cfg = io.feature_config()
    val_x, val_y = io.load_split("val")
    test_x, test_y = io.load_split("test")
    f = logits_fn(model_path, cfg)
    val_logits, test_logits = f(val_x), f(test_x)
    m, pred = metrics.evaluate(val_logits, val_y.numpy(), test_logits, test_y.numpy(), max_frr)
    d = Path(out_dir) / name
    d.mkdir(parents=True, exist_ok=True)
    det = metrics.det_rows(metrics.keyword_scores(test_logits), test_y.numpy())
    atomic.write_text(d / "det.csv", pd.DataFrame(det).to_csv(index=False))
    atomic.write_text(d / "confusion.csv", pd.DataFrame(metrics.confusion_rows(test_y.numpy(), pred)).to_csv(index=False))
    # validation clips too, so two settings can be compared clip by clip where they are chosen (scripts/fold_compare.py)
    atomic.write_text(d / "val_confusion.csv",
                      pd.DataFrame(metrics.confusion_rows(val_y.numpy(), val_logits.argmax(1))).to_csv(index=False))
    io.write_json(d / "details.json", {"model": str(model_path), "max_frr": max_frr, **m})
    head = headline(m)
    io.write_json(Path(out_dir) / f"{name}.json", head)
    return head

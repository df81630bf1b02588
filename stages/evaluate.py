"""evaluate NAME MODEL: top-1, per-class accuracy, FAR at the FRR budget (thresholds from val and
from test), with 95% intervals, DET curve and confusion matrix of one model on the test split; and
its validation top-1 and FAR, which the summary chooses the deployed model by."""
import sys

from kws import evaluation, io


def main(name, model_path):
    p = io.params("evaluate")
    head = evaluation.evaluate_model(model_path, "metrics/eval", name, p["max_frr"])
    print(f"[evaluate] {name}: top-1 {head['top1']:.4f} ({head['top1_lo']:.4f}-{head['top1_hi']:.4f})  "
          f"FAR@{p['max_frr']:.0%}FRR {head['far_macro']:.4f} ({head['far_macro_lo']:.4f}-{head['far_macro_hi']:.4f}) "
          f"(worst {head['far_worst']:.4f}; test FRR {head['frr_macro']:.4f}); validation top-1 {head['val_top1']:.4f} "
          f"-> metrics/eval/{name}.json", flush=True)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python stages/evaluate.py NAME MODEL_PATH")
    main(*sys.argv[1:])

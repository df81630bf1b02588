"""INT8 size of a model, counted the way the exported INT8 model stores it, so a student over
the flash budget is refused before hours of training, not after.

    python -m kws.budget models/student_kd.pt [--budget 51200]
"""
import argparse
import sys

import torch.nn as nn

from kws import checkpoint, models

BUDGET_BYTES = 51200  # 50 KB


def int8_bytes(model):
    """int8 weights + int32 bias per output channel (BN folded into the conv) + per-channel
    weight scale (4 B) and zero point (1 B) + one activation scale/zero point (5 B) per layer."""
    total = {"weights": 0, "biases": 0, "qparams": 0}
    for m in model.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear)):
            out = m.out_channels if hasattr(m, "out_channels") else m.out_features
            total["weights"] += m.weight.numel()
            total["biases"] += 4 * out
            total["qparams"] += 5 * out + 5
    total["total"] = sum(total.values())
    return total


def check(model, budget_bytes, what):
    size = int8_bytes(model)["total"]
    if size > budget_bytes:
        raise ValueError(f"{what}: {models.n_params(model)} parameters take {size} bytes as INT8, over the "
                         f"budget of {budget_bytes} bytes; pick a smaller distill.width or distill.student")
    return size


def main(argv=None):
    ap = argparse.ArgumentParser(description="INT8 size of a checkpoint against a flash budget")
    ap.add_argument("checkpoint")
    ap.add_argument("--budget", type=int, default=BUDGET_BYTES)
    a = ap.parse_args(argv)
    model, ckpt = checkpoint.load(a.checkpoint)
    size = int8_bytes(model)
    print(f"{a.checkpoint}: {ckpt['arch']}, {models.n_params(model)} parameters; INT8 weights {size['weights']} B, "
          f"biases {size['biases']} B, qparams {size['qparams']} B, total {size['total']} B "
          f"({'within' if size['total'] <= a.budget else 'OVER'} the {a.budget} B budget)")
    return 0 if size["total"] <= a.budget else 1


if __name__ == "__main__":
    sys.exit(main())

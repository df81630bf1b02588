"""INT8 flash and RAM of a model, counted the way the exported INT8 model stores and runs it, so a
student over either budget is refused before hours of training, not after.

    python -m kws.budget models/student_kd.pt [--budget 51200]
"""
import argparse
import sys
import tempfile
from pathlib import Path

import torch
import torch.nn as nn

from kws import checkpoint, export, footprint, models, quant

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


def arena_bytes(model, n_mels, n_frames):
    """Peak INT8 activation arena (greedy planner, as TFLM plans it) of the model's PTQ graph. The
    layer shapes set it, not the weights, so an untrained model gives the trained one's figure."""
    x = torch.randn(8, n_mels, n_frames, generator=torch.Generator().manual_seed(0))
    with tempfile.TemporaryDirectory() as d:
        fp32 = export.to_onnx(model.eval(), x, Path(d) / "model.fp32.onnx")
        int8 = quant.ptq(fp32, Path(d) / "model.int8.onnx", x.numpy())
        return footprint.peak_sram_planned(*footprint.activation_graph(int8))[0]


def check_arena(model, arena_budget_bytes, n_mels, n_frames, what):
    arena = arena_bytes(model, n_mels, n_frames)
    if arena > arena_budget_bytes:
        raise ValueError(f"{what}: its INT8 activations need a {arena}-byte arena, over distill.arena_budget_bytes="
                         f"{arena_budget_bytes}; pick a narrower distill.width or another distill.student, "
                         "or raise the budget if the device has the RAM")
    return arena


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

"""INT8 flash and RAM of a model, so a student over either budget is refused before hours of
training, not after: an estimate from the layers (weights, biases, quantization parameters) and
the measurement that decides, its .tflite converted and run by TFLite Micro.

    python -m kws.budget models/student_kd.pt [--budget 51200]
"""
import argparse
import copy
import sys
import tempfile
from pathlib import Path

import torch
import torch.nn as nn

from kws import checkpoint, features, firmware, models, quant

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


def measured(model, n_mels, n_frames):
    """(.tflite bytes, smallest TFLM tensor arena) of the model's INT8 form, converted and measured as
    the firmware stage does. Layer shapes set both, not weight values, so an untrained student gives
    its trained figures: checked before training, not after."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(16, n_mels, n_frames, generator=gen)
    model = copy.deepcopy(model).eval()
    for bn in (m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)):
        # Fresh BatchNorms fold to all-zero biases, which the converter stores once: trained ones do not.
        for t in (bn.weight, bn.bias, bn.running_mean):
            t.data = torch.rand(t.shape, generator=gen) + 0.5
    reference = quant.ptq_reference(model, x)
    with tempfile.TemporaryDirectory() as d:
        model_bytes = firmware.to_tflite(reference, x[:8], Path(d) / "student.int8.tflite").read_bytes()
    return len(model_bytes), firmware.smallest_arena(model_bytes, x[:2].numpy())


def check_measured(model, budget_bytes, arena_budget_bytes, n_mels, n_frames, what):
    """(flash, arena) of `model` as a .tflite run by TFLM; ValueError naming the parameter it breaks."""
    flash, arena = measured(model, n_mels, n_frames)
    if flash > budget_bytes:
        raise ValueError(f"{what}: its INT8 .tflite takes {flash} bytes of flash, over distill.budget_bytes="
                         f"{budget_bytes}; pick a smaller distill.width or distill.student")
    if arena > arena_budget_bytes:
        raise ValueError(f"{what}: TFLite Micro needs a {arena}-byte tensor arena to run it, over "
                         f"distill.arena_budget_bytes={arena_budget_bytes}; pick a narrower distill.width or another "
                         "distill.student, or raise the budget if the device has the RAM")
    return flash, arena


def main(argv=None):
    ap = argparse.ArgumentParser(description="INT8 flash of a checkpoint (estimated, and measured as a .tflite) "
                                             "against a flash budget")
    ap.add_argument("checkpoint")
    ap.add_argument("--budget", type=int, default=BUDGET_BYTES)
    a = ap.parse_args(argv)
    model, ckpt = checkpoint.load(a.checkpoint)
    size = int8_bytes(model)
    cfg = ckpt["feature_config"]
    flash, arena = measured(model, features.n_channels(cfg), features.n_frames(cfg))
    print(f"{a.checkpoint}: {ckpt['arch']}, {models.n_params(model)} parameters; estimate: INT8 weights "
          f"{size['weights']} B, biases {size['biases']} B, qparams {size['qparams']} B, total {size['total']} B; "
          f"measured: .tflite {flash} B, TFLM arena {arena} B "
          f"({'within' if flash <= a.budget else 'OVER'} the {a.budget} B budget)")
    return 0 if flash <= a.budget else 1


if __name__ == "__main__":
    sys.exit(main())

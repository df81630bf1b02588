"""Structured channel pruning with torch-pruning (DepGraph): whole channels leave every coupled
layer together (a block's conv2, its shortcut projection and the next block's inputs), so the
result is a smaller dense TC-ResNet that `models.arch_kwargs` can describe exactly."""
import torch
import torch.nn.functional as F
import torch_pruning as tp

IMPORTANCE = {
    "l1": lambda: tp.importance.MagnitudeImportance(p=1),
    "l2": lambda: tp.importance.MagnitudeImportance(p=2),
    "bn_scale": lambda: tp.importance.BNScaleImportance(),
    "taylor": lambda: tp.importance.TaylorImportance(),
}


# Above this torch-pruning would leave layers under one channel and skips them instead: 0.99 pruned
# nothing, and 0.95-0.97 kept more parameters than 0.9 did.
MAX_RATIO = 0.9


def _fraction(value, lo_open):
    number = not isinstance(value, bool) and isinstance(value, (int, float))
    return number and (0 < value if lo_open else 0 <= value) and value <= MAX_RATIO


def widths(ratio, wide_ratio=0.0):
    """The two intermediate widths, as fractions of the teacher's channels: prune.ratio removes that
    share at the narrow model, prune.wide_ratio at the wide one (0: halfway, so 0.5 -> (0.75, 0.5)
    and 0.6 -> (0.7, 0.4)). A wider teacher needs a wide_ratio of its own to land the pruned
    models at the same sizes (x1.5: 0.533 and 0.733 -> the x1.0 teacher's 0.7 and 0.4)."""
    if not _fraction(ratio, lo_open=True):
        raise ValueError(f"prune.ratio must be a number in (0, {MAX_RATIO}], the fraction of channels removed; "
                         f"got {ratio!r}")
    if not _fraction(wide_ratio, lo_open=False):
        raise ValueError(f"prune.wide_ratio must be a number in [0, {MAX_RATIO}], the fraction of channels removed "
                         f"at the wide model (0: halfway to prune.ratio); got {wide_ratio!r}")
    if wide_ratio >= ratio:
        raise ValueError(f"prune.wide_ratio ({wide_ratio}) must be under prune.ratio ({ratio}): the narrow model is "
                         f"cut from the wide one, so it removes more channels (0 puts the wide one halfway)")
    return {"wide": 1 - (wide_ratio or ratio / 2), "narrow": 1 - ratio}


def prune(model, width, n_frames, importance="l1", steps=1, calib=None):
    """Remove (1 - width) of the channels of every prunable layer, in `steps` iterative steps
    (importance re-estimated before each), tracing the model on clips of `n_frames` feature frames.
    Taylor importance needs `calib` = (features, labels) for its gradients. Returns the pruned
    model (modified in place)."""
    if importance not in IMPORTANCE:
        raise ValueError(f"prune.importance must be one of {sorted(IMPORTANCE)}, got {importance!r}")
    if not 0 < width < 1:
        raise ValueError(f"pruned width must be in (0, 1), got {width}")
    if steps < 1:
        raise ValueError(f"prune.steps must be >= 1, got {steps}")
    if importance == "taylor" and calib is None:
        raise ValueError("taylor importance needs calibration features for its gradients")
    model.eval()
    example = torch.zeros(1, model.stem.in_channels, n_frames)
    pruner = tp.pruner.MetaPruner(model, example, importance=IMPORTANCE[importance](), pruning_ratio=1 - width,
                                  iterative_steps=steps, ignored_layers=[model.fc])
    for _ in range(steps):
        if importance == "taylor":
            model.zero_grad()
            F.cross_entropy(model(calib[0]), calib[1]).backward()
        pruner.step()
    model.zero_grad(set_to_none=True)
    return model


def macs_and_params(model, n_frames):
    """MACs of one clip of `n_frames` feature frames, and parameters, as torch-pruning counts them."""
    macs, params = tp.utils.count_ops_and_params(model, torch.zeros(1, model.stem.in_channels, n_frames))
    return int(macs), int(params)

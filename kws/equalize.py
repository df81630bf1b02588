"""Exact per-channel rescaling between neighbouring layers of a TC-ResNet: cross-layer
equalization (Nagel et al. 2019, "Data-Free Quantization") before post-training quantization.

A conv + BN + ReLU whose output feeds only convs computes the same function when BN output
channel i is multiplied by s_i > 0 and every consumer's input-channel-i weights are divided by
s_i (ReLU is positively homogeneous: relu(s x) = s relu(x)). Equalization picks s_i so the
producer's folded weights of channel i and the consumers' weights reading it have the same range.
One channel whose activations run ~100x the others (a trained outlier, or one planted by the same
rescaling) then no longer sets a per-tensor int8 scale that erases every other channel.

Hand-written: torch's and onnxruntime's quantization tools have no equalization for 1-D convs
with BN (AIMET's is a heavy dependency for ~40 lines)."""
import copy

import torch

from kws.models import TCResNet


def scaling_pairs(model: TCResNet):
    """(producer conv, its BN, consumer convs) where the BN output goes through ReLU into the
    consumers alone: the stem into the first block (when that block has a shortcut conv, else the
    stem output also reaches its residual sum unscaled), and each block's conv1 into its conv2."""
    pairs = []
    first = model.blocks[0] if len(model.blocks) else None
    if first is not None and first.shortcut is not None:
        pairs.append((model.stem, model.stem_bn, [first.conv1, first.shortcut[0]]))
    pairs += [(b.conv1, b.bn1, [b.conv2]) for b in model.blocks]
    return pairs


@torch.no_grad()
def scale_channels(bn: torch.nn.BatchNorm1d, consumers, scale: torch.Tensor):
    """Multiply BN output channel i by scale[i] > 0 and divide the consumers' input-channel-i
    weights by it, in place: after a ReLU the model computes the same function."""
    if not bool((scale > 0).all()):
        raise ValueError("channel scales must be positive (ReLU commutes only with positive scaling)")
    bn.weight.mul_(scale)
    bn.bias.mul_(scale)
    for conv in consumers:
        conv.weight.div_(scale.view(1, -1, *([1] * (conv.weight.dim() - 2))))


def _folded_range(conv, bn):
    """Per output channel, the largest |weight| of the conv with BN folded in."""
    gain = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return conv.weight.abs().flatten(1).amax(1) * gain.abs()


def _input_range(consumers):
    """Per input channel, the largest |weight| any consumer applies to it."""
    return torch.stack([c.weight.abs().transpose(0, 1).flatten(1).amax(1) for c in consumers]).amax(0)


@torch.no_grad()
def equalize(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of `model` with every scaling pair equalized (s_i = sqrt(r_consumer / r_producer)):
    the same function, up to float rounding. Models other than TC-ResNet are returned as a copy,
    unchanged (BC-ResNet's sub-spectral norm has no such exact pair)."""
    model = copy.deepcopy(model).eval()
    if not isinstance(model, TCResNet):
        return model
    for conv, bn, consumers in scaling_pairs(model):
        r1, r2 = _folded_range(conv, bn), _input_range(consumers)
        live = (r1 > 0) & (r2 > 0)  # a dead channel keeps scale 1
        scale = torch.where(live, torch.sqrt(r2 / torch.where(live, r1, 1)), torch.ones_like(r1))
        scale_channels(bn, consumers, scale)
    return model

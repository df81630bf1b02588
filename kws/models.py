"""Keyword-spotting CNNs. Every model is rebuilt from (arch, kwargs) alone, so a checkpoint
records those two and a state dict; pruned models keep working because their kwargs list
the exact channel counts of every layer (see `arch_kwargs`).

Input to every model: log-mel features shaped [batch, n_mels, frames].
"""
import copy

import torch
import torch.nn as nn
import torch.nn.functional as F


class TCBlock(nn.Module):
    """TC-ResNet residual block: two temporal convs, 1x1 projection on the shortcut when the
    shape changes (Choi et al. 2019, Fig. 2)."""

    def __init__(self, c_in, c_mid, c_out, stride, kernel=9):
        super().__init__()
        self.conv1 = nn.Conv1d(c_in, c_mid, kernel, stride, kernel // 2, bias=False)
        self.bn1 = nn.BatchNorm1d(c_mid)
        self.conv2 = nn.Conv1d(c_mid, c_out, kernel, 1, kernel // 2, bias=False)
        self.bn2 = nn.BatchNorm1d(c_out)
        self.shortcut = None
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv1d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm1d(c_out))

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        s = x if self.shortcut is None else self.shortcut(x)
        return F.relu(y + s)


class TCResNet(nn.Module):
    """Temporal-convolution ResNet: mel bins are the input channels, convolution runs over time."""

    def __init__(self, n_mels, n_classes, stem, blocks, kernel=9):
        super().__init__()
        self.stem = nn.Conv1d(n_mels, stem, 3, 1, 1, bias=False)
        self.stem_bn = nn.BatchNorm1d(stem)
        layers, c = [], stem
        for c_mid, c_out, stride in blocks:
            layers.append(TCBlock(c, c_mid, c_out, stride, kernel))
            c = c_out
        self.blocks = nn.Sequential(*layers)
        self.fc = nn.Linear(c, n_classes)

    def features(self, x):
        """Last feature map before pooling; used for feature (FitNet) distillation."""
        return self.blocks(F.relu(self.stem_bn(self.stem(x))))

    def head(self, feats):
        return self.fc(feats.mean(dim=2))

    def forward(self, x):
        return self.head(self.features(x))


def tc_resnet_kwargs(depth, width, n_mels, n_classes):
    """kwargs for TC-ResNet8/14 at a width multiplier (paper widths 16-24-32-48)."""
    if depth not in (8, 14):
        raise ValueError(f"TC-ResNet depth must be 8 or 14, got {depth}")
    ch = [max(1, round(c * width)) for c in (16, 24, 32, 48)]
    plan = [(ch[1], 2), (ch[2], 2), (ch[3], 2)]
    if depth == 14:
        plan = [(ch[1], 2), (ch[1], 1), (ch[2], 2), (ch[2], 1), (ch[3], 2), (ch[3], 1)]
    return {"n_mels": n_mels, "n_classes": n_classes, "stem": ch[0], "blocks": [[c, c, s] for c, s in plan]}


class SubSpectralBN(nn.Module):
    """BatchNorm applied per frequency sub-band (BC-ResNet's SubSpectralNorm, Chang et al. 2021)."""

    def __init__(self, channels, n_sub):
        super().__init__()
        self.n_sub = n_sub
        self.bn = nn.BatchNorm2d(channels * n_sub)

    def forward(self, x):
        b, c, f, t = x.shape
        x = self.bn(x.reshape(b, c * self.n_sub, f // self.n_sub, t))
        return x.reshape(b, c, f, t)

    def affine(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(scale, shift) [C, n_sub]: the eval-mode norm as y = scale * x + shift per (channel, sub-band)."""
        bn = self.bn
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        shift = bn.bias - bn.running_mean * scale
        return scale.reshape(-1, self.n_sub), shift.reshape(-1, self.n_sub)


class FreqAffine(nn.Module):
    """y = x * scale + shift with constant scale, shift [1, C, F, 1]: what is left of a trained
    SubSpectralBN once its per-channel part is folded into the conv before it (see
    `BCBlock.fold_subspectral`). A constant Mul and Add are ops every int8 runtime quantizes;
    a BatchNorm behind a reshape is not (it stayed a float op)."""

    def __init__(self, scale, shift):
        super().__init__()
        self.scale = nn.Parameter(scale)
        self.shift = nn.Parameter(shift)

    def forward(self, x):
        return x * self.scale + self.shift


class Mean(nn.Module):
    """Mean over frequency (dims (2,)) or frequency and time (dims (2, 3)), dims kept. Exported as
    the equal average pool (`as_pool`, set by `deployable`): onnxruntime has no int8 ReduceMean,
    and TFLite's int8 AVERAGE_POOL_2D keeps the layout; in training mean() is the faster op
    (avg_pool2d's backward took ~12% of a BC-ResNet step on the CPU)."""

    def __init__(self, dims):
        super().__init__()
        self.dims, self.as_pool = dims, False

    def forward(self, x):
        if self.as_pool:
            return F.avg_pool2d(x, (x.shape[2], x.shape[3] if 3 in self.dims else 1))
        return x.mean(self.dims, keepdim=True)


class BCBlock(nn.Module):
    """Broadcasted residual block (Kim et al. 2021): a frequency-depthwise 2-D branch plus a
    temporal 1-D branch computed on the frequency-averaged map and broadcast back.

    SiLU is written x * sigmoid(x), the same math as F.silu in ops int8 exporters quantize
    (onnxruntime: Sigmoid, Mul; PT2E: see kws.quant)."""

    def __init__(self, c_in, c_out, stride, dilation, n_sub, freq):
        super().__init__()
        self.transition = c_in != c_out
        self.freq = freq  # frequency bins of this block's output
        self.pre = None
        if self.transition:
            self.pre = nn.Sequential(nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU())
        self.freq_dw = nn.Conv2d(c_out, c_out, (3, 1), (stride, 1), (1, 0), groups=c_out, bias=False)
        self.ssn = SubSpectralBN(c_out, n_sub)
        self.freq_mean = Mean((2,))
        self.time_dw = nn.Conv2d(c_out, c_out, (1, 3), 1, (0, dilation), (1, dilation), groups=c_out, bias=False)
        self.time_bn = nn.BatchNorm2d(c_out)
        self.time_pw = nn.Conv2d(c_out, c_out, 1, bias=False)

    def forward(self, x):
        if self.pre is not None:
            x = self.pre(x)
        f2 = self.ssn(self.freq_dw(x))
        f1 = self.time_bn(self.time_dw(self.freq_mean(f2)))
        f1 = self.time_pw(f1 * torch.sigmoid(f1))
        y = f1 + f2
        if not self.transition:
            y = y + x
        return F.relu(y)

    @torch.no_grad()
    def fold_subspectral(self):
        """Replace the (eval-mode) SubSpectralBN by exact integer-friendly ops. Its affine varies
        over sub-bands, so it cannot fold into the depthwise conv, whose kernel is shared across
        frequency; per channel, the largest-magnitude band's affine (a_k, b_k) does: conv weight
        * a_k, bias b_k. What is left, y = r * conv' + d with r = a / a_k (|r| <= 1) and
        d = b - r * b_k (0 in band k), is a FreqAffine; a single band leaves nothing (Identity)."""
        scale, shift = self.ssn.affine()
        k = scale.abs().argmax(1, keepdim=True)
        lead_scale, lead_shift = scale.gather(1, k), shift.gather(1, k)
        lead_scale = torch.where(lead_scale == 0, torch.ones_like(lead_scale), lead_scale)
        self.freq_dw.weight.mul_(lead_scale.view(-1, 1, 1, 1))
        self.freq_dw.bias = nn.Parameter(lead_shift.flatten().clone())
        if scale.shape[1] == 1:
            self.ssn = nn.Identity()
            return
        rel = scale / lead_scale
        band = self.freq // scale.shape[1]
        expand = lambda t: t.repeat_interleave(band, 1)[None, :, :, None]  # noqa: E731  [C, S] -> [1, C, F, 1]
        self.ssn = FreqAffine(expand(rel), expand(shift - rel * lead_shift))


class BCResNet(nn.Module):
    """BC-ResNet-style 2-D student: input [B, n_mels, T] is treated as a one-channel image."""

    def __init__(self, n_mels, n_classes, stem, stages, head, n_sub=4):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, stem, 5, (2, 1), 2, bias=False), nn.BatchNorm2d(stem), nn.ReLU())
        layers, c, f = [], stem, (n_mels + 1) // 2
        for c_out, n_blocks, stride, dilation in stages:
            for i in range(n_blocks):
                s = stride if i == 0 else 1
                sub = n_sub if (f // s) % n_sub == 0 else 1
                f_out = (f - 1) // s + 1
                layers.append(BCBlock(c, c_out, s, dilation, sub, f_out))
                c, f = c_out, f_out
        self.blocks = nn.Sequential(*layers)
        self.neck = nn.Sequential(
            nn.Conv2d(c, c, (5, 1), padding=(2, 0), groups=c, bias=False), nn.BatchNorm2d(c), nn.ReLU(),
            nn.Conv2d(c, head, 1, bias=False), nn.BatchNorm2d(head), nn.ReLU())
        self.pool = Mean((2, 3))
        self.fc = nn.Linear(head, n_classes)
        # Channels-last: the CPU's depthwise and 1x1 convs run ~1.5x faster on [B, F, T, C] memory.
        self.to(memory_format=torch.channels_last)

    def features(self, x):
        return self.neck(self.blocks(self.stem(x.unsqueeze(1))))

    def head(self, feats):
        return self.fc(self.pool(feats).flatten(1))

    def forward(self, x):
        return self.head(self.features(x))


def deployable(model: nn.Module) -> nn.Module:
    """The model as it is exported to ONNX, PTQ, QAT and .tflite: an eval-mode copy with every
    SubSpectralBN folded into exact integer-friendly ops (BCBlock.fold_subspectral) and every
    Mean an average pool; a model without a SubSpectralBN is returned as is. fp32 outputs are
    unchanged up to float rounding."""
    if not any(isinstance(m, SubSpectralBN) for m in model.modules()):
        return model
    model = copy.deepcopy(model).eval()
    for module in model.modules():
        if isinstance(module, BCBlock):
            module.fold_subspectral()
        if isinstance(module, Mean):
            module.as_pool = True
    return model


def bc_resnet_kwargs(width, n_mels, n_classes):
    """kwargs for BC-ResNet-w (base widths 8-12-16-20, head 32; BC-ResNet-1 has ~9k parameters)."""
    c = lambda n: max(1, round(n * width))  # noqa: E731
    stages = [[c(8), 2, 1, 1], [c(12), 2, 2, 2], [c(16), 4, 2, 4], [c(20), 4, 1, 8]]
    return {"n_mels": n_mels, "n_classes": n_classes, "stem": c(16), "stages": stages, "head": c(32)}


ARCHS = {"tc_resnet": TCResNet, "bc_resnet": BCResNet}


def build(arch, kwargs, seed=0):
    """The model with initial weights drawn from `seed` alone (the global RNG is left untouched),
    so a training run repeats exactly."""
    if arch not in ARCHS:
        raise ValueError(f"unknown architecture {arch!r}; expected one of {sorted(ARCHS)}")
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return ARCHS[arch](**kwargs)


def preset(name, width, n_mels, n_classes):
    """(arch, kwargs) for a named family: tc_resnet8, tc_resnet14, bc_resnet."""
    if name in ("tc_resnet8", "tc_resnet14"):
        return "tc_resnet", tc_resnet_kwargs(int(name[-2:].lstrip("t")), width, n_mels, n_classes)
    if name == "bc_resnet":
        return "bc_resnet", bc_resnet_kwargs(width, n_mels, n_classes)
    raise ValueError(f"unknown model preset {name!r}; expected tc_resnet8, tc_resnet14 or bc_resnet")


def arch_kwargs(model):
    """Read the exact layer widths back from a (possibly pruned) TC-ResNet."""
    if not isinstance(model, TCResNet):
        raise TypeError("only TC-ResNet models are pruned; got " + type(model).__name__)
    blocks = [[b.conv1.out_channels, b.conv2.out_channels, b.conv1.stride[0]] for b in model.blocks]
    return {"n_mels": model.stem.in_channels, "n_classes": model.fc.out_features,
            "stem": model.stem.out_channels, "blocks": blocks, "kernel": model.blocks[0].conv1.kernel_size[0]}


@torch.no_grad()
def logits(model, feats, batch_size=1024, device="cpu"):
    """Logits [N, classes] of a torch model (in eval mode) over features [N, C, T], in batches, on the CPU."""
    model.eval()
    return torch.cat([model(feats[i:i + batch_size].to(device)).float().cpu() for i in range(0, len(feats), batch_size)])


def n_params(model):
    return sum(p.numel() for p in model.parameters())

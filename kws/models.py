"""Keyword-spotting CNNs. Every model is rebuilt from (arch, kwargs) alone, so a checkpoint
records those two and a state dict; pruned models keep working because their kwargs list
the exact channel counts of every layer (see `arch_kwargs`).

Input to every model: log-mel features shaped [batch, n_mels, frames].
"""
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


class BCBlock(nn.Module):
    """Broadcasted residual block (Kim et al. 2021): a frequency-depthwise 2-D branch plus a
    temporal 1-D branch computed on the frequency-averaged map and broadcast back."""

    def __init__(self, c_in, c_out, stride, dilation, n_sub):
        super().__init__()
        self.transition = c_in != c_out
        self.pre = None
        if self.transition:
            self.pre = nn.Sequential(nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU())
        self.freq_dw = nn.Conv2d(c_out, c_out, (3, 1), (stride, 1), (1, 0), groups=c_out, bias=False)
        self.ssn = SubSpectralBN(c_out, n_sub)
        self.time_dw = nn.Conv2d(c_out, c_out, (1, 3), 1, (0, dilation), (1, dilation), groups=c_out, bias=False)
        self.time_bn = nn.BatchNorm2d(c_out)
        self.time_pw = nn.Conv2d(c_out, c_out, 1, bias=False)

    def forward(self, x):
        if self.pre is not None:
            x = self.pre(x)
        f2 = self.ssn(self.freq_dw(x))
        f1 = f2.mean(dim=2, keepdim=True)
        f1 = self.time_pw(F.silu(self.time_bn(self.time_dw(f1))))
        y = f1 + f2
        if not self.transition:
            y = y + x
        return F.relu(y)


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
                layers.append(BCBlock(c, c_out, s, dilation, sub))
                c, f = c_out, (f - 1) // s + 1
        self.blocks = nn.Sequential(*layers)
        self.neck = nn.Sequential(
            nn.Conv2d(c, c, (5, 1), padding=(2, 0), groups=c, bias=False), nn.BatchNorm2d(c), nn.ReLU(),
            nn.Conv2d(c, head, 1, bias=False), nn.BatchNorm2d(head), nn.ReLU())
        self.fc = nn.Linear(head, n_classes)

    def features(self, x):
        return self.neck(self.blocks(self.stem(x.unsqueeze(1))))

    def head(self, feats):
        return self.fc(feats.mean(dim=(2, 3)))

    def forward(self, x):
        return self.head(self.features(x))


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

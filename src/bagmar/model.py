"""ResNet-32 for CIFAR (SPEC §2): 3 stages x 5 basic blocks, option-A shortcuts."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class _BasicBlock(nn.Module):
    """A basic block, or ``members`` of them side by side (the channel axis holds one group per model)."""

    def __init__(self, in_planes: int, planes: int, stride: int, members: int = 1):
        super().__init__()
        self.members = members
        self.conv1 = nn.Conv2d(members * in_planes, members * planes, 3, stride, 1, bias=False, groups=members)
        self.bn1 = nn.BatchNorm2d(members * planes)
        self.conv2 = nn.Conv2d(members * planes, members * planes, 3, 1, 1, bias=False, groups=members)
        self.bn2 = nn.BatchNorm2d(members * planes)
        # Option A: subsample by 2 and zero-pad the new channels (within each model's group); no parameters.
        self.pad = planes - in_planes
        self.subsample = stride != 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x[:, :, ::2, ::2] if self.subsample else x
        if self.pad:
            b, _, h, w = shortcut.shape
            grouped = shortcut.reshape(b, self.members, -1, h, w)
            shortcut = F.pad(grouped, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2)).reshape(b, -1, h, w)
        return F.relu(out + shortcut)


def _stages(width: int, members: int = 1) -> nn.Sequential:
    """SPEC §2's 3 stages x 5 blocks of widths width x (1, 2, 4), stride 2 entering stages 2 and 3."""
    stages, in_planes = [], width
    for stage, planes in enumerate((width, 2 * width, 4 * width)):
        blocks = []
        for b in range(ResNet32.blocks_per_stage):
            blocks.append(_BasicBlock(in_planes, planes, 2 if (stage > 0 and b == 0) else 1, members))
            in_planes = planes
        stages.append(nn.Sequential(*blocks))
    return nn.Sequential(*stages)


class ResNet32(nn.Module):
    """``width`` is the first stage's channel count (16 in the paper); stages use width x (1, 2, 4).

    Kaiming-normal init of the backbone's conv weights; the classifier keeps nn.Linear's default
    init, as the released code builds it separately (SPEC §2).
    """

    blocks_per_stage = 5

    def __init__(self, num_classes: int = 100, width: int = 16):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.stages = _stages(width)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
        self.feature_dim = 4 * width
        self.classifier = nn.Linear(self.feature_dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.stages(x)
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self.classifier(x)


class _GroupedLinear(nn.Module):
    """K classifiers, block-diagonal: model k's features meet only model k's weights."""

    def __init__(self, members: int, in_features: int, out_features: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(members, out_features, in_features))
        self.bias = nn.Parameter(torch.empty(members, out_features))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """features (B, K, F) -> logits (K, B, C)."""
        return torch.einsum("bkf,kcf->kbc", features, self.weight) + self.bias[:, None, :]


class FusedResNet32(nn.Module):
    """K independent ResNet-32s computed as one network, so that one GPU kernel serves K models.

    Convolutions have ``groups=K``; each BatchNorm normalises K x C channels, each over its own
    model's batch only; the classifier is block-diagonal. Nothing couples the models: model k's
    output and gradients depend only on its own input and weights, so training the group with the
    sum of the K losses trains each model exactly as it would be trained alone (tests/test_fused.py).
    Build it from K ResNet32s (each initialised with its own seed) and take them back out with
    ``member``; parameter names mirror ResNet32's.
    """

    def __init__(self, members: int, num_classes: int = 100, width: int = 16):
        super().__init__()
        self.members = members
        self.num_classes, self.width = num_classes, width
        self.conv1 = nn.Conv2d(3 * members, width * members, 3, 1, 1, bias=False, groups=members)
        self.bn1 = nn.BatchNorm2d(width * members)
        self.stages = _stages(width, members)
        self.feature_dim = 4 * width
        self.classifier = _GroupedLinear(members, self.feature_dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (K, B, 3, H, W), model k's batch in x[k] -> logits (K, B, C)."""
        k, b, c, h, w = x.shape
        x = x.transpose(0, 1).reshape(b, k * c, h, w)
        if self.conv1.weight.is_contiguous(memory_format=torch.channels_last):
            x = x.contiguous(memory_format=torch.channels_last)
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.stages(x)
        features = F.adaptive_avg_pool2d(x, 1).reshape(b, k, self.feature_dim)
        return self.classifier(features)

    @classmethod
    def from_members(cls, models: list[ResNet32]) -> "FusedResNet32":
        first = models[0]
        fused = cls(len(models), first.classifier.out_features, first.conv1.out_channels)
        fused.to(first.classifier.weight.device)
        states = [m.state_dict() for m in models]
        packed = {}
        for name, target in fused.state_dict().items():
            if name.endswith("num_batches_tracked"):
                packed[name] = states[0][name]
            else:
                packed[name] = torch.stack([s[name] for s in states]).reshape(target.shape)
        fused.load_state_dict(packed)
        return fused

    def member_state_dict(self, k: int) -> dict[str, torch.Tensor]:
        """Model k's weights in ResNet32's layout (what a single training saves)."""
        with torch.device("meta"):
            shapes = {name: value.shape for name, value in ResNet32(self.num_classes, self.width).state_dict().items()}
        return {
            name: value.clone() if name.endswith("num_batches_tracked") else value.reshape(self.members, *shapes[name])[k].clone()
            for name, value in self.state_dict().items()
        }

    def member(self, k: int) -> ResNet32:
        model = ResNet32(self.num_classes, self.width).to(self.classifier.weight.device)
        model.load_state_dict(self.member_state_dict(k))
        return model

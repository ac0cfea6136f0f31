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


def stages(width: int, members: int = 1) -> nn.Sequential:
    """SPEC §2's 3 stages x 5 blocks of widths width x (1, 2, 4), stride 2 entering stages 2 and 3 (``members``
    models side by side as grouped convolutions: the fused engine's network)."""
    layers, in_planes = [], width
    for stage, planes in enumerate((width, 2 * width, 4 * width)):
        blocks = []
        for b in range(ResNet32.blocks_per_stage):
            blocks.append(_BasicBlock(in_planes, planes, 2 if (stage > 0 and b == 0) else 1, members))
            in_planes = planes
        layers.append(nn.Sequential(*blocks))
    return nn.Sequential(*layers)


class CosineClassifier(nn.Module):
    """LDAM-DRW's normalised classifier (Cao et al., NeurIPS 2019): scale * cos(feature, class weight), no bias.

    The scale s (30 in LDAM) sits here rather than in the loss, so that a model's logits are the values its
    loss sees and the post-hoc rules (PN, logit adjustment) get comparable inputs from every training.
    Initialised as the released NormedLinear: uniform(-1, 1) drawn as an (in, out) matrix, each class's
    vector renormalised to unit length (stored transposed, as nn.Linear stores its weight).
    """

    def __init__(self, in_features: int, out_features: int, scale: float):
        super().__init__()
        weight = torch.empty(in_features, out_features).uniform_(-1, 1).renorm_(2, 1, 1e-5).mul_(1e5)
        self.weight = nn.Parameter(weight.T.contiguous())
        self.scale = scale

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.scale * F.normalize(features, dim=-1) @ F.normalize(self.weight, dim=-1).T


class ResNet32(nn.Module):
    """``width`` is the first stage's channel count (16 in the paper); stages use width x (1, 2, 4).

    Kaiming-normal init of the backbone's conv weights; the classifier keeps nn.Linear's default
    init, as the released code builds it separately (SPEC §2). ``cosine_scale``: a CosineClassifier of
    that scale instead of the linear one (LDAM-DRW).
    """

    blocks_per_stage = 5

    def __init__(self, num_classes: int = 100, width: int = 16, cosine_scale: float | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.stages = stages(width)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
        self.feature_dim = 4 * width
        self.cosine_scale = cosine_scale
        if cosine_scale is None:
            self.classifier = nn.Linear(self.feature_dim, num_classes)
        else:
            self.classifier = CosineClassifier(self.feature_dim, num_classes, cosine_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.stages(x)
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self.classifier(x)

    def classifier_terms(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The classifier's bias and the norm of each class's effective weight vector, (C,) each: what
        tau-normalisation (evaluate.py) needs besides the logits. A cosine classifier's are 0 and s."""
        weight = self.classifier.weight.detach()
        if self.cosine_scale is not None:
            return torch.zeros(len(weight)), torch.full((len(weight),), float(self.cosine_scale))
        return self.classifier.bias.detach().clone(), weight.norm(dim=1)

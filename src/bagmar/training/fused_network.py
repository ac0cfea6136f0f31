"""K independent ResNet-32s computed as one network of grouped convolutions, so that one GPU kernel serves K
models (the fused engine's network, bagmar.training.engine); ``member`` takes model k back out as a ResNet32."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ..method.model import ResNet32, stages


class _GroupedLinear(nn.Module):
    """K classifiers, block-diagonal: model k's features meet only model k's weights.

    Model k is linear (nn.Linear's weight and bias), or, where ``cosine_scales[k]`` is a number, a
    model.CosineClassifier of that scale (its bias entries are kept at zero and never used).
    """

    def __init__(self, members: int, in_features: int, out_features: int, cosine_scales: list[float | None]):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(members, out_features, in_features))
        self.bias = nn.Parameter(torch.empty(members, out_features))
        self.cosine_scales = list(cosine_scales)
        self.register_buffer("scale", torch.tensor([s or 0.0 for s in cosine_scales])[:, None, None], persistent=False)
        self.register_buffer("cosine", torch.tensor([s is not None for s in cosine_scales])[:, None, None],
                             persistent=False)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """features (B, K, F) -> logits (K, B, C)."""
        logits = torch.einsum("bkf,kcf->kbc", features, self.weight) + self.bias[:, None, :]
        if not any(s is not None for s in self.cosine_scales):
            return logits
        cosines = torch.einsum("bkf,kcf->kbc", F.normalize(features, dim=-1), F.normalize(self.weight, dim=-1))
        return torch.where(self.cosine, self.scale * cosines, logits)

    @torch.no_grad()
    def terms(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Every model's bias and per-class effective weight norm, (K, C) each (ResNet32.classifier_terms's)."""
        cosine = self.cosine[:, :, 0]
        norms = torch.where(cosine, self.scale[:, :, 0], self.weight.norm(dim=-1))
        return torch.where(cosine, torch.zeros_like(self.bias), self.bias), norms


class FusedResNet32(nn.Module):
    """K independent ResNet-32s computed as one network, so that one GPU kernel serves K models.

    Convolutions have ``groups=K``; each BatchNorm normalises K x C channels, each over its own
    model's batch only; the classifier is block-diagonal. Nothing couples the models: model k's
    output and gradients depend only on its own input and weights, so training the group with the
    sum of the K losses trains each model exactly as it would be trained alone (tests/test_fused.py).
    Build it from K ResNet32s (each initialised with its own seed) and take them back out with
    ``member``; parameter names mirror ResNet32's.
    """

    def __init__(self, members: int, num_classes: int = 100, width: int = 16,
                 cosine_scales: list[float | None] | None = None):
        super().__init__()
        self.members = members
        self.num_classes, self.width = num_classes, width
        self.conv1 = nn.Conv2d(3 * members, width * members, 3, 1, 1, bias=False, groups=members)
        self.bn1 = nn.BatchNorm2d(width * members)
        self.stages = stages(width, members)
        self.feature_dim = 4 * width
        self.classifier = _GroupedLinear(members, self.feature_dim, num_classes, cosine_scales or [None] * members)

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
        fused = cls(len(models), first.classifier.weight.shape[0], first.conv1.out_channels,
                    [m.cosine_scale for m in models])
        fused.to(first.classifier.weight.device)
        states = [m.state_dict() for m in models]
        packed = {}
        for name, target in fused.state_dict().items():
            if name.endswith("num_batches_tracked"):
                packed[name] = states[0][name]
            else:  # a cosine classifier has no bias: its entries stay zero
                slices = [s[name] if name in s else torch.zeros(target.shape[1:]) for s in states]
                packed[name] = torch.stack([v.to(target.device) for v in slices]).reshape(target.shape)
        fused.load_state_dict(packed)
        return fused

    def _member_model(self, k: int, device: torch.device | str = "meta") -> ResNet32:
        with torch.device(device):
            model = ResNet32(self.num_classes, self.width, cosine_scale=self.classifier.cosine_scales[k])
        return model.to(self.classifier.weight.dtype)

    def member_state_dict(self, k: int) -> dict[str, torch.Tensor]:
        """Model k's weights in ResNet32's layout (what a single training saves)."""
        shapes = {name: value.shape for name, value in self._member_model(k).state_dict().items()}
        return {
            name: value.clone() if name.endswith("num_batches_tracked") else value.reshape(self.members, *shapes[name])[k].clone()
            for name, value in self.state_dict().items() if name in shapes
        }

    def member(self, k: int) -> ResNet32:
        model = self._member_model(k, self.classifier.weight.device)
        model.load_state_dict(self.member_state_dict(k))
        return model

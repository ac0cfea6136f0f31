"""The large benchmarks' networks (issue 15): torchvision's ResNet family with a dot-product classifier.

- ``resnet10`` (BasicBlock, [1, 1, 1, 1]: the literature's ImageNet-LT ResNet-10), ``resnet50``,
  ``resnext50_32x4d`` and ``resnet152``, built by torchvision with random weights (nothing is downloaded);
- ``Classifier``: features -> ``fc`` (a linear layer with bias), torchvision's own name for it, so that a
  torchvision state dict loads as it is;
- ``load_stage1``: stage-1 weights from a file the user gives (``torch.load(weights_only=True)``; a full
  state dict, or one under "state_dict" / "model"; a "module." prefix from DataParallel is dropped), every
  missing or unexpected key reported by name;
- ``freeze_backbone``: stage 2 (classifier re-training on a frozen feature model) trains ``fc`` only, and
  the backbone's BatchNorm statistics stay as loaded (eval mode).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torchvision import models

from .io import UserError

ARCHITECTURES = {
    "resnet10": lambda: models.ResNet(models.resnet.BasicBlock, [1, 1, 1, 1]),
    "resnet50": models.resnet50,
    "resnext50_32x4d": models.resnext50_32x4d,
    "resnet152": models.resnet152,
}


class WeightsError(UserError, ValueError):
    """A stage-1 weights file that does not fit the network: the message names the keys."""


def build(architecture: str, num_classes: int) -> nn.Module:
    """A torchvision network of ``architecture`` with a ``num_classes``-way dot-product classifier ``fc``."""
    if architecture not in ARCHITECTURES:
        raise UserError(f"unknown architecture {architecture!r}; one of {', '.join(ARCHITECTURES)}")
    network = ARCHITECTURES[architecture]()
    network.fc = nn.Linear(network.fc.in_features, num_classes, bias=True)
    return network


def _state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    loaded = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(loaded, dict) and isinstance(loaded.get(key), dict):
            loaded = loaded[key]
    if not isinstance(loaded, dict) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise WeightsError(f"{path}: not a state dict (a mapping of parameter names to tensors)")
    return {key.removeprefix("module."): value for key, value in loaded.items()}


def load_stage1(network: nn.Module, path: str | Path, *, classifier: bool = True) -> None:
    """Load stage-1 weights; every key that is missing, unexpected or of another shape is named.

    ``classifier=False`` keeps the network's own ``fc`` (stage 2 trains a new one, e.g. for another class count).
    """
    state = _state_dict(path)
    if not classifier:
        state = {key: value for key, value in state.items() if not key.startswith("fc.")}
    own = network.state_dict()
    missing = [key for key in own if key not in state and (classifier or not key.startswith("fc."))]
    unexpected = [key for key in state if key not in own]
    shapes = [f"{key} {tuple(state[key].shape)} (the network: {tuple(own[key].shape)})" for key in state
              if key in own and state[key].shape != own[key].shape]
    problems = [f"{label}: {', '.join(keys[:8])}{' ...' if len(keys) > 8 else ''} ({len(keys)})"
                for label, keys in (("missing", missing), ("unexpected", unexpected), ("other shape", shapes)) if keys]
    if problems:
        raise WeightsError(f"{path} does not fit {type(network).__name__}: {'; '.join(problems)}")
    network.load_state_dict(state, strict=classifier)


def freeze_backbone(network: nn.Module) -> list[nn.Parameter]:
    """Stage 2: every parameter but ``fc``'s frozen, BatchNorm in eval mode; returns the trainable parameters.

    Call it again after ``network.train()``, which would put the BatchNorm layers back in training mode.
    """
    for name, module in network.named_modules():
        if name != "fc" and not name.startswith("fc.") and isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()
    trainable = []
    for name, parameter in network.named_parameters():
        parameter.requires_grad_(name.startswith("fc."))
        if parameter.requires_grad:
            trainable.append(parameter)
    return trainable

"""The large benchmarks' networks: torchvision's ResNet family with a dot-product classifier.

- ``Network``: ``resnet10`` (BasicBlock, [1, 1, 1, 1]: the literature's ImageNet-LT ResNet-10), ``resnet18``
  (the Places-like miniature's: two blocks a stage, so that its last block is not all of layer4), ``resnet50``,
  ``resnext50_32x4d`` and ``resnet152``, torchvision's ResNet class with random weights (nothing is downloaded),
  and the classifier ``fc`` (a linear layer with bias; LDAM's cosine one for LDAM-DRW) under torchvision's own
  name for it, so that a torchvision state dict loads as it is;
- ``load_stage1``: stage-1 weights from a file the user gives (``torch.load(weights_only=True)``; a full
  state dict, or one under "state_dict" / "model", or the paper's released checkpoint layout, whose
  ``state_dict_best`` holds the feature model and the classifier ``fc``; a "module." prefix from DataParallel is
  dropped; torchvision's published weights, from torch's hub cache, checked against the sha256 prefix in their
  name), every missing or unexpected key reported by name;
- ``freeze``: what a protocol trains (``trained_prefixes``): stage 2 (classifier re-training on a frozen feature
  model) ``fc`` only; a last-block fine-tuning (Places-LT's stage 1 in the literature) the last residual block and
  ``fc``. The frozen layers' BatchNorm either normalises with batch statistics and updates its running ones, as
  the released code does, or keeps the loaded statistics (eval mode).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from torch import nn
from torchvision import models

from ..io import UserError

from .model import CosineClassifier

# name -> torchvision's block, blocks per stage and keyword arguments, as its own factory functions build them
ARCHITECTURES = {
    "resnet10": (models.resnet.BasicBlock, [1, 1, 1, 1], {}),
    "resnet18": (models.resnet.BasicBlock, [2, 2, 2, 2], {}),
    "resnet50": (models.resnet.Bottleneck, [3, 4, 6, 3], {}),
    "resnext50_32x4d": (models.resnet.Bottleneck, [3, 4, 6, 3], {"groups": 32, "width_per_group": 4}),
    "resnet152": (models.resnet.Bottleneck, [3, 8, 36, 3], {}),
}
TORCHVISION_WIDTH = 64  # the first stage's channels in torchvision's ResNets


class WeightsError(UserError, ValueError):
    """A stage-1 weights file that does not fit the network: the message names the keys."""


class Network(models.ResNet):
    """torchvision's ResNet of ``architecture`` (its parameter names, so torchvision state dicts load as they
    are), with ``fc`` a ``num_classes``-way linear classifier with bias, or LDAM's CosineClassifier of scale
    ``cosine_scale``.

    ``width`` scales every stage's channels from torchvision's 64 (64, 128, 256, 512 x expansion): the demo's
    narrow ResNet-10 on a CPU. At 64 the network is torchvision's own.
    """

    def __init__(self, architecture: str, num_classes: int, width: int = TORCHVISION_WIDTH,
                 cosine_scale: float | None = None):
        if architecture not in ARCHITECTURES:
            raise UserError(f"unknown architecture {architecture!r}; one of {', '.join(ARCHITECTURES)}")
        block, layers, options = ARCHITECTURES[architecture]
        self.__dict__["width"] = width  # read by _make_layer during torchvision's __init__
        super().__init__(block, layers, **options)
        self.architecture, self.cosine_scale, self.num_classes = architecture, cosine_scale, num_classes
        if width != TORCHVISION_WIDTH:  # torchvision's stem is 64 wide: rebuilt at this width, initialised as it is
            self.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
            nn.init.kaiming_normal_(self.conv1.weight, mode="fan_out", nonlinearity="relu")
            self.bn1 = nn.BatchNorm2d(width)
        features = self.fc.in_features * width // TORCHVISION_WIDTH
        self.fc = (nn.Linear(features, num_classes) if cosine_scale is None
                   else CosineClassifier(features, num_classes, cosine_scale))

    def _make_layer(self, block, planes, blocks, stride=1, dilate=False):
        if planes == TORCHVISION_WIDTH:  # the first stage: its input is the stem's width
            self.inplanes = self.width
        return super()._make_layer(block, planes * self.width // TORCHVISION_WIDTH, blocks, stride, dilate)

    def classifier_terms(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The classifier's bias and each class's weight norm, (C,) each (model.ResNet32.classifier_terms)."""
        weight = self.fc.weight.detach()
        if self.cosine_scale is not None:
            return torch.zeros(len(weight)), torch.full((len(weight),), float(self.cosine_scale))
        return self.fc.bias.detach().clone(), weight.norm(dim=1)


def build(architecture: str, num_classes: int, width: int = TORCHVISION_WIDTH,
          cosine_scale: float | None = None) -> Network:
    """A network of ``architecture`` with a ``num_classes``-way classifier ``fc`` (random weights)."""
    return Network(architecture, num_classes, width, cosine_scale)


def _check_hub_file(path: Path) -> None:
    """A file in torch's hub cache named <name>-<sha256 prefix>.<ext> (torchvision's published weights) must match
    its prefix, as torch.hub checks it on download: a truncated or replaced file is refused."""
    if path.resolve().parent != (Path(torch.hub.get_dir()) / "checkpoints").resolve():
        return
    match = torch.hub.HASH_REGEX.search(path.name)
    if match and not hashlib.sha256(path.read_bytes()).hexdigest().startswith(match.group(1)):
        raise WeightsError(f"{path}: its sha256 does not start with {match.group(1)}, as its name says: the file is "
                           "not the published one (truncated, or replaced); delete it and download it again")


def _state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    _check_hub_file(Path(path))
    loaded = torch.load(path, map_location="cpu", weights_only=True)
    best = loaded.get("state_dict_best") if isinstance(loaded, dict) else None
    if isinstance(best, dict) and all(isinstance(best.get(n), dict) for n in ("feat_model", "classifier")):
        # the paper's released layout (run_networks.py, save_model): torchvision-named feature model and fc
        loaded = {**best["feat_model"], **best["classifier"]}
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
        raise WeightsError(f"{path} does not fit {getattr(network, 'architecture', type(network).__name__)}: "
                           f"{'; '.join(problems)}")
    network.load_state_dict(state, strict=classifier)


def trained_prefixes(network: models.ResNet, protocol: str) -> tuple[str, ...]:
    """The modules a protocol trains, by state-dict prefix: classifier_retraining ``fc``; last_block_finetuning
    also the last residual block, ``layer4.<last>`` (``layer4.2`` of ResNet-50 and ResNet-152).

    "Everything is frozen except for the last block and fc layer" (Kang et al., on Places-LT's stage 1, in
    github.com/facebookresearch/classifier-balancing/issues/4). The last block is the last Bottleneck, as the
    released codes that train it take it (MiSLAS's train_stage1.py and GCL's resnet_places.py replace that one
    block); here it keeps its ImageNet weights, fine-tuned rather than re-initialised."""
    if protocol == "classifier_retraining":
        return ("fc.",)
    if protocol == "last_block_finetuning":
        return (f"layer4.{len(network.layer4) - 1}.", "fc.")
    raise ValueError(f"protocol {protocol!r} freezes nothing")


def freeze(network: nn.Module, protocol: str, batchnorm: str) -> list[nn.Parameter]:
    """Every parameter but those of ``trained_prefixes(protocol)`` frozen; returns the trainable parameters.
    ``batchnorm`` "frozen" puts the frozen layers' BatchNorm in eval mode (the loaded statistics); "train" leaves it
    as ``network.train()`` set it, normalising with batch statistics and updating its running statistics, as the
    released code does.

    Call it again after ``network.train()``, which would put frozen BatchNorm layers back in training mode.
    """
    trained = trained_prefixes(network, protocol)
    for name, module in network.named_modules():
        if not f"{name}.".startswith(trained) and isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.train(batchnorm == "train" and network.training)
    trainable = []
    for name, parameter in network.named_parameters():
        parameter.requires_grad_(name.startswith(trained))
        if parameter.requires_grad:
            trainable.append(parameter)
    return trainable

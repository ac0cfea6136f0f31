"""A training's settings, as the config and its schema give them: the one torch-free place the configuration
layer (bagmar.config), the tests and the trainer read them from, so that planning a run never imports torch.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import inspect
import math
import os
import re
import sys
from pathlib import Path
from typing import Callable

import yaml

from ..io import UserError


class RecipeError(UserError, ValueError):
    """Recipe settings that cannot train: the message says which and what to change."""


CONFIG_SCHEMA = Path(__file__).resolve().parent / "schema.yaml"  # shipped inside the package
NAMED_RECIPES = Path(__file__).resolve().parent / "named_recipes.yaml"
SHARED_RECIPE = "shared"  # a CIFAR training's recipe when it names none: the run's (bagmar.config.layout too)


@functools.cache
def schema() -> dict:
    """The config schema (JSON Schema, draft 2020-12): keys, types, allowed values and defaults. Read once;
    callers copy what they change."""
    return yaml.safe_load(CONFIG_SCHEMA.read_text())


@functools.cache
def _named_recipes() -> dict:
    return yaml.safe_load(NAMED_RECIPES.read_text())


def recipe_names() -> tuple[str, ...]:
    """What a CIFAR training's ``recipe`` may name: the run's shared recipe, or a named one."""
    return (SHARED_RECIPE, *_named_recipes())


def named_recipe(name: str | None) -> dict:
    """The settings a named recipe puts over the run's recipe (named_recipes.yaml); none for the shared one."""
    if name in (None, SHARED_RECIPE):
        return {}
    if name not in _named_recipes():
        raise RecipeError(f"recipe '{name}' is not one of {', '.join(recipe_names())}")
    return dict(_named_recipes()[name])


def recipe_defaults() -> dict:
    """SPEC §3's recipe as the config schema's defaults, the one place its numbers are written."""
    return {key: spec["default"] for key, spec in schema()["properties"]["recipe"]["properties"].items()}


def image_list_defaults() -> dict:
    """The image-list recipe's defaults (the settings every data set shares unless its config says otherwise)."""
    properties = schema()["properties"]["image_list_recipe"]["properties"]
    return {key: spec["default"] for key, spec in properties.items() if "default" in spec}


def training_defaults() -> dict:
    """Each loss's own settings (LOSS_SETTINGS) as the config schema's defaults for a training."""
    properties = schema()["definitions"]["training"]["properties"]
    return {key: spec["default"] for key, spec in properties.items() if "default" in spec}


# The losses a training can use, and the settings that belong to each (the rest of a Recipe is shared).
LOSS_SETTINGS = {
    "bagmar": ("lambda1", "lambda2"),  # BaGMar (loss.py); cross-entropy at lambda1 = lambda2 = 0
    "logit_adjusted": ("tau",),  # Menon et al. (baselines.py); Balanced Softmax at tau = 1
    "ldam_drw": ("max_margin", "scale", "drw_after", "beta"),  # Cao et al. (baselines.py)
}
_PAPER, _TRAINING = recipe_defaults(), training_defaults()
# A loss of the user's own: "module:function", the module importable from the working directory or sys.path.
USER_LOSS = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*:[A-Za-z_][A-Za-z0-9_]*")


def is_user_loss(loss: str) -> bool:
    """Whether a training's loss names a function of the user's own (``module:function``)."""
    return USER_LOSS.fullmatch(loss) is not None


def loss_settings(loss: str) -> tuple[str, ...]:
    """The settings that belong to a loss (a user's own loss takes none: its function holds its numbers)."""
    return () if is_user_loss(loss) else LOSS_SETTINGS.get(loss, ())  # an unknown loss: reported by the checks


def user_loss(loss: str) -> Callable:
    """The function that ``module:function`` names: called as ``function(logits, labels)`` with one model's (B, C)
    logits and (B,) labels, it returns the batch's scalar loss, differentiable in the logits (as
    ``torch.nn.functional.cross_entropy`` does). The module is imported from the working directory (the project's
    root, where Snakemake runs) or sys.path. A name that does not resolve raises RecipeError naming what is missing."""
    module_name, function_name = loss.split(":")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise RecipeError(f"loss '{loss}': cannot import module {module_name} ({error}); put {module_name}.py in "
                          "the working directory or on PYTHONPATH") from None
    function = getattr(module, function_name, None)
    if not callable(function):
        raise RecipeError(f"loss '{loss}': module {module_name} ({module.__file__}) has no function {function_name}")
    try:
        inspect.signature(function).bind(None, None)
    except (TypeError, ValueError):
        raise RecipeError(f"loss '{loss}': {function_name} must take (logits, labels) and return the batch's loss; "
                          f"its signature is {function_name}{inspect.signature(function)}") from None
    return function


def user_loss_file(loss: str) -> Path:
    """The source file of a user's own loss (its module), which the workflow fingerprints for reruns."""
    user_loss(loss)
    return Path(sys.modules[loss.split(":")[0]].__file__)


@dataclasses.dataclass(frozen=True, kw_only=True)
class LossSettings:
    """What every training has whatever its network and data: its loss with that loss's settings (the schema's
    defaults), and its seed. Keyword-only, so that a recipe's own fields keep their positions before them."""

    loss: str = _TRAINING["loss"]  # a key of LOSS_SETTINGS, or a function of the user's own (module:function)
    lambda1: float = _TRAINING["lambda1"]
    lambda2: float = _TRAINING["lambda2"]
    tau: float = _TRAINING["tau"]
    max_margin: float = _TRAINING["max_margin"]
    scale: float = _TRAINING["scale"]
    drw_after: float = _TRAINING["drw_after"]
    beta: float = _TRAINING["beta"]
    seed: int = 0  # model init, data order and augmentation draws

    def __post_init__(self):
        if self.loss not in LOSS_SETTINGS and not is_user_loss(self.loss):
            raise RecipeError(f"loss '{self.loss}' is not one of {', '.join(LOSS_SETTINGS)}, nor a function of your "
                              "own as module:function")
        unused = [key for other, keys in LOSS_SETTINGS.items() if other != self.loss for key in keys
                  if getattr(self, key) != _TRAINING[key]]
        if unused:
            raise RecipeError(f"{', '.join(unused)} set for loss '{self.loss}', which does not use it; its "
                              f"settings are {', '.join(loss_settings(self.loss)) or 'none'}")


@dataclasses.dataclass(frozen=True)
class Recipe(LossSettings):
    """One training's settings; the defaults are the paper's, read from the config schema (SPEC §3, §6)."""

    epochs: int = _PAPER["epochs"]
    batch_size: int = _PAPER["batch_size"]
    base_lr: float = _PAPER["base_lr"]
    peak_lr: float = _PAPER["peak_lr"]
    warmup_epochs: int = _PAPER["warmup_epochs"]
    momentum: float = _PAPER["momentum"]
    weight_decay: float = _PAPER["weight_decay"]
    width: int = _PAPER["width"]  # ResNet-32's first-stage width
    padding: int = _PAPER["padding"]  # random-crop padding
    cutout_size: int = _PAPER["cutout_size"]
    autoaugment: str = _PAPER["autoaugment"]  # "released" (the paper's code), "torchvision" or "none"
    precision: str = _PAPER["precision"]  # "bfloat16": autocast of the forward pass; "float64": double throughout
    schedule: str = _PAPER["schedule"]  # after the warm-up: "cosine" (SPEC §3) or "step" (learning_rate)
    step_after: tuple[float, ...] = tuple(_PAPER["step_after"])
    step_factors: tuple[float, ...] = tuple(_PAPER["step_factors"])

    def __post_init__(self):
        _settle(self, ("step_after", "step_factors"), schedule_problems)


def schedule_problems(settings: dict) -> list[str]:
    """A CIFAR recipe's schedule rules, one line each: Recipe refuses a recipe that breaks one, and the
    configuration layer (bagmar.config) reports them per training before any job."""
    found, after, factors = [], list(settings["step_after"]), list(settings["step_factors"])
    if settings["schedule"] == "step":
        if not after or len(after) != len(factors):
            found.append(f"schedule step needs step_after and step_factors of the same length, one entry per step "
                         f"(given {len(after)} and {len(factors)})")
        elif after != sorted(set(after)):
            found.append(f"step_after {after} must ascend")
    elif after or factors:
        found.append(f"step_after and step_factors are for schedule step; this schedule is {settings['schedule']}")
    return found


def _settle(recipe: LossSettings, tuple_keys: tuple[str, ...], rules: Callable[[dict], list[str]]) -> None:
    """A recipe's checks after construction: its list settings as tuples (lists in a config; tuples keep the recipe
    hashable), its loss's (LossSettings), then its own ``rules``, each problem a RecipeError's line."""
    for key in tuple_keys:
        object.__setattr__(recipe, key, tuple(float(v) for v in getattr(recipe, key)))
    LossSettings.__post_init__(recipe)
    if problems := rules(dataclasses.asdict(recipe)):
        raise RecipeError("; ".join(problems))


def learning_rate(epoch: int, recipe: Recipe) -> float:
    """SPEC §3, for epoch = 1..E: linear warm-up from base to peak, then half a cosine to 0 at E.

    schedule step instead keeps peak_lr after the warm-up, times step_factors[i] from the first epoch after
    step_after[i] * E (the released LDAM-DRW: x0.01 for epochs 161-180 of 200, x0.0001 from 181)."""
    warmup, epochs = recipe.warmup_epochs, recipe.epochs
    if epoch < warmup:
        return recipe.base_lr + (recipe.peak_lr - recipe.base_lr) * (epoch - 1) / (warmup - 1)
    if recipe.schedule == "step":
        factor = 1.0
        for after, step_factor in zip(recipe.step_after, recipe.step_factors):
            if epoch > after * epochs:
                factor = step_factor
        return recipe.peak_lr * factor
    return recipe.peak_lr * (1 + math.cos(math.pi * (epoch - warmup) / max(epochs - warmup, 1))) / 2


_IMAGE_LIST = image_list_defaults()
PROTOCOLS = ("end_to_end", "classifier_retraining", "last_block_finetuning")
FROM_STAGE1 = PROTOCOLS[1:]  # the protocols that start from weights (stage1)
STAGE1_RANDOM = "random"  # stage1: the network's own initialisation from the seed, standing in for pretrained weights
AUGMENTS = ("released_lt", "kang")  # bagmar.data.image_data.AUGMENTS, which a test keeps equal (torch-free here)


@dataclasses.dataclass(frozen=True)
class ImageListRecipe(LossSettings):
    """One training on an image-list data set (ImageNet-LT, Places-LT, iNaturalist 2018, the miniature): a
    torchvision ResNet, ImageNet-style augmentation, a cosine schedule, and the same losses as CIFAR.

    The numbers without a default are each data set's own (its config gives them with their source). ``stage1``
    is the weights file a classifier re-training (stage 2) or a last-block fine-tuning starts from (the workflow
    resolves "training:<name>" and "torchvision:<name>"), or STAGE1_RANDOM.
    """

    architecture: str
    epochs: int
    batch_size: int
    lr: float  # the cosine schedule's peak; epoch e trains at lr (1 + cos(pi e / E)) / 2 (cosine_learning_rate)
    weight_decay: float
    width: int = _IMAGE_LIST["width"]
    momentum: float = _IMAGE_LIST["momentum"]
    protocol: str = _IMAGE_LIST["protocol"]
    stage1: str | None = None
    sampler: str = _IMAGE_LIST["sampler"]
    samples_per_class: int = _IMAGE_LIST["samples_per_class"]
    image_size: int = _IMAGE_LIST["image_size"]
    resize_size: int = _IMAGE_LIST["resize_size"]
    color_jitter: float = _IMAGE_LIST["color_jitter"]
    mean: tuple[float, float, float] = tuple(_IMAGE_LIST["mean"])
    std: tuple[float, float, float] = tuple(_IMAGE_LIST["std"])
    precision: str = _IMAGE_LIST["precision"]
    sync_batchnorm: bool = _IMAGE_LIST["sync_batchnorm"]  # SyncBatchNorm across the ranks (bagmar.training.distributed)
    frozen_batchnorm: str = _IMAGE_LIST["frozen_batchnorm"]  # "train" (as released) or "frozen": frozen layers' BN
    augment: str = _IMAGE_LIST["augment"]  # "released_lt" (the paper's code) or "kang" (bagmar.data.image_data)

    def __post_init__(self):
        _settle(self, ("mean", "std"), image_list_problems)


def image_list_problems(settings: dict) -> list[str]:
    """The rules between an image-list recipe's own settings, one line each: ImageListRecipe refuses a recipe
    that breaks one, and the configuration layer (bagmar.config) reports them per training before any job."""
    found = []
    protocol, stage1 = settings["protocol"], settings.get("stage1")
    if protocol not in PROTOCOLS:
        found.append(f"protocol '{protocol}' is not one of {', '.join(PROTOCOLS)}")
    if protocol in FROM_STAGE1 and stage1 is None:
        found.append(f'protocol {protocol} needs the weights it starts from (stage1: "training:<name>", '
                     '"torchvision:<weights>", a weights file, or "random")')
    if protocol == "end_to_end" and stage1 is not None:
        found.append(f"stage1 {stage1!r} is given to an end_to_end training, which starts from random weights; "
                     f"only {' and '.join(FROM_STAGE1)} take them: set one of those protocols, or remove stage1")
    if settings["resize_size"] < settings["image_size"]:
        found.append(f"resize_size {settings['resize_size']} is smaller than the crop image_size "
                     f"{settings['image_size']}")
    if settings["sync_batchnorm"] and protocol == "classifier_retraining":
        found.append("sync_batchnorm is for trainings whose BatchNorm trains (end_to_end, last_block_finetuning's last "
                     "block); a classifier_retraining's BatchNorm is the frozen feature model's, per process or frozen")
    if settings.get("frozen_batchnorm", "train") not in ("train", "frozen"):
        found.append(f"frozen_batchnorm '{settings['frozen_batchnorm']}' is not one of train, frozen")
    if settings.get("augment", "released_lt") not in AUGMENTS:
        found.append(f"augment '{settings['augment']}' is not one of {', '.join(AUGMENTS)}")
    return found


STAGE1_TORCHVISION = "torchvision:"  # stage1: torchvision's published weights, e.g. ResNet152_Weights.IMAGENET1K_V1


def torchvision_weights(stage1: str) -> tuple[Path, str]:
    """(file, url) of ``torchvision:<weights name>``: where torch's hub cache keeps the file (torch.hub.get_dir(),
    checkpoints/; $TORCH_HOME moves it), as torchvision's weights API downloads it and finds it offline, and where
    to download it from. Imports torchvision (only runs that name such weights pay for it at planning)."""
    import torch
    import torchvision

    name = stage1.removeprefix(STAGE1_TORCHVISION)
    try:
        weights = torchvision.models.get_weight(name)
    except (ValueError, KeyError, AttributeError, TypeError):
        raise RecipeError(f"stage1 {stage1!r}: torchvision has no weights {name!r}; name them as its weights API "
                          "does, e.g. torchvision:ResNet152_Weights.IMAGENET1K_V1") from None
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url), weights.url


def cosine_learning_rate(epoch: int, recipe: ImageListRecipe) -> float:
    """Epoch 1..E's rate as the released large-scale code trains it: lr * (1 + cos(pi * epoch / E)) / 2.

    The released loop (run_networks.py, train(), about line 772) steps its CosineAnnealingLR(T_max=E, eta_min=0)
    at the start of every epoch, before the epoch's steps: epoch 1 already trains below lr, and epoch E at 0."""
    return recipe.lr * (1 + math.cos(math.pi * epoch / recipe.epochs)) / 2


# What may differ between the members of a fused group: the loss and its settings, and the seed.
FUSABLE = ("loss", *(key for keys in LOSS_SETTINGS.values() for key in keys), "seed")

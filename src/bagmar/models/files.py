"""A trained model as files people can use: ``model.safetensors`` and its card ``model.json``, side by side.

- ``export``: a training's ``model.pt`` (a state dict) written as safetensors (tensors only: loading it runs
  nothing), and the card: the network and its input, the recipe, the data set and imbalance factor, the split's
  sha256, the seed, the code fingerprint of the training job, the training's own figures (plain top-1, PN at
  tau = 1, the label-free tau and its top-1, on the test set it was tested on), the class prior that PN and
  post-hoc logit adjustment need, and the weights file's sha256.
- ``load_model``: the network in eval mode and its card, the weights checked against the card's sha256.
- ``prepare_images`` / ``classify``: images as the card says the network takes them, and their class scores with
  PN at the card's tau (over the images classified together, as PN divides by each class's mass over a set).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..data.augment import CIFAR_MEAN, CIFAR_STD
from ..data.image_lists import sha256
from ..evaluation.evaluate import PN_HEADLINE_TAU, group_accuracies, label_free_tau, pn_predictions, val_selected_tau
from ..io import UserError, atomic_write

WEIGHTS, CARD = "model.safetensors", "model.json"
CARD_FORMAT = 1


class ModelFileError(UserError, ValueError):
    """A model file that cannot be used: the message names the file and what to do."""


def network_card(recipe: dict, num_classes: int, image_lists: bool, image_size: int = 32) -> dict:
    """What the card says about the network and the input it takes, from a training's recipe (``image_size``: the
    side of a CIFAR-recipe network's square images; an image-list network's input is the recipe's resize and crop)."""
    scale = recipe["scale"] if recipe.get("loss") == "ldam_drw" else None
    if image_lists:
        return {"network": {"kind": "torchvision_resnet", "architecture": recipe["architecture"],
                            "num_classes": num_classes, "width": recipe["width"], "cosine_scale": scale},
                "input": {"resize": recipe["resize_size"], "crop": recipe["image_size"],
                          "mean": list(recipe["mean"]), "std": list(recipe["std"])}}
    return {"network": {"kind": "resnet32", "num_classes": num_classes, "width": recipe["width"], "cosine_scale": scale},
            "input": {"resize": None, "crop": image_size, "mean": list(CIFAR_MEAN), "std": list(CIFAR_STD)}}


def build_network(card: dict) -> nn.Module:
    """The card's network with random weights."""
    spec = card["network"]
    if spec["kind"] == "resnet32":
        from ..method.model import ResNet32

        return ResNet32(spec["num_classes"], spec["width"], spec["cosine_scale"])
    if spec["kind"] == "torchvision_resnet":
        from ..method import backbones

        return backbones.build(spec["architecture"], spec["num_classes"], spec["width"], spec["cosine_scale"])
    raise ModelFileError(f"unknown network kind {spec['kind']!r} in the card")


def training_figures(logits: np.ndarray, labels: np.ndarray, counts: np.ndarray, taus: list[float],
                     validation: dict[str, np.ndarray] | None = None) -> dict:
    """A training's figures from its saved test outputs: plain top-1, PN at tau = 1, the label-free tau and
    PN's top-1 there, and with ``validation`` (the saved validation logits and labels) PN's val-selected tau and
    its test top-1 (percent; shot groups by the training counts)."""
    free = label_free_tau(logits, taus)
    chosen = [] if validation is None else [val_selected_tau(validation["logits"], validation["labels"], counts, taus)]
    plain, pn_1, pn_free, *pn_val = pn_predictions(logits, [0.0, PN_HEADLINE_TAU, free, *chosen])

    def accuracies(predicted):  # a shot group with no classes: null (JSON has no NaN)
        return {k: None if np.isnan(v) else v for k, v in group_accuracies(predicted, labels, counts).items()}

    figures = {"plain": accuracies(plain), "pn_tau1": accuracies(pn_1), "label_free_tau": free,
               "pn_label_free": accuracies(pn_free)}
    if chosen:
        figures.update(val_selected_tau=chosen[0], pn_val_selected=accuracies(pn_val[0]))
    return figures


def export(model: str | Path, logits: str | Path, counts: list[int], weights: str | Path, card_path: str | Path,
           about: dict, taus: list[float], val_logits: str | Path | None = None) -> dict:
    """Write ``model`` (a training's model.pt) as safetensors at ``weights`` and its card at ``card_path``.

    ``about``: what the workflow knows of the training (network and input, recipe, data set, imbalance factor,
    seed, split sha256, code fingerprint); ``counts``: its training split's images per class; ``taus``: the grid
    that the label-free and val-selected taus are chosen from; ``val_logits``: the training's validation logits,
    where its data set has a validation list. The card's ``tau``, PN's default in ``predict``, is the val-selected
    tau where there is one, else the label-free tau (``tau_rule`` says which). Returns the card."""
    from safetensors.torch import save

    state = torch.load(model, map_location="cpu", weights_only=True)
    validation = None
    if val_logits is not None:
        with np.load(val_logits, allow_pickle=False) as saved:
            validation = {"logits": saved["logits"], "labels": saved["labels"]}
    with np.load(logits, allow_pickle=False) as saved:
        figures = training_figures(saved["logits"], saved["labels"], np.asarray(counts), taus, validation)
    counts = np.asarray(counts)
    with atomic_write(weights, "wb") as f:
        f.write(save({k: v.contiguous() for k, v in state.items()}, metadata={"format": "pt"}))
    card = {"format": CARD_FORMAT, **about, "figures": figures, "class_counts": counts.tolist(),
            "class_prior": (counts / counts.sum()).tolist(),
            "tau": figures.get("val_selected_tau", figures["label_free_tau"]),
            "tau_rule": "val_selected" if validation is not None else "label_free",
            "weights": {"file": Path(weights).name, "sha256": sha256(weights)}}
    with atomic_write(card_path) as f:
        json.dump(card, f, indent=2, allow_nan=False)
        f.write("\n")
    return card


def _paths(path: str | Path) -> tuple[Path, Path]:
    path = Path(path)
    if path.is_dir():
        return path / WEIGHTS, path / CARD
    if path.suffix == ".json":
        return path.with_name(WEIGHTS), path
    return path, path.with_name(CARD)


def load_model(path: str | Path) -> tuple[nn.Module, dict]:
    """The network of ``path`` (a model.safetensors, its model.json, or their folder) in eval mode, and its card.

    The weights are read with safetensors (tensors only) and must match the card's sha256."""
    from safetensors.torch import load_file

    weights, card_path = _paths(path)
    for needed in (weights, card_path):
        if not needed.is_file():
            raise ModelFileError(f"{needed}: no such file; a model is {WEIGHTS} with its card {CARD} beside it")
    card = json.loads(card_path.read_text())
    if card.get("format") != CARD_FORMAT:
        raise ModelFileError(f"{card_path}: card format {card.get('format')!r}, this code reads {CARD_FORMAT}")
    if sha256(weights) != card["weights"]["sha256"]:
        raise ModelFileError(f"{weights}: its sha256 is not the one its card {card_path} records: the file changed "
                             "after it was written; export it again")
    network = build_network(card)
    state = load_file(weights)
    own = network.state_dict()
    first = next((k for k in own if k not in state or state[k].shape != own[k].shape), None)
    if first is not None or len(state) != len(own):
        raise ModelFileError(f"{weights}: {first or 'its keys'} does not fit the card's network {card['network']}")
    network.load_state_dict(state)
    return network.eval(), card


def prepare_images(images, card: dict) -> torch.Tensor:
    """uint8 images, (3, H, W) each (a list, or a batch (B, 3, H, W)) -> the network's normalised float input, as
    the training tested: image-list networks resize the shorter side to the card's resize and take the centre crop
    (bagmar.data.image_data.TestImages, then prepare); CIFAR networks take 32 x 32 images (others are resized to it)
    normalised with CIFAR's statistics (bagmar.data.augment.test_transform)."""
    from torchvision.transforms.v2 import functional as TF

    spec, size = card["input"], card["input"]["crop"]
    cropped = []
    for image in images:
        if spec["resize"] is not None:
            image = TF.center_crop(TF.resize(image, [spec["resize"]], antialias=True), [size, size])
        elif image.shape[-2:] != (size, size):
            image = TF.resize(image, [size, size], antialias=True)
        cropped.append(image)
    batch = torch.stack(cropped)
    if card["network"]["kind"] == "resnet32":
        from ..data.augment import test_transform

        return test_transform(batch)
    from ..data.image_data import prepare

    return prepare(batch, tuple(spec["mean"]), tuple(spec["std"]))


@torch.no_grad()
def classify(network: nn.Module, card: dict, images: torch.Tensor, tau: float | None = None,
             batch_size: int = 256) -> torch.Tensor:
    """PN-re-balanced class scores (N, C) of uint8 images (N, 3, H, W): softmax probabilities divided by each
    class's mass over these N images to the power ``tau`` (the card's label-free tau by default; 0: plain
    softmax), normalised to sum to 1 per image."""
    tau = card["tau"] if tau is None else tau
    logits = torch.cat([network(prepare_images(images[i:i + batch_size], card))
                        for i in range(0, len(images), batch_size)]).double()
    log_p = torch.log_softmax(logits, dim=1)
    log_mass = torch.logsumexp(log_p, dim=0)
    return torch.softmax(log_p - tau * log_mass, dim=1)

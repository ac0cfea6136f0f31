"""The paper's released checkpoints, read without running anything they hold.

The released code (lt-project-repository/lt-project, run_networks.py, ``save_model``) saves
``{'epoch', 'best_epoch', 'state_dict_best': {'feat_model': ..., 'classifier': ...}, 'best_acc', 'centroids'}``:
the state dicts of the best test epoch, of networks wrapped in DataParallel (every key starts with ``module.``).
For CIFAR the feature model is models/ResNet32Feature.py (``conv1``, ``bn1``, ``layer1..3.<block>``) and the
classifier models/DotProductClassifier.py (``fc``): this project's ResNet-32 parameter for parameter, under
other names (``stages.<i>.<block>``, ``classifier``). For the large benchmarks the feature models are torchvision's
layout already (models/ResNetFeature.py), so the merged state dict loads into bagmar.method.backbones.Network.

Loading is ``torch.load(weights_only=True)``: tensors, containers and plain Python values only, plus numpy's scalar
and dtype types (a ``best_acc`` computed with numpy pickles as those); anything else, a pickle whose
``__reduce__`` would call a function for instance, is refused before it runs.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from ..io import UserError

CHECKPOINT_KEYS = ("epoch", "best_epoch", "state_dict_best", "best_acc", "centroids")
NETWORKS = ("feat_model", "classifier")
# What a released checkpoint may hold besides torch's own safe types: numpy scalars and their dtypes.
_NUMPY_TYPES = [np.dtype, type(np.dtype(np.float64)), type(np.dtype(np.float32)), type(np.dtype(np.int64))]


class CheckpointError(UserError, ValueError):
    """A checkpoint that cannot be read, or does not fit the network: the message names the file and the fix."""


def _numpy_scalar():
    """numpy's pickled-scalar constructor, under numpy 2's name and numpy 1's (the released files' era)."""
    from numpy._core.multiarray import scalar

    return [scalar, (scalar, "numpy.core.multiarray.scalar")]


_PICKLE_MAGIC = (b"PK\x03\x04", b"\x80")  # torch's zip format, or a legacy pickle's protocol byte


def load_checkpoint(path: str | Path) -> dict:
    """A released checkpoint's contents, loaded with weights_only (nothing in it is executed)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    with open(path, "rb") as f:
        head = f.read(4)
    if not head.startswith(_PICKLE_MAGIC):
        kind = "an HTML page" if head.lstrip()[:1] == b"<" else "not a torch checkpoint"
        raise CheckpointError(f"{path}: {kind}, not a torch checkpoint (a share link saves its web page: download the "
                              "file itself, e.g. in a browser or with gdown)")
    try:
        with torch.serialization.safe_globals([*_numpy_scalar(), *_NUMPY_TYPES]):
            loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        first = str(error).strip().splitlines()[0]
        raise CheckpointError(f"{path}: refused: it holds more than tensors and plain values ({first}). Only "
                              "weights are read from a checkpoint, never code; re-save it as a state dict, or "
                              "fetch the original file again") from None
    except (RuntimeError, EOFError, OSError) as error:
        raise CheckpointError(f"{path}: not a torch checkpoint ({str(error).strip().splitlines()[0]}); fetch the "
                              "file again") from None
    return loaded


def released_networks(checkpoint: dict, path: str | Path) -> dict[str, dict[str, torch.Tensor]]:
    """``state_dict_best``'s two networks, their DataParallel ``module.`` prefix dropped."""
    best = checkpoint.get("state_dict_best") if isinstance(checkpoint, dict) else None
    if not isinstance(best, dict) or not all(isinstance(best.get(n), dict) for n in NETWORKS):
        found = sorted(checkpoint) if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise CheckpointError(f"{path}: not in the released layout (state_dict_best with feat_model and classifier; "
                              f"found {found})")
    return {name: {key.removeprefix("module."): value for key, value in best[name].items()} for name in NETWORKS}


def to_resnet32(networks: dict[str, dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The released ResNet-32's feature model and classifier as a bagmar.method.model.ResNet32 state dict."""
    state = {}
    for key, value in networks["feat_model"].items():
        if key.startswith("layer"):
            stage, rest = key.removeprefix("layer").split(".", 1)
            key = f"stages.{int(stage) - 1}.{rest}"
        state[key] = value
    state.update({key.replace("fc.", "classifier.", 1): value for key, value in networks["classifier"].items()})
    return state


def from_resnet32(state: dict[str, torch.Tensor], **extra) -> dict:
    """The inverse: a ResNet32 state dict written in the released layout, with DataParallel's prefixes (what the
    released code's save_model writes; for tests and stand-ins of the released files)."""
    feat, classifier = {}, {}
    for key, value in state.items():
        if key.startswith("classifier."):
            classifier["module." + key.replace("classifier.", "fc.", 1)] = value
            continue
        if key.startswith("stages."):
            stage, rest = key.removeprefix("stages.").split(".", 1)
            key = f"layer{int(stage) + 1}.{rest}"
        feat["module." + key] = value
    return {"epoch": extra.get("epoch", 200), "best_epoch": extra.get("best_epoch", 200),
            "state_dict_best": {"feat_model": feat, "classifier": classifier},
            "best_acc": extra.get("best_acc", 0.0), "centroids": None}


def released_name(key: str) -> str:
    """Where a ResNet32 parameter lives in a released checkpoint, as the error messages name it."""
    if key.startswith("classifier."):
        return f"state_dict_best['classifier']['module.{key.replace('classifier.', 'fc.', 1)}']"
    if key.startswith("stages."):
        stage, rest = key.removeprefix("stages.").split(".", 1)
        key = f"layer{int(stage) + 1}.{rest}"
    return f"state_dict_best['feat_model']['module.{key}']"


def fit(network: torch.nn.Module, state: dict[str, torch.Tensor], path: str | Path, what: str,
        name=lambda key: key) -> None:
    """Load ``state`` into ``network``; the first key that is missing, unexpected or of another shape is named
    (as ``name`` writes it: where it lives in the file)."""
    own = network.state_dict()
    for key in own:
        if key not in state:
            raise CheckpointError(f"{path}: no {name(key)}, which {what} needs: a checkpoint of another network")
        if state[key].shape != own[key].shape:
            raise CheckpointError(f"{path}: {name(key)} is {tuple(state[key].shape)}, {what} needs "
                                  f"{tuple(own[key].shape)}: another class count or architecture")
    unexpected = [key for key in state if key not in own]
    if unexpected:
        raise CheckpointError(f"{path}: {name(unexpected[0])} is not a parameter of {what} ({len(unexpected)} such "
                              "keys): a checkpoint of another network")
    network.load_state_dict(state)


def load_released_resnet32(path: str | Path, num_classes: int):
    """The released CIFAR checkpoint at ``path`` as a ResNet32 in eval mode (its width read from the file)."""
    from ..method.model import ResNet32

    state = to_resnet32(released_networks(load_checkpoint(path), path))
    if "conv1.weight" not in state:
        raise CheckpointError(f"{path}: its feature model has no conv1.weight: not a released ResNet-32")
    network = ResNet32(num_classes, width=int(state["conv1.weight"].shape[0]))
    fit(network, state, path, f"ResNet-32 with {num_classes} classes", released_name)
    return network.eval()


def import_released(path: str | Path, images, model_file: str | Path, logits_file: str | Path) -> None:
    """A released CIFAR checkpoint as a training's files: ``model_file`` (the ResNet32 state dict) and
    ``logits_file`` (its plain test logits on ``images``' test set, bagmar.data.long_tail.ImageSet, with the
    classifier's bias and weight norms), in the layout a training saves (bagmar.training.loop.TrainResult.save), so
    that the evaluations read it as a trained model. The one model is the checkpoint's test-selected best epoch:
    it stands for both the final model and the best epoch, at the checkpoint's ``best_epoch``."""
    from ..data.augment import test_transform
    from ..io import atomic_write

    checkpoint = load_checkpoint(path)
    network = load_released_resnet32(path, images.num_classes)
    test = torch.from_numpy(np.ascontiguousarray(images.test_images)).permute(0, 3, 1, 2)
    with torch.no_grad():
        logits = torch.cat([network(test_transform(test[i:i + 500])) for i in range(0, len(test), 500)]).numpy()
    bias, norms = (t.numpy() for t in network.classifier_terms())
    epoch = np.int64(checkpoint.get("best_epoch") or checkpoint.get("epoch") or 0)
    best = {f"best_{rule}_{key}": value for rule in ("plain", "pn")
            for key, value in (("logits", logits), ("epoch", epoch), ("classifier_bias", bias),
                               ("classifier_weight_norm", norms))}
    with atomic_write(model_file, "wb") as f:
        torch.save(network.state_dict(), f)
    with atomic_write(logits_file, "wb") as f:
        np.savez(f, logits=logits, labels=np.asarray(images.test_labels, dtype=np.int64), final_epoch=epoch,
                 classifier_bias=bias, classifier_weight_norm=norms, **best)
    top1 = 100.0 * float((logits.argmax(1) == images.test_labels).mean())
    print(f"{path}: best epoch {int(epoch)} of the released training (state_dict_best), best_acc recorded "
          f"{checkpoint.get('best_acc')}; plain top-1 here {top1:.2f} % on {len(logits)} test images")

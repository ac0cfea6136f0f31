"""BaGMar (Balanced Gradient Margin) for long-tailed classification: the method, as a library.

Its rooms, each a subpackage, with doors that go one way (docs/architecture.md; tests/test_architecture.py holds them):

- ``config``: a workflow config in, a ``Run`` out: validation, recipes, training groups and every path;
- ``method``: what is computed for one model: the BaGMar loss and its statistics, the baselines, the networks;
- ``data``: image sets, the long-tailed cut, CIFAR and the image lists, augmentation on the device;
- ``training``: the one training loop, the fused engine that runs it fast, checkpoints, many processes;
- ``evaluation``: accuracies and the post-hoc rules on saved outputs, tables, rendering, plots;
- ``models``: models in and out: the released checkpoints read safely, every trained model as safetensors with its
  card (``load_model``), and ``python -m bagmar predict``.

Beside them: ``io`` (atomic writes, job logs, the errors a user can act on) and ``fingerprint`` (the code a
workflow job runs, for its rerun triggers). The package never imports Snakemake; the workflow calls it through
``bagmar.config`` and scripts/ (docs/architecture.md).
"""


def load_model(path):
    """A model this pipeline wrote (model.safetensors, its model.json, or their folder): (network in eval mode,
    card). See bagmar.models.files.load_model."""
    from .models.files import load_model as load

    return load(path)

"""The method: what is computed, for one model.

- ``loss``: BaGMar's adjusted logits and loss, and the running gradient statistics theta and phi (SPEC §4);
- ``baselines``: the standard long-tailed losses trained under the same recipe (logit adjustment, LDAM-DRW);
- ``model``: ResNet-32 for CIFAR (SPEC §2), and LDAM's cosine classifier;
- ``backbones``: torchvision's ResNets for the image-list data sets.

The post-hoc rules that re-balance saved predictions (PN, post-hoc logit adjustment, tau-normalisation) read saved
outputs only and live in ``bagmar.evaluation.evaluate``.
"""

"""The standard long-tailed losses BaGMar is compared with, trained under the same recipe (SPEC §3).

Each is written for one model, like ``loss.bagmar_loss``, and returns the batch loss and |dL/dz'| (the
gradient w.r.t. the logits the loss trains on), so that the same gradient statistics can be kept for
every training (they are reported, and plotted, for each).

- Logit-adjusted cross-entropy (Menon et al., "Long-tail learning via logit adjustment", ICLR 2021):
  cross-entropy on z + tau * log(pi), pi the training split's class priors. At tau = 1 it is the
  Balanced Softmax of Ren et al. ("Balanced Meta-Softmax for long-tailed visual recognition",
  NeurIPS 2020), whose logits + log(n_c) differ by log(N) only, the same for every class: one loss.
- LDAM-DRW (Cao et al., "Learning imbalanced datasets with label-distribution-aware margin loss",
  NeurIPS 2019): a cosine classifier (model.CosineClassifier, which already scales its cosines by s),
  a margin m_c proportional to n_c^(-1/4), the largest equal to ``max_margin``, subtracted (times s)
  from the target logit; and deferred re-weighting: class-balanced weights (Cui et al., CVPR 2019),
  (1 - beta) / (1 - beta^n_c) normalised to sum to C, from the first epoch after ``drw_after`` of the
  epochs on (161 of 200 at 0.8, as the released code's ``epoch // 160`` does for 0-based epochs).

The post-hoc rules beside PN (post-hoc logit adjustment, tau-normalisation) read saved outputs only and
live in evaluate.py.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

from ..data.long_tail import log_prior  # noqa: F401 (the logit adjustment's prior, re-exported beside its loss)
from .loss import cross_entropy_and_gradient, loss_dtype


def logit_adjusted_logits(logits: torch.Tensor, log_prior: torch.Tensor, tau: float | torch.Tensor) -> torch.Tensor:
    """z + tau * log(pi), in float32 (loss.loss_dtype); log_prior (C,) (or (..., C) with tau of shape (...))."""
    dtype = loss_dtype(logits)
    tau = torch.as_tensor(tau, dtype=torch.float64, device=logits.device)
    return logits.to(dtype) + (tau[..., None] * log_prior).to(dtype).unsqueeze(-2)


def logit_adjusted_loss(logits: torch.Tensor, labels: torch.Tensor, log_prior: torch.Tensor,
                        tau: float | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Menon et al.'s logit-adjusted cross-entropy (batch mean) and |dL/dz'|."""
    return cross_entropy_and_gradient(logit_adjusted_logits(logits, log_prior, tau), labels)


def _counts(train_counts: np.ndarray, what: str) -> np.ndarray:
    """Per-class training counts as float64, each at least 1: a class without images has no margin or weight."""
    counts = np.asarray(train_counts, dtype=np.float64)
    if (counts < 1).any():
        empty = np.flatnonzero(counts < 1)
        raise ValueError(f"{what} needs at least one training image per class; class(es) "
                         f"{', '.join(map(str, empty[:5]))}{' ...' if len(empty) > 5 else ''} have none "
                         "(a long-tailed split keeps at least one image of every class)")
    return counts


def ldam_margins(train_counts: np.ndarray, max_margin: float) -> np.ndarray:
    """m_c = C' * n_c^(-1/4), with C' such that the largest margin (the rarest class's) is ``max_margin``."""
    margins = 1.0 / np.sqrt(np.sqrt(_counts(train_counts, "LDAM's margin n_c^(-1/4)")))
    return margins * (max_margin / margins.max())


def class_balanced_weights(train_counts: np.ndarray, beta: float) -> np.ndarray:
    """(1 - beta) / (1 - beta^n_c), normalised so that the C weights sum to C (Cui et al.; LDAM-DRW's code)."""
    counts = _counts(train_counts, "the class-balanced weight (1 - beta) / (1 - beta^n_c)")
    weights = (1.0 - beta) / (1.0 - np.power(beta, counts))
    return weights / weights.sum() * len(counts)


def drw_active(epoch: int, epochs: int, drw_after: float) -> bool:
    """Deferred re-weighting is on for epochs (1-based) after the first ``drw_after`` of them."""
    return epoch > drw_after * epochs


def ldam_logits(logits: torch.Tensor, labels: torch.Tensor, target_margins: torch.Tensor) -> torch.Tensor:
    """The logits minus each sample's target-class margin at its target (float32: loss.loss_dtype).

    ``logits`` are the cosine classifier's s * cos (model.CosineClassifier), so ``target_margins`` is
    s * m (C,) (or (..., C)); the released code subtracts m from the cosine and then scales by s, which
    is the same number up to rounding.
    """
    dtype = loss_dtype(logits)
    margin = target_margins.to(dtype).expand(*labels.shape[:-1], logits.shape[-1]).gather(-1, labels)
    return logits.to(dtype) - F.one_hot(labels, logits.shape[-1]).to(dtype) * margin[..., None]


def ldam_drw_loss(logits: torch.Tensor, labels: torch.Tensor, margins: torch.Tensor, scale: float,
                  weights: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """LDAM on a cosine classifier's scaled logits, weighted by ``weights`` (C,) once DRW is on (else None)."""
    return cross_entropy_and_gradient(ldam_logits(logits, labels, scale * margins), labels, weights)

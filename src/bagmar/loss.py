"""The BaGMar loss and its running gradient statistics (SPEC §4).

Training minimises the batch-mean cross-entropy of adjusted logits

    z'[i, j] = z[i, j] + lambda1 * log(theta[j] + eps) - lambda2 * log(phi[y_i] + eps),   eps = 1e-3,

where theta[j] is the accumulated positive gradient of classifier j and phi[k] the accumulated
negative gradient received by samples of class k. The phi term is the same for every j of one
sample, so it cancels inside the softmax: with cross-entropy, lambda2 changes neither the loss
nor any gradient (tests/test_loss.py proves it). It is kept because the paper's configs set it.
Cross-entropy is the special case lambda1 = lambda2 = 0.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

EPS = 1e-3


class GradientStatistics:
    """SPEC §4's bookkeeping, float64, on the training device.

    SPEC keeps three C x C matrices: F (F[:, y_i] += |g_i| every step, never reset), and
    P += F * I, N += F * (1 - I) after every step, with theta = P.sum(1) and phi = N.sum(0).
    Since P only ever receives F's diagonal and N its off-diagonal, theta and phi are
    accumulated directly: theta += diag(F) and phi += F.sum(0) - diag(F) — the same numbers
    (tests/test_loss.py checks them against the three-matrix version) without two matrices.
    """

    def __init__(self, num_classes: int, device: torch.device | str = "cpu"):
        zeros = dict(dtype=torch.float64, device=device)
        self.F = torch.zeros(num_classes, num_classes, **zeros)  # rows: classifier j, cols: sample class k
        self.theta = torch.zeros(num_classes, **zeros)
        self.phi = torch.zeros(num_classes, **zeros)

    def update(self, grad: torch.Tensor, labels: torch.Tensor) -> None:
        """grad: |dL/dz'| of the batch-mean loss, (B, C); labels: (B,)."""
        self.F.index_add_(1, labels, grad.t().to(torch.float64))
        diagonal = self.F.diagonal()
        self.theta += diagonal
        self.phi += self.F.sum(0) - diagonal

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"F": self.F, "theta": self.theta, "phi": self.phi}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for name, value in state.items():
            getattr(self, name).copy_(value)


def adjusted_logits(
    logits: torch.Tensor, labels: torch.Tensor, stats: GradientStatistics, lambda1: float, lambda2: float
) -> torch.Tensor:
    """z' of SPEC §4, in float32 whatever the logits' dtype."""
    class_margin = (lambda1 * torch.log(stats.theta + EPS)).to(torch.float32)
    sample_margin = (lambda2 * torch.log(stats.phi[labels] + EPS)).to(torch.float32)
    return logits.float() + class_margin - sample_margin[:, None]


def bagmar_loss(
    logits: torch.Tensor, labels: torch.Tensor, stats: GradientStatistics, lambda1: float, lambda2: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch-mean cross-entropy on z', and |dL/dz'| for the statistics.

    The gradient of the mean cross-entropy w.r.t. z' is (softmax(z') - onehot(y)) / B, so it is
    formed directly instead of through an autograd hook.
    """
    adjusted = adjusted_logits(logits, labels, stats, lambda1, lambda2)
    loss = F.cross_entropy(adjusted, labels)
    with torch.no_grad():
        onehot = F.one_hot(labels, adjusted.shape[1]).to(adjusted.dtype)
        grad = (adjusted.softmax(1) - onehot).abs_() / adjusted.shape[0]
    return loss, grad

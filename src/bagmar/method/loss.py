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


MATRIX_MAX_CLASSES = 1000  # the config's default (statistics_matrix_max_classes): F of 1,000 classes is 8 MB


class GradientStatistics:
    """SPEC §4's bookkeeping for one model, float64, on the training device, in O(C) memory.

    SPEC keeps three C x C matrices: F (F[:, y_i] += |g_i| every step, never reset), and
    P += F * I, N += F * (1 - I) after every step, with theta = P.sum(1) and phi = N.sum(0).
    Since P only ever receives F's diagonal and N its off-diagonal, theta += diag(F) and
    phi += F.sum(0) - diag(F) — and both of those are running sums of their own: diag(F)[k] gathers each
    class-k sample's gradient at k, F.sum(0)[k] each class-k sample's whole L1 gradient mass. So two C-vectors
    (``diagonal`` and ``mass``) give the same theta and phi without any C x C matrix: at iNaturalist's 8,142
    classes F would be 530 MB and a 66 M-element sum per step. tests/test_loss.py checks this against SPEC's
    three matrices, and against F kept beside it.

    ``keep_matrix``: also accumulate F itself, to save it with the statistics (the default where
    C <= MATRIX_MAX_CLASSES). It never enters theta or phi.
    (engine.StackedStatistics packs the sets of K models into single tensors.)
    """

    def __init__(self, num_classes: int, device: torch.device | str = "cpu", keep_matrix: bool | None = None):
        self._allocate((), num_classes, device, keep_matrix)

    def _allocate(self, leading: tuple[int, ...], num_classes: int, device: torch.device | str,
                  keep_matrix: bool | None) -> None:
        """Zeroed statistics; ``leading`` dimensions (none here) let a subclass hold several sets."""
        zeros = dict(dtype=torch.float64, device=device)
        if keep_matrix is None:
            keep_matrix = num_classes <= MATRIX_MAX_CLASSES
        self._diagonal = torch.zeros(*leading, num_classes, **zeros)  # diag(F): the running positive gradient
        self._mass = torch.zeros(*leading, num_classes, **zeros)  # F.sum(0): all gradient of a class's samples
        self._theta = torch.zeros(*leading, num_classes, **zeros)
        self._phi = torch.zeros(*leading, num_classes, **zeros)
        # stored as F transposed, [..., sample class k, classifier j], so that one index_add_ over rows adds
        # every sample's gradient row
        self._f_by_class = torch.zeros(*leading, num_classes, num_classes, **zeros) if keep_matrix else None

    @property
    def keeps_matrix(self) -> bool:
        return self._f_by_class is not None

    @property
    def F(self) -> torch.Tensor:  # noqa: N802 (SPEC's name); rows: classifier j, cols: sample class k
        if self._f_by_class is None:
            raise AttributeError("F is not kept for this many classes (statistics_matrix_max_classes)")
        return self._f_by_class.transpose(-1, -2)

    @property
    def theta(self) -> torch.Tensor:
        return self._theta

    @property
    def phi(self) -> torch.Tensor:
        return self._phi

    def update(self, grad: torch.Tensor, labels: torch.Tensor) -> None:
        """grad: |dL/dz'| of the batch-mean loss, (B, C); labels: (B,)."""
        self._add(grad, labels, labels)
        self._accumulate()

    def _add(self, grad: torch.Tensor, labels: torch.Tensor, rows: torch.Tensor) -> None:
        """One step's gradients (N, C) with their labels (N,) into the running sums, flattened over any leading
        dimensions; sample n's row is rows[n] (its label, offset by model in a stack)."""
        c = grad.shape[-1]
        grad = grad.reshape(-1, c).to(torch.float64)
        self._diagonal.view(-1).index_add_(0, rows, grad.gather(1, labels.reshape(-1, 1)).squeeze(1))
        self._mass.view(-1).index_add_(0, rows, grad.sum(1))
        if self._f_by_class is not None:
            self._f_by_class.view(-1, c).index_add_(0, rows, grad)

    def _accumulate(self) -> None:
        """theta += diag(F), phi += F.sum(0) - diag(F), after the step's gradients are in."""
        self._theta += self._diagonal
        self._phi += self._mass - self._diagonal

    def state_dict(self) -> dict[str, torch.Tensor]:
        state = {"diagonal": self._diagonal, "mass": self._mass, "theta": self.theta, "phi": self.phi}
        return {"F": self.F, **state} if self.keeps_matrix else state

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if ("F" in state) != self.keeps_matrix:
            raise ValueError(f"statistics {'with' if 'F' in state else 'without'} F cannot be loaded into a set "
                             f"{'with' if self.keeps_matrix else 'without'} it")
        for name, value in state.items():
            target = self.F if name == "F" else {"diagonal": self._diagonal, "mass": self._mass}.get(name)
            (getattr(self, name) if target is None else target).copy_(value)


def loss_dtype(logits: torch.Tensor) -> torch.dtype:
    """The dtype every loss is computed in: float32, or float64 for a training run in float64 (bfloat16
    logits of an autocast forward pass are promoted)."""
    return torch.promote_types(logits.dtype, torch.float32)


def adjusted_logits(
    logits: torch.Tensor,
    labels: torch.Tensor,
    stats: GradientStatistics,
    lambda1: float | torch.Tensor,
    lambda2: float | torch.Tensor,
) -> torch.Tensor:
    """z' of SPEC §4, in float32 for float32 and bfloat16 logits (float64 logits stay float64).

    logits (B, C), labels (B,), ``stats`` anything with theta and phi (C,), float lambdas. Leading
    dimensions broadcast: logits (..., B, C) with theta and phi (..., C) and lambdas of shape (...).
    """
    dtype = loss_dtype(logits)
    lambda1, lambda2 = (torch.as_tensor(v, dtype=torch.float64, device=logits.device) for v in (lambda1, lambda2))
    class_margin = (lambda1[..., None] * torch.log(stats.theta + EPS)).to(dtype)
    sample_margin = (lambda2[..., None] * torch.log(stats.phi.gather(-1, labels) + EPS)).to(dtype)
    return logits.to(dtype) + class_margin.unsqueeze(-2) - sample_margin[..., None]


def bagmar_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    stats: GradientStatistics,
    lambda1: float | torch.Tensor,
    lambda2: float | torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch-mean cross-entropy on z', and |dL/dz'| for the statistics. With leading dimensions (see
    ``adjusted_logits``) each leading index is a batch of its own, with its own mean."""
    return cross_entropy_and_gradient(adjusted_logits(logits, labels, stats, lambda1, lambda2), labels)


def cross_entropy_and_gradient(
    adjusted: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy on the logits a loss trains on, its batch mean, and |dL/dz'| (B, C).

    ``weights`` (C,) per class (or (..., C) with leading dimensions) make it the weighted mean
    sum_i w[y_i] * CE_i / sum_i w[y_i], as torch's ``cross_entropy(weight=...)`` takes it; without
    weights every class weighs 1, which is the plain mean, computed the same way: weights of all
    ones give exactly the unweighted numbers.
    The gradient w.r.t. z' is w[y_i] * (softmax(z'_i) - onehot(y_i)) / sum_i w[y_i], formed directly
    instead of through an autograd hook.
    """
    c = adjusted.shape[-1]
    if weights is None:  # every sample's share is 1/B (what all-ones weights give), without gathering them
        share = adjusted.new_full(labels.shape, 1.0 / labels.shape[-1])
    else:
        sample_weights = weights.expand(*labels.shape[:-1], c).gather(-1, labels).to(adjusted.dtype)  # (..., B)
        share = sample_weights / sample_weights.sum(-1, keepdim=True)
    per_sample = F.cross_entropy(adjusted.reshape(-1, c), labels.reshape(-1), reduction="none").view(labels.shape)
    loss = (per_sample * share).sum(-1)
    with torch.no_grad():
        onehot = F.one_hot(labels, c).to(adjusted.dtype)
        grad = (adjusted.softmax(-1) - onehot).abs_() * share[..., None]
    return loss, grad

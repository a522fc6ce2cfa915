"""The paper's loss: ``1 - (CCC_a + CCC_v) / 2`` (eq. 2), with a differentiable CCC (eq. 1).

``CCC = 2 s_xy / (s_x^2 + s_y^2 + (mean_x - mean_y)^2)`` with population (1/N) variances and
covariance, as eq. 1 and ``affbatch.evaluation.metrics.ccc``.

**Over what the CCC is computed: the whole batch.** Each dimension's CCC is taken over all
frames of the batch at once (4 x 80 = 320 values), not per sequence and then averaged. Why:
the paper describes the batch as one set of 320 frames ("the batch size was set to 320
(consisting of 4 different sequences ...)") and does not say more; the authors' TensorFlow
code is reported to compute it over the flattened batch (we have not seen that code). The
evaluation protocol, too, computes one CCC over the concatenation of all frames, so the batch
CCC is the minibatch estimate of the metric being optimised. It also behaves better: a single
80-frame sequence often has an almost constant label (a calm stretch of a video), and its CCC
is then dominated by a tiny variance and noisy; across 4 sequences from different tracks the
spread of the labels is that of the data set. ``reduction="sequence"`` (per sequence, then
the mean) is there for experiments.
"""

from __future__ import annotations

import torch

#: Keeps the denominator positive when both series are constant and equal (CCC undefined: 0 here).
EPS = 1e-8
REDUCTIONS = ("batch", "sequence")


def ccc(pred: torch.Tensor, target: torch.Tensor, dim=None) -> torch.Tensor:
    """Differentiable CCC of ``pred`` and ``target`` over ``dim`` (all elements when None), float32."""
    x = pred.float()
    y = target.float()
    mean_x = x.mean(dim=dim, keepdim=True)
    mean_y = y.mean(dim=dim, keepdim=True)
    dx, dy = x - mean_x, y - mean_y
    covariance = (dx * dy).mean(dim=dim)
    var_x = (dx * dx).mean(dim=dim)
    var_y = (dy * dy).mean(dim=dim)
    # The difference of the means as the mean of the differences, as affbatch.evaluation.metrics.ccc.
    mean_difference = (x - y).mean(dim=dim)
    return 2 * covariance / (var_x + var_y + mean_difference**2 + EPS)


def ccc_loss(
    pred: torch.Tensor, target: torch.Tensor, reduction: str = "batch"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Loss ``1 - (CCC_v + CCC_a) / 2`` for (B, T, 2) predictions and targets (valence, arousal).

    Returns (loss, ccc_valence, ccc_arousal); the CCCs are over the whole batch (``"batch"``) or
    per sequence averaged over the batch (``"sequence"``), see the module docstring.
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction {reduction!r}: choose one of {', '.join(REDUCTIONS)}")
    if pred.shape != target.shape or pred.shape[-1] != 2:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)}: need equal (..., 2) shapes")
    if reduction == "batch":
        values = ccc(pred.reshape(-1, 2), target.reshape(-1, 2), dim=0)  # (2,)
    else:
        values = ccc(pred, target, dim=1).mean(dim=0)  # (B, 2) -> (2,)
    ccc_v, ccc_a = values[0], values[1]
    return 1 - (ccc_v + ccc_a) / 2, ccc_v, ccc_a

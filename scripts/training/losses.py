"""Training losses: MNT-DL's deep supervision (BCE(main) + gamma * sum_k BCE(aux_k)), with the readings; SimSiam."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class DeepSupervisionBCELoss(nn.Module):
    """Binary cross-entropy on the main logit plus ``gamma`` times the sum over auxiliary logits.

    ``forward(logits, target)``: logits (B, 1 + K) as returned by ``MNTDL.forward_all`` (K may be 0),
    target (B,) or (B, 1) with values in {0, 1}. Each BCE term is the mean over the batch.
    """

    def __init__(self, gamma: float = 0.5) -> None:
        super().__init__()
        self.gamma = gamma

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target = target.reshape(-1, 1).to(logits.dtype).expand(-1, logits.shape[1])
        per_column = F.binary_cross_entropy_with_logits(logits, target, reduction="none").mean(dim=0)
        return per_column[0] + self.gamma * per_column[1:].sum()


class SimSiamLoss(nn.Module):
    """Symmetric negative cosine similarity with stop-gradient (SimSiam):

    L = -1/2 [cos(p1, sg(z2)) + cos(p2, sg(z1))], p and z of shape (B, dim); the mean over the batch.
    The targets z are detached here, so no gradient reaches the encoder through them.
    ``stop_gradient=False`` removes the detach: the ablation of the SimSiam paper, which collapses.
    """

    def __init__(self, stop_gradient: bool = True) -> None:
        super().__init__()
        self.stop_gradient = stop_gradient

    def forward(self, p1: torch.Tensor, p2: torch.Tensor, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        if self.stop_gradient:
            z1, z2 = z1.detach(), z2.detach()
        cos = F.cosine_similarity
        return -0.5 * (cos(p1, z2, dim=1).mean() + cos(p2, z1, dim=1).mean())


class ReadingSupervisionLoss(DeepSupervisionBCELoss):
    """Deep supervision of the outcome plus the readings: outcome * (BCE(main) + gamma * sum_k BCE(aux_k)) + weight *
    MSE(predicted readings, the reader's).

    ``forward(output, target)``: output (B, 1 + K + 2 R) as returned by ``ReadingMNTDL.forward_all`` (the last 2 R
    columns: R predicted readings, then the R standardised readings of the reader), target (B,) or (B, 1) in {0, 1}
    (None when ``outcome`` is 0: the reading pretraining on an unlabeled pool).

    Args:
        gamma: weight of each auxiliary neighbourhood logit's BCE.
        weight: weight of the readings' mean squared error (0: the outcome alone).
        readings: R.
        outcome: weight of the outcome's deep supervision (0: the readings alone, no label needed).
    """

    def __init__(self, gamma: float = 0.5, weight: float = 1.0, readings: int = 4, outcome: float = 1.0) -> None:
        super().__init__(gamma)
        self.weight, self.readings, self.outcome = weight, readings, outcome

    def forward(self, logits: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        r = self.readings
        outcome, predicted, read = logits[:, : -2 * r], logits[:, -2 * r : -r], logits[:, -r:]
        loss = self.weight * F.mse_loss(predicted.float(), read.float())
        if self.outcome:
            loss = loss + self.outcome * super().forward(outcome, target)
        return loss

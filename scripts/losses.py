"""Deep-supervision loss of MNT-DL: L = BCE(main) + gamma * sum_k BCE(aux_k)."""

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

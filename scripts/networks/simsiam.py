"""SimSiam (Chen and He, CVPR 2021) around the MNT-DL encoder, written from the paper; MONAI has none."""

from __future__ import annotations

from typing import Tuple

import torch
from torch import nn

from scripts.networks.mnt_dl import MNTDL


def projector(in_features: int, dim: int, output_bn: bool = True) -> nn.Sequential:
    """3-layer MLP with BatchNorm; the output BatchNorm has no affine parameters (as in the paper)."""
    return nn.Sequential(
        nn.Linear(in_features, dim, bias=False),
        nn.BatchNorm1d(dim),
        nn.ReLU(inplace=True),
        nn.Linear(dim, dim, bias=False),
        nn.BatchNorm1d(dim),
        nn.ReLU(inplace=True),
        nn.Linear(dim, dim, bias=not output_bn),
        nn.BatchNorm1d(dim, affine=False) if output_bn else nn.Identity(),
    )


def predictor(dim: int, hidden: int) -> nn.Sequential:
    """2-layer bottleneck MLP h (hidden = dim / 4 by default in :class:`SimSiam`)."""
    return nn.Sequential(
        nn.Linear(dim, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True), nn.Linear(hidden, dim)
    )


class SimSiam(nn.Module):
    """Two views (B, C, H, W, D) each -> predictions p1, p2 and projections z1, z2, all (B, dim).

    The encoder is MNT-DL's stem, local networks and slice attention (``MNTDL.slice_features``),
    mean-pooled over the D slices to a compact (B, F) embedding (not the 25 x F flatten of the published
    builder). ``encoder`` keeps the MNT-DL parameter names, so its state dict loads into a classifier.
    ``use_predictor=False`` (predictor replaced by the identity) and ``output_bn=False`` (no BatchNorm on the
    projector output) are ablations; with the loss's ``stop_gradient=False`` they make a collapsing setup.
    """

    def __init__(
        self,
        encoder: MNTDL,
        dim: int = 512,
        pred_dim: int | None = None,
        use_predictor: bool = True,
        output_bn: bool = True,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        features = encoder.aux_heads[0].in_features // encoder.size
        self.projector = projector(features, dim, output_bn)
        self.predictor = predictor(dim, pred_dim or dim // 4) if use_predictor else nn.Identity()

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W, D) -> projection z (B, dim)."""
        return self.projector(self.encoder.slice_features(x).mean(dim=1))

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        z1, z2 = self.embed(x1), self.embed(x2)
        return self.predictor(z1), self.predictor(z2), z1, z2


def collapse_score(z: torch.Tensor) -> float:
    """Mean per-dimension std over the batch of the L2-normalised projections (B, dim).

    About 1 / sqrt(dim) for healthy, spread-out outputs; near 0 when every input maps to one vector.
    """
    z = nn.functional.normalize(z.detach().float(), dim=1)
    return float(z.std(dim=0).mean())

"""ReadingNet: a small 3-D CNN that reads the clot and collateral quantities off the mirrored vessel box.

The hand rules of :mod:`scripts.networks.clot_readings` count the voxels whose enhancement falls below a share of their
mirror's. Where the two hemispheres' vessels are not mirror images to the sub-voxel (every real patient, and the
varied demo), a vessel one voxel off its mirror reads as clot beside it, and the clot length they give follows the
truth at r 0.45-0.50 (docs/performance.md). A network given the same box and the rules' own vessel and clot
memberships learns which of those voxels are a clot: trained on generated patients whose true values are known
(:mod:`scripts.training.reading_net`, the varied world's per-patient bolus, calibre, asymmetry, veins, calcification,
noise and misregistration), it reads cohorts it never saw at r 0.86-0.88 for the length, 0.99 for the collateral grade,
and, with its first features pooled over the memberships, 0.47-0.55 for the density and 0.27-0.42 for the perviousness.
"""

from __future__ import annotations

from typing import Any, Dict, Sequence

import torch
from torch import nn

# what the outputs are, in order (the generator's truth of the same names): log clot length in mm, clot density on
# NCCT in HU, perviousness (the share of the arterial enhancement inside the clot), collateral grade 0-3
TARGETS = ("clot_length_mm", "clot_density_hu", "clot_perviousness", "collaterals")


def _block(channels_in: int, channels_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv3d(channels_in, channels_out, 3, padding=1, bias=False),
        nn.BatchNorm3d(channels_out),
        nn.ReLU(inplace=True),
        nn.Conv3d(channels_out, channels_out, 3, padding=1, bias=False),
        nn.BatchNorm3d(channels_out),
        nn.ReLU(inplace=True),
    )


class ReadingNet(nn.Module):
    """``forward(x)``: ``x`` (B, 6, H, W, D): the mirrored vessel box of ``configs/clot_readings.json`` (NCCT, CTA,
    mirrored NCCT, mirrored CTA, windowed to [0, 1], the occluded side first) and the reader's vessel and clot
    memberships (:meth:`ClotReadingNet.membership_maps`). Output (B, 4): the :data:`TARGETS` (the length as its log)
    in their own units (``mean`` and ``std`` of the training cohorts undo the standardisation it was trained on).

    The own side minus its mirror (NCCT and CTA) is added as two channels, one convolution at the box's own grid
    keeps the sub-voxel detail, then three blocks of two convolutions with max pooling between; the global mean and
    maximum of the last features go through one linear layer. With ``membership_pool``, the first convolution's
    features at the box's own grid are also averaged over the clot membership and over the vessel membership: a
    clot's density and the contrast inside it are a few voxels' values, which the pooled deep features lose.

    Args:
        in_channels: channels of ``x`` (6).
        widths: features of the first convolution and of the three blocks.
        dropout: before the linear layer.
        membership_pool: the first features pooled over the memberships (channels 4 and 5) join the linear layer.
    """

    def __init__(
        self,
        in_channels: int = 6,
        widths: Sequence[int] = (12, 24, 48, 64),
        dropout: float = 0.2,
        membership_pool: bool = False,
    ) -> None:
        super().__init__()
        self.config: Dict[str, Any] = {"in_channels": in_channels, "widths": list(widths), "dropout": dropout}
        if membership_pool:  # files written without it load with the default
            self.config["membership_pool"] = True
        self.membership_pool = bool(membership_pool)
        w = list(widths)
        self.features = nn.Sequential(
            nn.Conv3d(in_channels + 2, w[0], 3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool3d(2),
            _block(w[0], w[1]),
            nn.MaxPool3d(2),
            _block(w[1], w[2]),
            nn.MaxPool3d(2),
            _block(w[2], w[3]),
        )
        pooled = 2 * w[3] + (2 * w[0] if membership_pool else 0)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(pooled, len(TARGETS)))
        self.register_buffer("mean", torch.zeros(len(TARGETS)))
        self.register_buffer("std", torch.ones(len(TARGETS)))

    def standardised(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 6, H, W, D) -> (B, 4): the readings standardised by the training cohorts' ``mean`` and ``std``."""
        vessel, clot = x[:, 4:5], x[:, 5:6]
        x = torch.cat([x, x[:, 0:1] - x[:, 2:3], x[:, 1:2] - x[:, 3:4]], 1)
        first = self.features[:2](x)  # (B, w0, H, W, D): the box's own grid
        f = self.features[2:](first)
        pooled = [f.mean((2, 3, 4)), f.amax((2, 3, 4))]
        if self.membership_pool:
            pooled.append(_membership_pool(first, torch.cat([clot, vessel], 1)))
        return self.head(torch.cat(pooled, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 6, H, W, D) -> (B, 4) readings in the :data:`TARGETS`' units."""
        return self.standardised(x) * self.std + self.mean

    def save(self, path: str, **record: Any) -> None:
        """Weights, architecture and ``record`` (what it was trained on) in one file for :meth:`load`."""
        torch.save({"state_dict": self.state_dict(), "config": self.config, "targets": list(TARGETS), **record}, path)

    @classmethod
    def load(cls, path: str) -> "ReadingNet":
        """The network :meth:`save` wrote to ``path``, in eval mode."""
        saved = torch.load(path, map_location="cpu", weights_only=True)
        if saved.get("targets") != list(TARGETS):
            raise ValueError(f"{path}: not a ReadingNet of the readings {list(TARGETS)}")
        net = cls(**saved["config"])
        net.load_state_dict(saved["state_dict"])
        return net.eval()


def _membership_pool(features: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W, D) features, (B, 2, H, W, D) clot and vessel memberships -> (B, 2 C): the features' means over
    each membership, 0 where it is empty (one matrix product per patient: in the channels-last layout the training
    uses, no copy of the features)."""
    f = features.permute(0, 2, 3, 4, 1).flatten(1, 3)  # (B, N, C)
    w = weights.flatten(2).to(f.dtype)  # (B, 2, N)
    return (torch.bmm(w, f) / w.sum(2, keepdim=True).clamp_min(1.0)).flatten(1)

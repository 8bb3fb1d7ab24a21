"""SlabNet: a small network that reads the vessels of a mirrored vessel box as radiologists read CTA: slab MIPs.

Built for the vessel-box input of ``configs/experiments/vessel.json`` (both ICA / MCA courses in an MNI box, each
sequence followed by its left-right mirror), where the outcome lives in a few hundred voxels: the clot (its length,
density, perviousness) and the vessels beyond it (collateral filling). With 300 labelled patients, networks with
spatial convolutions memorise the noise of those volumes before they find the clot (measured: docs/README.md,
Performance); SlabNet instead sees every in-plane position as one vector and pools detections over the plane:

1. asymmetry: for each sequence, image minus its mirror (the other hemisphere is each patient's own control);
2. slab projections along z: the volume's D slices are split into ``num_slabs`` slabs, and per slab the maximum
   of every channel and the maximum and minimum of every asymmetry channel (maximum-intensity projections, as CTA
   collaterals are graded on MIP slabs);
3. a per-position MLP (1 x 1 convolutions with BatchNorm and ReLU) maps that vector to ``features`` detector maps;
4. global mean pooling (how much: clot length, filled distal vessels) and global max pooling (how strong: density,
   perviousness), BatchNorm, dropout and a linear layer give the logit.

It has no spatial convolution, so it cannot fit a position-specific noise pattern; it stays equivariant to the
left-right flip of the augmentation up to a fixed permutation of its input channels.
"""

from __future__ import annotations

import torch
from torch import nn


class SlabNet(nn.Module):
    """Slab-MIP asymmetry features, a per-position MLP and global pooling.

    Input ``x``: (B, 2S, H, W, D): S sequences then their S left-right mirrors (``configs/experiments/vessel.json`` with
    ``mirror`` on), D slices with D divisible by ``num_slabs``. Output: the logit, (B, 1).

    Args:
        sequences: S, the number of sequences before their mirrors (2 for NCCT + CTA).
        num_slabs: slabs along D (D = num_slices must be a multiple).
        features: detector maps of the per-position MLP (its hidden layer has the same width).
        dropout: dropout before the linear layer (inactive in eval mode).
    """

    def __init__(self, sequences: int = 2, num_slabs: int = 5, features: int = 8, dropout: float = 0.1) -> None:
        super().__init__()
        self.sequences, self.num_slabs = sequences, num_slabs
        per_slab = 2 * sequences + 2 * sequences  # max of the 2S channels, max and min of the S asymmetries
        self.position_mlp = nn.Sequential(
            nn.Conv2d(per_slab * num_slabs, features, 1),
            nn.BatchNorm2d(features),
            nn.ReLU(),
            nn.Conv2d(features, 2 * features, 1),
            nn.BatchNorm2d(2 * features),
            nn.ReLU(),
        )
        self.head = nn.Sequential(nn.BatchNorm1d(4 * features), nn.Dropout(dropout), nn.Linear(4 * features, 1))

    def slab_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 2S, H, W, D) -> per-position slab features (B, F_in, H, W), F_in = 4 S num_slabs."""
        b, c, h, w, d = x.shape
        if c != 2 * self.sequences or d % self.num_slabs:
            raise ValueError(
                f"expected input (B, {2 * self.sequences}, H, W, D) with D a multiple of {self.num_slabs} "
                f"(sequences then their mirrors), got {list(x.shape)}"
            )
        asym = x[:, : self.sequences] - x[:, self.sequences :]
        slabs = x.reshape(b, c, h, w, self.num_slabs, d // self.num_slabs)
        asym_slabs = asym.reshape(b, self.sequences, h, w, self.num_slabs, d // self.num_slabs)
        parts = [slabs.amax(-1), asym_slabs.amax(-1), asym_slabs.amin(-1)]
        return torch.cat(parts, 1).permute(0, 1, 4, 2, 3).reshape(b, -1, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 2S, H, W, D) -> logit (B, 1)."""
        maps = self.position_mlp(self.slab_features(x))
        return self.head(torch.cat([maps.mean((2, 3)), maps.amax((2, 3))], 1))

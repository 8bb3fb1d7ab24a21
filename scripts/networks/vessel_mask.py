"""VesselMaskNet: learned clot and vessel measurements on the CTA iodine set, a network shaped like clot radiomics.

Built for the mirrored vessel box of ``configs/experiments/vessel.json`` (NCCT and CTA, each followed by its left-right
mirror). The first-pass literature's imaging predictors are measurements of a few hundred voxels: the clot's length,
density (NCCT HU) and perviousness (CTA HU inside it), and how brightly the vessels beyond it fill (collaterals).
Radiologists find them on the vessels, so the network does the same:

1. **Vessel set**: the ``points`` voxels with the strongest iodine signal, max(CTA, mirrored CTA), among voxels that
   are not dense on NCCT (bone and calcification are bright on both; contrast only on CTA). The contralateral
   vessel is bright where the clot sits, so the clot's voxels are in the set.
2. Per point: NCCT, CTA, their mirrors and the two asymmetries (image minus mirror: the other hemisphere is each
   patient's own control).
3. ``masks`` learned soft masks over the points (a per-point MLP with a sigmoid; e.g. "dark vessel whose mirror is
   bright" = clot, "dimmer than its mirror" = poorly filled distal vessel).
4. Per mask: the log of its soft size (clot length is a count of voxels along the vessel) and the soft-masked mean
   of every point channel (clot density, perviousness, filling grade); BatchNorm, dropout and one linear layer give
   the logit, so the outcome is a linear function of learned measurements, like a clot-radiomics model, with the
   segmentation learned from the outcome alone.

With ``clinical_columns`` (e.g. occlusion site, age, IVT, NIHSS: what the stroke team knows before the groin
puncture), the encoded clinical vector (:class:`TabularEncoder`, fitted on the fold's training rows) joins the
measurements before the linear layer: late fusion, each clinical variable one more term of the same linear logit.

Without spatial convolutions or position inputs it has a few hundred parameters and cannot memorise the noise or
the anatomy of a few hundred volumes (docs/README.md, Performance).
"""

from __future__ import annotations

from typing import Dict, Sequence

import torch
from torch import nn

from scripts.networks.tabular import ColumnSpec, TabularEncoder


class VesselMaskNet(nn.Module):
    """Soft-mask measurements on the CTA iodine set of a mirrored NCCT + CTA vessel box.

    ``forward(x[, clinical])``: ``x`` (B, 4, H, W, D): NCCT, CTA, mirrored NCCT, mirrored CTA, each windowed to
    [0, 1] (``configs/experiments/vessel.json``); ``clinical`` (B, R) raw clinical values when ``clinical_columns``
    is given.
    Output: the logit, (B, 1).

    Args:
        points: size of the vessel set (voxels per patient).
        masks: learned soft masks.
        hidden: width of the per-point MLP's hidden layer.
        bone_level: windowed NCCT value at or above which a voxel is dense on NCCT (bone, calcification) and leaves
            the vessel set; 0.95 of the default NCCT window [0, 100] HU = 95 HU.
        dropout: dropout before the linear layer (inactive in eval mode).
        clinical_columns: {name: "numeric" | [categories]}; None = image only.
        ratio: add a seventh point channel, CTA / mirrored CTA (clipped to [0, 2]): a vessel's filling relative to
            the other hemisphere's, the same whatever share of the voxel the vessel fills.
        means: indices of the point channels whose masked means are measured (0-3 the input channels, 4-5 the
            asymmetries, 6 the ratio); None = all.
        ratio_masks: instead of the per-point MLP, mask m is sigmoid(k_m (c_m - ratio)): the points that fill less
            than a learned share c_m of the other hemisphere's vessel (two parameters per mask; needs ``ratio``).
    """

    def __init__(
        self,
        points: int = 1024,
        masks: int = 4,
        hidden: int = 8,
        bone_level: float = 0.95,
        dropout: float = 0.1,
        clinical_columns: Dict[str, ColumnSpec] | None = None,
        ratio: bool = False,
        means: Sequence[int] | None = None,
        ratio_masks: bool = False,
    ) -> None:
        super().__init__()
        self.points, self.bone_level, self.ratio = points, bone_level, ratio
        channels = 7 if ratio else 6  # NCCT, CTA, their mirrors, two asymmetries[, CTA / mirrored CTA]
        self.means = list(range(channels)) if means is None else [int(c) for c in means]
        if ratio_masks:  # mask m: the points filling less than a learned share c_m of their contralateral vessel
            if not ratio:
                raise ValueError("ratio_masks needs ratio=True")
            self.cuts = nn.Parameter(torch.linspace(0.2, 0.9, masks))
            self.log_sharpness = nn.Parameter(torch.full((masks,), 3.0))  # e^3 = 20 per unit of ratio
        else:
            self.mask_mlp = nn.Sequential(
                nn.Conv1d(channels, hidden, 1), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Conv1d(hidden, masks, 1)
            )
        features = masks * (1 + len(self.means))
        if clinical_columns:
            self.tabular = TabularEncoder(clinical_columns)
            features += self.tabular.out_features
        self.head = nn.Sequential(nn.BatchNorm1d(features), nn.Dropout(dropout), nn.Linear(features, 1))

    def vessel_points(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 4, H, W, D) -> point channels of the vessel set (B, 6 or 7 with ``ratio``, points)."""
        if x.ndim != 5 or x.shape[1] != 4:
            raise ValueError(f"expected input (B, 4, H, W, D): NCCT, CTA and their mirrors, got {list(x.shape)}")
        if x[0, 0].numel() < self.points:
            raise ValueError(f"the vessel box has {x[0, 0].numel()} voxels, fewer than points={self.points}")
        parts = [x, x[:, :2] - x[:, 2:]]
        if self.ratio:  # iodine relative to the other hemisphere's vessel: the same in a thin or a thick vessel
            parts.append((x[:, 1:2] / x[:, 3:4].clamp_min(0.05)).clamp(0, 2))
        channels = torch.cat(parts, 1).flatten(2)
        iodine = torch.maximum(x[:, 1] * (x[:, 0] < self.bone_level), x[:, 3] * (x[:, 2] < self.bone_level))
        index = iodine.flatten(1).topk(self.points, 1).indices
        return torch.gather(channels, 2, index.unsqueeze(1).expand(-1, channels.shape[1], -1))

    def measurements(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 4, H, W, D) -> per mask log soft size and masked channel means, (B, masks x (1 + len(means)))."""
        points = self.vessel_points(x)
        if hasattr(self, "cuts"):
            logit = self.log_sharpness.exp()[:, None] * (self.cuts[:, None] - points[:, 6:7])
        else:
            logit = self.mask_mlp(points)
        weight = torch.sigmoid(logit).float()  # (B, masks, points)
        size = weight.mean(-1)
        with torch.autocast(x.device.type, enabled=False):  # sums over thousands of points: fp32 under bf16 autocast
            means = torch.einsum("bmk,bck->bmc", weight, points[:, self.means].float()) / (
                weight.sum(-1, keepdim=True) + 1e-3
            )
        return torch.cat([torch.log(size + 1e-3), means.flatten(1)], 1)

    def forward(self, x: torch.Tensor, clinical: torch.Tensor | None = None) -> torch.Tensor:
        """(B, 4, H, W, D) [and (B, R) raw clinical values] -> logit (B, 1)."""
        features = self.measurements(x)
        tabular = getattr(self, "tabular", None)
        if tabular is not None:
            if clinical is None:
                raise ValueError("this VesselMaskNet was built with clinical_columns: pass the clinical values")
            features = torch.cat([features, tabular(clinical)], 1)
        return self.head(features)

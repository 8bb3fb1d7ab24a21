"""ClotReadingNet: the thrombus literature's four clot and collateral readings, fixed, and one learned linear layer.

Built for the mirrored vessel box of ``configs/vessel.json`` (NCCT and CTA windowed to [0, 1], each followed by its
left-right mirror). The first-pass literature reads a few numbers off the clot and the vessels beyond it; this
network reads them the same way on every patient, without a learned segmentation:

- **vessels**: voxels whose mirror is a contrast-filled vessel (mirrored CTA above ``vessel_level``), bone and
  calcification excluded (dense on NCCT or its mirror); each one's **filling ratio** = CTA / mirrored CTA (the other
  hemisphere is the patient's own control; the ratio is the same in a thin and a thick vessel);
- **clot** = vessels filling less than ``cut`` of their mirror. Readings: log(1 + clot voxels) (thrombus length,
  voxels along the vessel), mean NCCT minus mirror in it (hyperdensity: red-cell-rich clots), mean CTA minus NCCT in
  it in HU / 100 (perviousness: contrast penetrating the clot);
- **collaterals**: the mean filling ratio, weighted by the mirror's iodine, of the vessels filling ``cut`` to 0.95 of
  their mirror (retrograde filling beyond the occlusion); 1 when there are none.

No clot found: length, density and perviousness read 0. The readings (and, with ``clinical_columns``, the encoded
clinical vector of :class:`TabularEncoder`) go through BatchNorm and one linear layer: a logistic regression whose
image terms are the literature's, trained through the bundle like every network. Why this and not learned masks:
on the clot demo, learning the outcome from many learned measurements and ~170 labels costs most of the gap to the
Bayes ROC-AUC, reading the image little (``benchmarks/clot_measurements.py``, docs/README.md Performance).
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence

import torch
from torch import nn

from scripts.networks.tabular import ColumnSpec, TabularEncoder

READINGS = ("log clot voxels", "clot NCCT asymmetry", "clot CTA - NCCT (HU/100)", "collateral filling")


def clot_readings(
    x: torch.Tensor,
    cut: float = 0.5,
    vessel_level: float = 0.3,
    bone_level: float = 0.95,
    windows: Sequence[Sequence[float]] = ((0.0, 100.0), (0.0, 400.0)),
) -> torch.Tensor:
    """(B, 4, H, W, D) NCCT, CTA, mirrored NCCT, mirrored CTA in [0, 1] -> the four readings (B, 4), in fp32.

    ``windows``: the NCCT and CTA intensity windows in HU (to express CTA minus NCCT in HU / 100)."""
    if x.ndim != 5 or x.shape[1] != 4:
        raise ValueError(f"expected input (B, 4, H, W, D): NCCT, CTA and their mirrors, got {list(x.shape)}")
    n, c, mn, mc = x.float().flatten(2).unbind(1)
    vessel = (mc > vessel_level) & (n < bone_level) & (mn < bone_level)
    ratio = c / mc.clamp_min(0.05)
    clot = (vessel & (ratio < cut)).float()
    distal = (vessel & (ratio >= cut) & (ratio < 0.95)).float() * mc
    (n_lo, n_hi), (c_lo, c_hi) = windows
    contrast = ((c * (c_hi - c_lo) + c_lo) - (n * (n_hi - n_lo) + n_lo)) / 100.0
    count = clot.sum(1)

    def mean(values: torch.Tensor, weight: torch.Tensor, empty: float) -> torch.Tensor:
        total = weight.sum(1)
        return torch.where(total > 0, (values * weight).sum(1) / total.clamp_min(1e-6), torch.full_like(total, empty))

    return torch.stack(
        [torch.log1p(count), mean(n - mn, clot, 0.0), mean(contrast, clot, 0.0), mean(ratio, distal, 1.0)], 1
    )


class ClotReadingNet(nn.Module):
    """Logistic regression on the fixed clot and collateral readings (+ clinical values) of a mirrored vessel box.

    ``forward(x[, clinical])``: ``x`` (B, 4, H, W, D): NCCT, CTA, mirrored NCCT, mirrored CTA, each windowed to
    [0, 1] (``configs/vessel.json``); ``clinical`` (B, R) raw clinical values when ``clinical_columns`` is given.
    Output: the logit, (B, 1).

    Args:
        cut: filling ratio (CTA / mirrored CTA) below which a vessel voxel is clot.
        vessel_level: windowed mirrored CTA above which a voxel's mirror is a vessel (0.3 of [0, 400] HU = 120 HU).
        bone_level: windowed NCCT at or above which a voxel is bone or calcification (0.95 of [0, 100] HU).
        windows: the NCCT and CTA windows in HU, [[lo, hi], [lo, hi]].
        dropout: dropout before the linear layer (inactive in eval mode).
        clinical_columns: {name: "numeric" | [categories]}; None = image only.
    """

    def __init__(
        self,
        cut: float = 0.5,
        vessel_level: float = 0.3,
        bone_level: float = 0.95,
        windows: Sequence[Sequence[float]] = ((0.0, 100.0), (0.0, 400.0)),
        dropout: float = 0.0,
        clinical_columns: Optional[Dict[str, ColumnSpec]] = None,
    ) -> None:
        super().__init__()
        self.cut, self.vessel_level, self.bone_level = float(cut), float(vessel_level), float(bone_level)
        self.windows = [[float(v) for v in w] for w in windows]
        features = len(READINGS)
        if clinical_columns:
            self.tabular = TabularEncoder(clinical_columns)
            features += self.tabular.out_features
        self.head = nn.Sequential(nn.BatchNorm1d(features), nn.Dropout(dropout), nn.Linear(features, 1))

    def measurements(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 4, H, W, D) -> the readings (B, 4)."""
        return clot_readings(x, self.cut, self.vessel_level, self.bone_level, self.windows)

    def forward(self, x: torch.Tensor, clinical: Optional[torch.Tensor] = None) -> torch.Tensor:
        """(B, 4, H, W, D) [and (B, R) raw clinical values] -> logit (B, 1)."""
        with torch.autocast(x.device.type, enabled=False):  # counts and means over 10^5 voxels: fp32
            features = self.measurements(x)
            tabular = getattr(self, "tabular", None)
            if tabular is not None:
                if clinical is None:
                    raise ValueError("this ClotReadingNet was built with clinical_columns: pass the clinical values")
                features = torch.cat([features, tabular(clinical).float()], 1)
            return self.head(features)

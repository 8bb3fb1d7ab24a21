"""Image + clinical-variable networks (Canals et al. 2025 style): DAFT inside the image network's last residual
stage, or late fusion (concatenate + MLP) as the baseline to beat."""

from __future__ import annotations

from typing import Dict, Sequence

import torch
from monai.networks.nets import ResNet
from torch import nn

from scripts.networks.daft import DAFT
from scripts.networks.mnt_dl import MNTDL
from scripts.networks.tabular import ColumnSpec, TabularEncoder

FUSIONS = ("daft", "late")


def _late_head(in_features: int, hidden: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, 1))


def _check_fusion(fusion: str) -> None:
    if fusion not in FUSIONS:
        raise ValueError(f"fusion '{fusion}' is unknown ({' or '.join(FUSIONS)})")


class MultimodalMNTDL(MNTDL):
    """MNT-DL with the clinical vector fused in.

    ``forward(x, clinical)``: ``x`` (B, C, H, W, D) as :class:`MNTDL`, ``clinical`` (B, R) raw clinical values
    (:class:`TabularEncoder`, fitted on the fold's training rows) -> logit (B, 1); ``forward_all`` adds the
    auxiliary neighbourhood logits, (B, 1 + K).

    * ``fusion="daft"``: a :class:`DAFT` block at the input of the last residual block of layer4 of the per-slice
      local network (every slice of a patient gets the same clinical vector), the head unchanged.
    * ``fusion="late"``: the image network unchanged; the head's fused representation (B, H) and the clinical
      vector (B, T) are concatenated and classified by an MLP (H + T -> ``hidden`` -> 1).

    Args:
        clinical_columns: {name: "numeric" | [categories]} (:class:`TabularEncoder`).
        fusion: ``"daft"`` or ``"late"``.
        hidden: width of the late-fusion MLP.
        daft_bottleneck: DAFT bottleneck (default: the paper's int((4 * widths[0] + T) / 7)).
        **kwargs: :class:`MNTDL` arguments.
    """

    def __init__(
        self,
        clinical_columns: Dict[str, ColumnSpec],
        fusion: str = "daft",
        hidden: int = 32,
        daft_bottleneck: int | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        _check_fusion(fusion)
        self.fusion = fusion
        self.tabular = TabularEncoder(clinical_columns)
        widths = kwargs.get("widths", (64, 128, 256, 512))
        if fusion == "daft":
            layer2, layer3, layer4, pool = self.local
            blocks = list(layer4.children())
            self.local_pre = nn.Sequential(layer2, layer3, *blocks[:-1])
            self.daft = DAFT(widths[3], self.tabular.out_features, widths[0], daft_bottleneck)
            self.local_post = nn.Sequential(blocks[-1], pool)
        else:
            head_features = self.classifier.fc.in_features
            self.late = _late_head(head_features + self.tabular.out_features, hidden, kwargs.get("dropout", 0.2))

    def slice_features(self, x: torch.Tensor, clinical: torch.Tensor | None = None) -> torch.Tensor:
        """(B, C, H, W, D), (B, R) -> (B, D, F); the clinical vector enters through DAFT (late fusion: unused)."""
        if self.fusion != "daft":
            return super().slice_features(x)
        slices = self.stem(self.slices(x))
        tab = self.tabular(clinical).repeat_interleave(x.shape[-1], dim=0)  # (B * D, T), slice-major per patient
        feats = self.local_post(self.daft(self.local_pre(slices), tab)).reshape(x.shape[0], x.shape[-1], -1)
        return self.attend(self.dropout(feats))

    def _logit(self, feats: torch.Tensor, clinical: torch.Tensor) -> torch.Tensor:
        if self.fusion == "daft":
            return self.classifier(feats)
        return self.late(torch.cat([self.classifier.features(feats), self.tabular(clinical)], dim=1))

    def forward_all(self, x: torch.Tensor, clinical: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        """(B, C, H, W, D), (B, R) -> (B, 1 + K)."""
        feats = self.slice_features(x, clinical)
        groups = feats.reshape(feats.shape[0], self.num_neighbourhoods, -1)
        aux = [head(groups[:, k]) for k, head in enumerate(self.aux_heads)]
        return torch.cat([self._logit(feats, clinical)] + aux, dim=1)

    def forward(self, x: torch.Tensor, clinical: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        """(B, C, H, W, D), (B, R) -> (B, 1)."""
        return self._logit(self.slice_features(x, clinical), clinical)


class MultimodalResNet(nn.Module):
    """A plain 3-D ResNet (MONAI's, basic blocks) with the clinical vector fused in (Canals-style DAFT-ResNet).

    ``forward(x, clinical)``: ``x`` (B, C, H, W, D), ``clinical`` (B, R) raw values -> logit (B, 1). ``"daft"``: DAFT
    at the input of the last residual block of layer4, then pool and Linear(F -> 1); ``"late"``: pooled features
    (B, F) and the clinical vector concatenated into an MLP.

    Args:
        clinical_columns: {name: "numeric" | [categories]}.
        in_channels: image channels C.
        widths: channels of layer1..layer4.
        layers: residual blocks per stage (ResNet-34: 3, 4, 6, 3).
        fusion, hidden, daft_bottleneck, dropout: as :class:`MultimodalMNTDL`.
    """

    def __init__(
        self,
        clinical_columns: Dict[str, ColumnSpec],
        in_channels: int = 2,
        widths: Sequence[int] = (64, 128, 256, 512),
        layers: Sequence[int] = (3, 4, 6, 3),
        fusion: str = "daft",
        hidden: int = 32,
        daft_bottleneck: int | None = None,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        _check_fusion(fusion)
        self.fusion = fusion
        self.tabular = TabularEncoder(clinical_columns)
        resnet = ResNet(
            block="basic",
            layers=list(layers),
            block_inplanes=list(widths),
            spatial_dims=3,
            n_input_channels=in_channels,
            num_classes=1,
            feed_forward=False,
        )
        blocks = list(resnet.layer4.children())
        self.pre = nn.Sequential(
            resnet.conv1,
            resnet.bn1,
            resnet.act,
            resnet.maxpool,
            resnet.layer1,
            resnet.layer2,
            resnet.layer3,
            *blocks[:-1],
        )
        self.post = nn.Sequential(blocks[-1], nn.AdaptiveAvgPool3d(1), nn.Flatten())
        self.dropout = nn.Dropout(dropout)
        if fusion == "daft":
            self.daft = DAFT(widths[3], self.tabular.out_features, widths[0], daft_bottleneck)
            self.fc = nn.Linear(widths[3], 1)
        else:
            self.late = _late_head(widths[3] + self.tabular.out_features, hidden, dropout)

    def forward(self, x: torch.Tensor, clinical: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W, D), (B, R) -> (B, 1)."""
        tab = self.tabular(clinical)
        feats = self.pre(x)
        if self.fusion == "daft":
            return self.fc(self.dropout(self.post(self.daft(feats, tab))))
        return self.late(torch.cat([self.dropout(self.post(feats)), tab], dim=1))

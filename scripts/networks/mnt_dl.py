"""MNT-DL, the multisequence neighbourhood transformer (Zhang et al., AJNR 2024), from MONAI parts."""

from __future__ import annotations

from typing import Sequence, Tuple

import torch
from monai.networks.blocks import CrossAttentionBlock, SABlock
from monai.networks.nets import ResNet
from monai.networks.nets.resnet import ResNetBlock
from torch import nn

from scripts.networks.nonlocal_block import NonLocalBlock2d


class MNTDL(nn.Module):
    """Per-slice ResNet-34 features, attention within slice neighbourhoods and across the volume.

    Input ``x``: (B, C, H, W, D) in MONAI's channel-first layout with the D axial slices last
    (C = 2 for NCCT + CTA, 3 for ADC + DWI + FLAIR; single-sequence ablations repeat one sequence).
    ``forward`` returns the main logit (B, 1); ``forward_all`` returns (B, 1 + K): the main logit then
    one auxiliary logit per neighbourhood (K = num_slices // neighbourhood_size).

    Pipeline: a shared 2-D stem (ResNet-34 conv1..layer1) per slice; local networks (layer2..layer4,
    weights shared by all neighbourhoods, optional embedded-Gaussian non-local block before the last
    block of layer3) -> global average pool -> dropout -> (B, D, F); multi-head self-attention over
    the slices of each neighbourhood, added residually; auxiliary heads Linear(n * F -> 1) per
    neighbourhood; then the classifier head:

    * ``head="cross_attention"`` (the paper's volumetric classifier): a learned query attends over all
      D slice features (LayerNorm on query and slices, residual add, LayerNorm); the result and the
      mean slice feature are concatenated and fused by Linear(2F -> 1).
    * ``head="res25"`` (the published final model): Linear(F -> 1) per slice -> softmax over the D
      slices -> Linear(D -> 1).

    Args:
        in_channels: image channels C.
        num_slices: D; a volume with another slice count raises ``ValueError``.
        neighbourhood_size: slices per neighbourhood (non-overlapping; must divide ``num_slices``).
        widths: channels of ResNet layer1..layer4 (ResNet-34: 64, 128, 256, 512).
        nonlocal_block: insert the non-local block in layer3.
        head: ``"cross_attention"`` or ``"res25"``.
        num_heads: heads of the slice and volume attention.
        slice_attention: attention within neighbourhoods (off: slice features go straight to the heads).
        share_slice_attention: one slice-attention module for all neighbourhoods (else one each).
        dropout: dropout on slice features (inactive in eval mode).
    """

    def __init__(
        self,
        in_channels: int = 2,
        num_slices: int = 25,
        neighbourhood_size: int = 5,
        widths: Sequence[int] = (64, 128, 256, 512),
        nonlocal_block: bool = True,
        head: str = "cross_attention",
        num_heads: int = 4,
        slice_attention: bool = True,
        share_slice_attention: bool = True,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        if num_slices % neighbourhood_size:
            raise ValueError(f"num_slices {num_slices} is not a multiple of neighbourhood_size {neighbourhood_size}")
        if head not in ("cross_attention", "res25"):
            raise ValueError(f"head '{head}' is unknown (cross_attention or res25)")
        self.in_channels, self.num_slices, self.size = in_channels, num_slices, neighbourhood_size
        self.num_neighbourhoods = num_slices // neighbourhood_size
        self.head = head
        self.stem, self.local = slice_resnet34(in_channels, widths, nonlocal_block)
        feat = widths[3]
        self.dropout = nn.Dropout(dropout)
        self.attention_mode = "none" if not slice_attention else "shared" if share_slice_attention else "each"
        n_attn = {"none": 0, "shared": 1, "each": self.num_neighbourhoods}[self.attention_mode]
        self.slice_attention = nn.ModuleList(SABlock(feat, num_heads, qkv_bias=True) for _ in range(n_attn))
        self.aux_heads = nn.ModuleList(nn.Linear(neighbourhood_size * feat, 1) for _ in range(self.num_neighbourhoods))
        self.classifier = Res25Head(feat, num_slices) if head == "res25" else VolumeAttentionHead(feat, num_heads)
        init_weights(self, [*self.aux_heads, *self.classifier.linears()])

    def slice_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W, D) -> slice features after neighbourhood attention, (B, D, F)."""
        slices = self.slices(x)
        feats = self.local(self.stem(slices)).reshape(x.shape[0], x.shape[-1], -1)
        return self.attend(self.dropout(feats))

    def slices(self, x: torch.Tensor) -> torch.Tensor:
        """Check the input and fold the slices into the batch: (B, C, H, W, D) -> (B * D, C, H, W)."""
        if x.ndim != 5 or x.shape[1] != self.in_channels or x.shape[-1] != self.num_slices:
            raise ValueError(
                "expected input (B, "
                + str(self.in_channels)
                + ", H, W, "
                + str(self.num_slices)
                + "), got "
                + str(list(x.shape))
                + "; resample the slice axis to "
                + str(self.num_slices)
                + " (e.g. monai.transforms.Resized)"
            )
        b, c, h, w, d = x.shape
        return x.permute(0, 4, 1, 2, 3).reshape(b * d, c, h, w)

    def attend(self, feats: torch.Tensor) -> torch.Tensor:
        """Multi-head self-attention within each neighbourhood of slices, added residually: (B, D, F) -> (B, D, F)."""
        if self.attention_mode == "none":
            return feats
        b, d = feats.shape[0], feats.shape[1]
        groups = feats.reshape(b * self.num_neighbourhoods, self.size, -1)
        if self.attention_mode == "shared":
            for attn in self.slice_attention:
                groups = groups + attn(groups)
            return groups.reshape(b, d, -1)
        groups = groups.reshape(b, self.num_neighbourhoods, self.size, -1)
        out = []
        for k, attn in enumerate(self.slice_attention):
            out.append(groups[:, k] + attn(groups[:, k]))
        return torch.cat(out, dim=1)

    def forward_all(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W, D) -> (B, 1 + K): main logit then the K auxiliary neighbourhood logits."""
        feats = self.slice_features(x)
        groups = feats.reshape(feats.shape[0], self.num_neighbourhoods, -1)
        aux = [head(groups[:, k]) for k, head in enumerate(self.aux_heads)]
        return torch.cat([self.classifier(feats)] + aux, dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W, D) -> main logit (B, 1)."""
        return self.classifier(self.slice_features(x))


def slice_resnet34(
    in_channels: int, widths: Sequence[int], nonlocal_block: bool = False
) -> Tuple[nn.Sequential, nn.Sequential]:
    """The 2-D ResNet-34 parts shared by MNT-DL and SCANet, from MONAI's ResNet.

    ``stem`` (conv 7x7/2, BN, ReLU, maxpool, layer1): (N, C, H, W) -> (N, widths[0], H/4, W/4), the per-slice
    "global" block; ``local`` (layer2..layer4, optional non-local block before the last block of layer3,
    global average pool): (N, widths[0], h, w) -> (N, widths[3], 1, 1), the neighbourhood branch.
    """
    resnet = ResNet(
        block="basic",
        layers=[3, 4, 6, 3],
        block_inplanes=list(widths),
        spatial_dims=2,
        n_input_channels=in_channels,
        conv1_t_size=7,
        conv1_t_stride=2,
        shortcut_type="B",
        feed_forward=False,
        bias_downsample=False,
    )
    stem = nn.Sequential(resnet.conv1, resnet.bn1, resnet.act, resnet.maxpool, resnet.layer1)
    layer3 = list(resnet.layer3.children())
    if nonlocal_block:
        layer3.insert(len(layer3) - 1, NonLocalBlock2d(widths[2]))
    local = nn.Sequential(resnet.layer2, nn.Sequential(*layer3), resnet.layer4, nn.AdaptiveAvgPool2d(1))
    return stem, local


def init_weights(network: nn.Module, heads: Sequence[nn.Linear]) -> None:
    """Kaiming convolutions, classifier ``heads`` normal(0, 0.01) with zero bias, and every residual block
    (and non-local block) starting as the identity. Attention blocks keep MONAI's initialisation (a
    0.01-scaled query/key/value chain would start the classifier at a constant output)."""
    for m in network.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    for m in heads:
        nn.init.normal_(m.weight, 0, 0.01)
        nn.init.zeros_(m.bias)
    for m in network.modules():
        if isinstance(m, ResNetBlock):
            nn.init.zeros_(m.bn2.weight)
        elif isinstance(m, NonLocalBlock2d):
            nn.init.zeros_(m.out[1].weight)


class Res25Head(nn.Module):
    """The published head: (B, D, F) -> Linear(F -> 1) per slice -> softmax over the D slices -> Linear(D -> 1)."""

    def __init__(self, features: int, num_slices: int) -> None:
        super().__init__()
        self.slice_score = nn.Linear(features, 1)
        self.fc = nn.Linear(num_slices, 1)

    def linears(self) -> list:
        return [self.slice_score, self.fc]

    def features(self, feats: torch.Tensor) -> torch.Tensor:
        """(B, D, F) -> the slice weights (B, D) that ``fc`` combines."""
        return torch.softmax(self.slice_score(feats).squeeze(-1), dim=1)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(feats))


class VolumeAttentionHead(nn.Module):
    """Cross-attention volumetric classifier: (B, D, F) slice features -> logit (B, 1).

    A learned query attends over the D slices (LayerNorm on query and slices, residual add, LayerNorm);
    the result and the mean slice feature are concatenated and fused by Linear(2F -> 1).
    """

    def __init__(self, features: int, num_heads: int) -> None:
        super().__init__()
        self.query = nn.Parameter(torch.zeros(1, 1, features))
        self.norm_query, self.norm_slices = nn.LayerNorm(features), nn.LayerNorm(features)
        self.norm_out = nn.LayerNorm(features)
        self.attention = CrossAttentionBlock(features, num_heads, qkv_bias=True)
        self.fc = nn.Linear(2 * features, 1)

    def linears(self) -> list:
        return [self.fc]

    def features(self, feats: torch.Tensor) -> torch.Tensor:
        """(B, D, F) -> [attended; mean slice feature] (B, 2F), what ``fc`` combines."""
        query = self.norm_query(self.query.expand(feats.shape[0], -1, -1))
        pooled = query + self.attention(query, context=self.norm_slices(feats))
        return torch.cat([self.norm_out(pooled[:, 0]), feats.mean(dim=1)], dim=1)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(feats))


class WithAuxiliaryLogits(nn.Module):
    """Training view of a network: ``forward`` returns ``network.forward_all`` (B, 1 + K), same weights;
    a network without auxiliary logits (e.g. MONAI's ResNet) is called as is, (B, 1)."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor, *extra: torch.Tensor, **named: torch.Tensor) -> torch.Tensor:
        """``extra``, ``named``: further network inputs (the clinical vector of a multimodal network, the cached
        reading targets of :class:`scripts.networks.reading_mnt_dl.ReadingMNTDL`)."""
        forward_all = getattr(self.network, "forward_all", None)
        return forward_all(x, *extra, **named) if forward_all is not None else self.network(x, *extra, **named)


def mnt_dl_res25(in_channels: int = 3, **kwargs) -> MNTDL:
    """The published final model: no non-local block, neighbourhood attention only, res25 head."""
    options = dict(nonlocal_block=False, head="res25", num_slices=25, neighbourhood_size=5)
    options.update(kwargs)
    return MNTDL(in_channels=in_channels, **options)


def count_parameters(network: nn.Module) -> int:
    """Number of unique parameters."""
    return sum(p.numel() for p in network.parameters())


def split_logits(output: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """(B, 1 + K) -> main (B, 1) and auxiliary (B, K) logits."""
    return output[:, :1], output[:, 1:]

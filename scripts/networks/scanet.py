"""SCANet, the spatial cross attention network (Zhang et al., MIDL 2022), from the paper and MONAI parts.

No code of SCANet is public; the paper gives the parts but not every size, so the choices made here are
stated in the class docstring. It shares MNT-DL's ResNet-34 parts and its cross-attention classifier.
"""

from __future__ import annotations

from typing import Sequence

import torch
from monai.networks.blocks import PatchEmbeddingBlock, TransformerBlock
from torch import nn
from torch.nn import functional as F

from scripts.networks.mnt_dl import VolumeAttentionHead, init_weights, slice_resnet34


class SpatialAttentionTransformer(nn.Module):
    """SAT: ViT-style multi-head self-attention over the patches of each slice's feature map, added back.

    (N, C, h, w) -> (N, C, h, w). MONAI's ``PatchEmbeddingBlock`` (conv projection of p x p patches, learnable
    position embedding) -> ``depth`` MONAI ``TransformerBlock``s -> 1x1 conv back to C channels (zero
    initialised, so the module starts as the identity) -> upsampled to h x w and added to the input.
    """

    def __init__(self, channels: int, size: int, patch_size: int, hidden_size: int, num_heads: int, depth: int = 1):
        super().__init__()
        if size % patch_size:
            raise ValueError(f"SAT: feature map size {size} is not a multiple of patch size {patch_size}")
        self.grid = size // patch_size
        self.embed = PatchEmbeddingBlock(
            in_channels=channels,
            img_size=(size, size),
            patch_size=(patch_size, patch_size),
            hidden_size=hidden_size,
            num_heads=num_heads,
            proj_type="conv",
            spatial_dims=2,
        )
        self.blocks = nn.Sequential(
            *(TransformerBlock(hidden_size, 2 * hidden_size, num_heads, qkv_bias=True) for _ in range(depth))
        )
        self.norm = nn.LayerNorm(hidden_size)
        self.out = nn.Conv2d(hidden_size, channels, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.norm(self.blocks(self.embed(x)))  # (N, grid^2, hidden)
        n, _, hidden = tokens.shape
        grid = tokens.transpose(1, 2).reshape(n, hidden, self.grid, self.grid)
        return x + F.interpolate(self.out(grid), size=x.shape[-2:], mode="bilinear", align_corners=False)


class SCANet(nn.Module):
    """Spatial cross attention network: per-slice global block with spatial attention, neighbourhood branches
    with cross attention over their slices, branch logits combined by a learned softmax weighting.

    Input ``x``: (B, C, H, W, D), MONAI layout with the D axial slices last (C = 2 for NCCT + CTA).
    ``forward`` -> logit (B, 1); ``forward_all`` -> (B, 1 + K): the logit then the K branch logits.

    * Global 2-D convolutional block per slice: ResNet-34 conv1..layer1 (shared with MNT-DL's stem).
    * SAT (:class:`SpatialAttentionTransformer`) on each slice's (widths[0], H/4, W/4) feature map.
    * K = D / ``neighbourhood_size`` non-overlapping neighbourhoods of consecutive slices; each runs the same
      ResNet-34 branch (layer2..layer4 + pooling, weights shared across neighbourhoods) -> (B, n, F).
    * CAT inside each branch: a learned query attends over the branch's slices (MNT-DL's
      :class:`VolumeAttentionHead`, shared by the branches) -> one logit per branch.
    * Weighted softmax layer: logit = sum_k softmax(w)_k * branch_k with learned w (K,).

    Choices where the paper is silent: 26 slices as 2 neighbourhoods of 13 (so that the CAT has slices to
    choose from), a SAT of one transformer block with hidden size widths[0] and patches giving a 7 x 7 grid
    at 224 x 224 input (``sat_patch_size`` 8), dropout on slice features as in MNT-DL.
    """

    def __init__(
        self,
        in_channels: int = 2,
        num_slices: int = 26,
        spatial_size: Sequence[int] = (224, 224),
        neighbourhood_size: int = 13,
        widths: Sequence[int] = (64, 128, 256, 512),
        num_heads: int = 4,
        sat_patch_size: int = 8,
        sat_depth: int = 1,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        if num_slices % neighbourhood_size:
            raise ValueError(f"num_slices {num_slices} is not a multiple of neighbourhood_size {neighbourhood_size}")
        if spatial_size[0] != spatial_size[1] or spatial_size[0] % 4:
            raise ValueError(f"spatial_size {list(spatial_size)}: SCANet needs a square input, a multiple of 4")
        self.in_channels, self.num_slices, self.size = in_channels, num_slices, neighbourhood_size
        self.num_neighbourhoods = num_slices // neighbourhood_size
        self.stem, self.local = slice_resnet34(in_channels, widths)
        self.sat = SpatialAttentionTransformer(
            widths[0], spatial_size[0] // 4, sat_patch_size, widths[0], num_heads, sat_depth
        )
        self.dropout = nn.Dropout(dropout)
        self.cross_attention = VolumeAttentionHead(widths[3], num_heads)
        self.branch_weights = nn.Parameter(torch.zeros(self.num_neighbourhoods))
        init_weights(self, self.cross_attention.linears())
        nn.init.zeros_(self.sat.out.weight)  # after the Kaiming pass: the SAT starts as the identity

    def branch_logits(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W, D) -> one logit per neighbourhood branch, (B, K)."""
        if x.ndim != 5 or x.shape[1] != self.in_channels or x.shape[-1] != self.num_slices:
            raise ValueError(
                f"expected input (B, {self.in_channels}, H, W, {self.num_slices}), got {list(x.shape)}; "
                f"resample the slice axis to {self.num_slices} (e.g. monai.transforms.Resized)"
            )
        b, c, h, w, d = x.shape
        slices = x.permute(0, 4, 1, 2, 3).reshape(b * d, c, h, w)
        feats = self.dropout(
            self.local(self.sat(self.stem(slices))).reshape(b * self.num_neighbourhoods, self.size, -1)
        )
        return self.cross_attention(feats).reshape(b, self.num_neighbourhoods)

    def forward_all(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W, D) -> (B, 1 + K): the weighted-softmax logit then the K branch logits."""
        branches = self.branch_logits(x)
        main = (branches * torch.softmax(self.branch_weights, dim=0)).sum(dim=1, keepdim=True)
        return torch.cat([main, branches], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W, D) -> logit (B, 1)."""
        branches = self.branch_logits(x)
        return (branches * torch.softmax(self.branch_weights, dim=0)).sum(dim=1, keepdim=True)

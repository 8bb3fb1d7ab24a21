"""Embedded-Gaussian non-local block (Wang et al. 2018), 2-D; MONAI has none."""

from __future__ import annotations

import torch
from torch import nn


class NonLocalBlock2d(nn.Module):
    """Self-attention over the H x W positions of a feature map, added residually.

    Input and output: (N, C, H, W). theta/phi/g are 1x1 convolutions to ``C // 2`` channels; the
    attention is softmax(theta^T phi) over positions; the output 1x1 conv + BatchNorm is
    zero-initialised so that the block starts as the identity.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        inner = max(channels // 2, 1)
        self.theta = nn.Conv2d(channels, inner, 1)
        self.phi = nn.Conv2d(channels, inner, 1)
        self.g = nn.Conv2d(channels, inner, 1)
        self.out = nn.Sequential(nn.Conv2d(inner, channels, 1), nn.BatchNorm2d(channels))
        nn.init.zeros_(self.out[1].weight)
        nn.init.zeros_(self.out[1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        theta = self.theta(x).flatten(2).transpose(1, 2)  # (N, HW, C')
        phi = self.phi(x).flatten(2)  # (N, C', HW)
        g = self.g(x).flatten(2).transpose(1, 2)  # (N, HW, C')
        y = torch.softmax(theta @ phi, dim=-1) @ g  # (N, HW, C')
        y = y.transpose(1, 2).reshape(n, -1, h, w)
        return x + self.out(y)

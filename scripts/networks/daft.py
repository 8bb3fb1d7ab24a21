"""DAFT, the dynamic affine feature-map transform (Wolf et al., NeuroImage 2022), written from the paper."""

from __future__ import annotations

import torch
from torch import nn


class DAFT(nn.Module):
    """Scale and shift every channel of an image feature map by amounts computed from the map's own pooled
    features and a tabular vector.

    ``F`` (N, C, *spatial), ``x`` (N, T) -> ``F'`` (N, C, *spatial):
    s = global-average-pool(F) (N, C); h = ReLU(W1 [s; x]) with W1 (b x (C + T), no bias);
    [alpha; beta] = W2 h + b2 with W2 (2C x b); F' = alpha * F + beta, broadcast over space.
    Bottleneck b = int((4 * base_filters + T) / 7) as in the paper (``bottleneck`` overrides it). W2 starts at zero
    and b2 at (1, 0), so the block starts as the identity and the image network is undisturbed at first.
    """

    def __init__(self, channels: int, tabular_features: int, base_filters: int = 64, bottleneck: int | None = None):
        super().__init__()
        self.channels = channels
        hidden = bottleneck or max(1, int((4 * base_filters + tabular_features) / 7))
        self.squeeze = nn.Linear(channels + tabular_features, hidden, bias=False)
        self.expand = nn.Linear(hidden, 2 * channels)
        nn.init.zeros_(self.expand.weight)
        with torch.no_grad():
            self.expand.bias.copy_(torch.cat([torch.ones(channels), torch.zeros(channels)]))

    def forward(self, features: torch.Tensor, tabular: torch.Tensor) -> torch.Tensor:
        """(N, C, *spatial), (N, T) -> (N, C, *spatial)."""
        pooled = features.flatten(2).mean(dim=2)
        h = torch.relu(self.squeeze(torch.cat([pooled, tabular.to(pooled.dtype)], dim=1)))
        alpha, beta = self.expand(h).chunk(2, dim=1)
        shape = (features.shape[0], self.channels) + (1,) * (features.ndim - 2)
        return alpha.reshape(shape) * features + beta.reshape(shape)

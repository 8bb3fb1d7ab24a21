"""Clinical variables as a network input: raw values in, a fitted, standardised vector out (state in buffers)."""

from __future__ import annotations

from typing import Dict, List

import numpy as np
import torch
from torch import nn

from scripts.data.clinical import ColumnSpec


class TabularEncoder(nn.Module):
    """Encode raw clinical values (B, R) -> (B, T), fitted on training rows only; the fit lives in buffers, so it
    is saved and loaded with the fold model and inference applies the same transform.

    Raw input: one value per column (R columns, ``columns`` order): a number for a numeric column, the category's
    index in its declared list for a categorical one, NaN when missing (:func:`scripts.data.clinical.raw_clinical`).
    Output per numeric column: the value standardised with the training mean and SD (missing -> the training
    mean, i.e. 0) and a missing indicator; per categorical column: a one-hot over the declared categories, zero for
    categories never seen in training (no weight could have been learnt for them), and a missing indicator.
    T = 2 x numeric + sum over categorical (categories + 1).

    Args:
        columns: {name: "numeric" | [category, ...]} in input order.
    """

    def __init__(self, columns: Dict[str, ColumnSpec]) -> None:
        super().__init__()
        self.columns = dict(columns)
        self.numeric: List[int] = [i for i, spec in enumerate(self.columns.values()) if spec == "numeric"]
        self.categorical: List[int] = [i for i, spec in enumerate(self.columns.values()) if spec != "numeric"]
        self.sizes: List[int] = [len(list(self.columns.values())[i]) for i in self.categorical]
        self.register_buffer("mean", torch.zeros(len(self.numeric)))
        self.register_buffer("sd", torch.ones(len(self.numeric)))
        self.register_buffer("seen", torch.zeros(sum(self.sizes)))
        self.register_buffer("fitted", torch.zeros(()))

    @property
    def out_features(self) -> int:
        return 2 * len(self.numeric) + sum(s + 1 for s in self.sizes)

    def fit(self, raw: np.ndarray) -> "TabularEncoder":
        """Fit on the training rows' raw values (N, R)."""
        raw = np.asarray(raw, dtype=np.float64).reshape(-1, len(self.columns))
        for j, i in enumerate(self.numeric):
            values = raw[:, i][np.isfinite(raw[:, i])]
            self.mean[j] = float(values.mean()) if values.size else 0.0
            self.sd[j] = float(values.std()) if values.size > 1 and values.std() > 0 else 1.0
        seen, offset = np.zeros(sum(self.sizes), np.float32), 0
        for i, size in zip(self.categorical, self.sizes):
            codes = raw[:, i][np.isfinite(raw[:, i])].astype(int)
            seen[offset + codes] = 1
            offset += size
        self.seen.copy_(torch.as_tensor(seen))
        self.fitted.fill_(1)
        return self

    def forward(self, raw: torch.Tensor) -> torch.Tensor:
        """(B, R) raw values -> (B, T) encoded vector."""
        raw = raw.to(self.mean.dtype)
        parts = []
        if self.numeric:
            values = raw[:, self.numeric]
            missing = torch.isnan(values)
            z = (torch.where(missing, self.mean.expand_as(values), values) - self.mean) / self.sd
            parts += [z, missing.to(z.dtype)]
        offset = 0
        for i, size in zip(self.categorical, self.sizes):
            code = raw[:, i]
            missing = torch.isnan(code)
            index = torch.where(missing, torch.zeros_like(code), code).long().clamp(0, size - 1)
            one_hot = nn.functional.one_hot(index, size).to(raw.dtype) * (~missing).to(raw.dtype)[:, None]
            parts += [one_hot * self.seen[offset : offset + size], missing.to(raw.dtype)[:, None]]
            offset += size
        return torch.cat(parts, dim=1)

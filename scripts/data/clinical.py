"""Clinical variables of the cohort table as raw network input, and the per-fold fit of the tabular encoder.

The column list is a config value (``clinical_columns``: {name: "numeric" | [categories]}); any column of the
cohort table can be used (extra columns such as comorbidities pass through the cohort reader). The fitted
transform (:class:`scripts.networks.tabular.TabularEncoder`) lives in the network's buffers: it is fitted on the
fold's training rows only, saved with the fold model, and applied unchanged at inference.
"""

from __future__ import annotations

from typing import Any, Dict, Hashable, Mapping, Sequence, Union

import numpy as np
import torch
from monai.transforms import Transform
from torch import nn

from scripts import BundleInputError

ColumnSpec = Union[str, Sequence[str]]  # "numeric" or the list of categories


def raw_clinical(row: Mapping[str, Any], columns: Dict[str, ColumnSpec]) -> np.ndarray:
    """One patient's raw clinical values (R,): numbers, category indices, NaN where blank."""
    values = []
    pid = row.get("patient_id", "?")
    missing = [name for name in columns if name not in row]
    if missing:
        flags = [f"--{name} VALUE" for name in missing if name in ("location", "side")]
        others = [f"'{name}': VALUE" for name in missing if name not in ("location", "side")]
        flags += [f'--clinical "{{{", ".join(others)}}}"'] if others else []
        raise BundleInputError(
            f"patient {pid}: the model needs the clinical values {', '.join(missing)}: give them as cohort columns, or "
            f"for one patient as {' '.join(flags)}"
        )
    for name, spec in columns.items():
        value = row[name]
        if value is None or (isinstance(value, str) and value.strip() == ""):
            values.append(np.nan)
        elif spec == "numeric":
            try:
                values.append(float(value))
            except (TypeError, ValueError):
                raise BundleInputError(f"patient {pid}: clinical column '{name}': '{value}' is not a number") from None
        else:
            allowed = [str(c).upper() for c in spec]
            if str(value).strip().upper() not in allowed:
                raise BundleInputError(
                    f"patient {pid}: clinical column '{name}': unknown category '{value}' (declared: "
                    f"{', '.join(map(str, spec))})"
                )
            values.append(float(allowed.index(str(value).strip().upper())))
    return np.asarray(values, dtype=np.float32)


class ClinicalValuesd(Transform):
    """Dictionary transform adding ``clinical``: the item's raw clinical values as a float32 tensor (R,), NaN where
    missing (it reads the columns named in ``columns``, so it has no ``keys``)."""

    def __init__(self, columns: Dict[str, ColumnSpec], output_key: str = "clinical") -> None:
        self.columns, self.output_key = dict(columns), output_key

    def __call__(self, data: Mapping[Hashable, Any]) -> Dict[Hashable, Any]:
        d = dict(data)
        d[self.output_key] = torch.as_tensor(raw_clinical(d, self.columns))
        return d


def fit_tabular(network: nn.Module, rows: Sequence[Mapping[str, Any]]) -> nn.Module:
    """Fit the network's tabular encoder (if it has one) on ``rows`` (the fold's training rows); unchanged
    otherwise or without rows (``fold == "all"``). Returns the network."""
    encoder = getattr(network, "tabular", None)
    if encoder is None or not rows:
        return network
    encoder.fit(np.stack([raw_clinical(r, encoder.columns) for r in rows]))
    return network


def fold_training_rows(datalist: Dict[str, Any], fold: Any) -> list:
    """The fold's training rows (its inner-validation patients and the outer fold excluded); none for
    ``fold == "all"`` (the parent process of a k-fold run builds no fold model)."""
    from scripts.data.split import fold_data

    return [] if str(fold) == "all" else fold_data(datalist, int(fold), "train")

"""Input checks as MONAI transforms: a wrong scan gets one line naming the file and the cause, never a probability.

- :class:`LoadScand` (``LoadImaged`` that names the unreadable file) and :class:`CheckScand` (the checks of
  :mod:`scripts.data.volume_checks` as a MONAI MapTransform, placed after ``Orientationd`` in the configs'
  ``load_transforms``).
- The array and file checks themselves (:func:`unreadable`, :func:`check_volume`, :func:`check_contrast`,
  :func:`check_grid`, :func:`read_grid`, ...) live in :mod:`scripts.data.volume_checks` and are importable from
  here as well (the configs name them ``scripts.data.checks.read_grid`` and so on).

Every failure raises :class:`scripts.BundleInputError` (one line, exit status 2 through the ``scripts`` hook).
"""

from __future__ import annotations

import os
from typing import Any, Dict, Hashable, Mapping

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import LoadImaged, MapTransform

from scripts import BundleInputError
from scripts.data.dicom_study import check_series_folder, dicom_reader
from scripts.data.volume_checks import (  # noqa: F401 (re-exported: the configs and tests name them here)
    CONTRAST_SHARE,
    CT_SEQUENCES,
    INPUT_LIMITS,
    _describe,
    check_contrast,
    check_grid,
    check_volume,
    contrast_share,
    grid_spacing,
    image_grid,
    input_limits,
    judge_contrast,
    read_grid,
    unreadable,
    write_grid,
)


def _source(data: Mapping[Hashable, Any], key: Hashable) -> str:
    value = data.get(key)
    meta = getattr(value, "meta", None) or {}
    return str(meta.get("filename_or_obj") or (value if isinstance(value, str) else key))


class LoadScand(LoadImaged):
    """MONAI ``LoadImaged`` that names the file it cannot read (missing, empty, not an image, truncated) and reads a
    DICOM series folder with MONAI's ``ITKReader`` (GDCM: slice order, spacing and orientation from the headers,
    compressed transfer syntaxes) after :func:`scripts.data.dicom_study.check_series_folder`."""

    def __call__(self, data: Mapping[Hashable, Any], reader: Any = None) -> Dict[Hashable, Any]:
        if not self._loader.image_only:  # every config loads images only; metadata dicts keep MONAI's own path
            return super().__call__(data, reader)
        d = dict(data)
        for key in self.key_iterator(d):
            value = d[key]
            if isinstance(value, torch.Tensor):  # handed over in memory, channel first with its affine (Deploy app)
                continue
            folder = isinstance(value, str) and os.path.isdir(value)
            if folder:
                check_series_folder(value, _describe(str(key)))
            try:
                d[key] = self._loader(value, dicom_reader() if folder and reader is None else reader)
            except BundleInputError:
                raise
            except Exception:
                problem = unreadable(value) if isinstance(value, str) else None
                if problem:
                    raise BundleInputError(f"{value}: {_describe(str(key))} {problem}") from None
                raise
        return d


class CheckScand(MapTransform):
    """The input checks on loaded, RAS-oriented images (MetaTensors with an affine).

    Args:
        keys: the image keys (sequence names: ``ncct``, ``cta``, ``b0``, ...).
        grid: the training grid (:func:`read_grid`); None = not checked.
        contrast: check the vessel contrast of the NCCT and CTA (images in MNI space): a CTA against its own NCCT
            when both are given (:func:`judge_contrast`).
        limits: overrides of :data:`INPUT_LIMITS` (the configs' ``input_limits``).
    """

    def __init__(
        self,
        keys: KeysCollection,
        grid: Dict[str, Any] | None = None,
        contrast: bool = True,
        allow_missing_keys: bool = True,
        limits: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.grid, self.contrast, self.limits = grid, contrast, input_limits(limits)

    def __call__(self, data: Mapping[Hashable, Any]) -> Dict[Hashable, Any]:
        d = dict(data)
        shares = {}
        for key in self.key_iterator(d):
            path, sequence = _source(d, key), str(key)
            volume = check_volume(d[key], path, sequence, channel_first=True)
            affine = np.asarray(getattr(d[key], "affine", np.eye(4)), dtype=float)
            check_grid(volume.shape, affine, self.grid, path)
            if self.contrast and sequence in CT_SEQUENCES:
                try:
                    shares[sequence] = (contrast_share(volume, affine, self.limits["contrast_hu"]), path)
                except ValueError as error:
                    raise BundleInputError(f"{path}: {_describe(sequence)} is not in MNI space ({error})") from None
        judge_contrast(shares, self.limits)
        return d

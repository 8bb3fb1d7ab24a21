"""Out-of-distribution flag: per-case image statistics against the ranges of the cohort the models were trained on.

A scan can pass every input check (:mod:`scripts.data.checks`) and still be unlike anything the fold models saw: a
different scanner's HU calibration, another contrast timing, a partial field of view. Training records, per
sequence, the range of a few statistics over its cohort (``models/input_profile.json``); inference computes them
for each case and writes a ``warning`` naming every statistic outside the range widened by a quarter of its span
and at least by the statistic's physical tolerance (:func:`margin_of`), instead of a silent
probability. The statistics (NIfTI inputs; DICOM folders are not profiled):

- CT (NCCT, CTA): ``tissue_hu``, the median of the central MNI box's voxels in -50..100 HU (brain tissue level);
  ``tissue_ml``, the volume of all voxels in 0..100 HU (brain size and field of view); ``contrast``, the vessel
  contrast share of :func:`scripts.data.volume_checks.contrast_share`.
- MR sequences and maps: ``median`` and ``p99`` of the voxels above zero, ``signal_ml`` the volume above 10% of
  the 99th percentile.
"""

from __future__ import annotations

import os
from typing import Any, Dict, List, Mapping, Sequence

import nibabel as nib
import numpy as np

from scripts.data.anatomy import box_slices
from scripts.data.io import atomic_write_json, read_json_in
from scripts.data.volume_checks import CENTRAL_BOX_MM, CT_SEQUENCES, contrast_share

PROFILE_FILE = "input_profile.json"
MARGIN = 0.25  # of the training span, on each side
# the smallest margins: brain tissue differs by a few HU between calibrated scanners and kernels (a scanner's water
# reading is kept within +-5 HU by CT quality control); volumes and the contrast share vary with head size, field of
# view and bolus timing between patients of any one cohort
HU_TOLERANCE = 5.0
RELATIVE_TOLERANCE = {"ml": 0.15, "contrast": 0.5, "median": 0.1, "p99": 0.1}


def volume_profile(path: str, sequence: str) -> Dict[str, float]:
    """The statistics of one NIfTI volume (RAS MNI grid for CT); {} for a folder (DICOM) or unreadable input."""
    if not isinstance(path, str) or not os.path.isfile(path):
        return {}
    img = nib.as_closest_canonical(nib.load(path))
    a = np.asarray(img.dataobj, dtype=np.float32)
    if a.ndim != 3:
        return {}
    voxel_ml = float(abs(np.linalg.det(img.affine[:3, :3]))) / 1000
    if sequence in CT_SEQUENCES:
        box = a[tuple(box_slices(img.affine, a.shape, CENTRAL_BOX_MM))]
        tissue = box[(box > -50) & (box < 100)]
        return {
            "tissue_hu": float(np.median(tissue)) if tissue.size else float("nan"),
            "tissue_ml": float(((a >= 0) & (a <= 100)).sum() * voxel_ml),
            "contrast": contrast_share(a, img.affine),
        }
    positive = a[a > 0]
    if not positive.size:
        return {}
    p99 = float(np.percentile(positive, 99))
    return {"median": float(np.median(positive)), "p99": p99, "signal_ml": float((a > 0.1 * p99).sum() * voxel_ml)}


def case_profile(item: Mapping[str, Any], keys: Sequence[str]) -> Dict[str, float]:
    """``{sequence_statistic: value}`` of one case's images (``item[key]`` = path)."""
    out: Dict[str, float] = {}
    for key in keys:
        for name, value in volume_profile(item.get(key), key).items():
            out[f"{key}_{name}"] = value
    return out


def read_profile(ckpt_dir: str | None) -> Dict[str, Any] | None:
    """``ckpt_dir/input_profile.json`` (written at training), or None."""
    return read_json_in(ckpt_dir, PROFILE_FILE)


def write_profile(ckpt_dir: str, items: Sequence[Mapping[str, Any]], keys: Sequence[str]) -> Dict[str, Any]:
    """Record the training cohort's range of every statistic in ``ckpt_dir/input_profile.json`` (kept when it
    exists: all folds of one ``ckpt_dir`` share it). Returns the profile."""
    existing = read_profile(ckpt_dir)
    if existing is not None:
        return existing
    profile = profile_of([case_profile(item, keys) for item in items])
    os.makedirs(ckpt_dir, exist_ok=True)
    atomic_write_json(os.path.join(ckpt_dir, PROFILE_FILE), profile)
    return profile


def profile_of(cases: Sequence[Mapping[str, float]]) -> Dict[str, Any]:
    """``{patients, ranges: {statistic: [min, max]}}`` of the cases' statistics (:func:`case_profile`)."""
    values: Dict[str, List[float]] = {}
    for case in cases:
        for name, value in case.items():
            if np.isfinite(value):
                values.setdefault(name, []).append(value)
    return {
        "patients": len(cases),
        "ranges": {k: [float(np.min(v)), float(np.max(v))] for k, v in sorted(values.items())},
    }


def margin_of(name: str, low: float, high: float) -> float:
    """How far outside the training range ``low..high`` a value of statistic ``name`` may lie unflagged:
    :data:`MARGIN` of the span, and at least the statistic's physical tolerance (:data:`HU_TOLERANCE` for HU levels,
    :data:`RELATIVE_TOLERANCE` of the value otherwise), so that a cohort of scans all alike (a narrow span) does not
    flag every scan from elsewhere."""
    floor = HU_TOLERANCE if name.endswith("_hu") else RELATIVE_TOLERANCE.get(name.rsplit("_", 1)[-1], 0.1) * abs(high)
    return max(MARGIN * (high - low), floor, 1e-6)


def ood_warning(case: Mapping[str, float], profile: Mapping[str, Any] | None) -> str:
    """'' when every statistic of ``case`` lies within the training range widened by :data:`MARGIN` of its span
    (or no profile is stored), else one phrase per statistic outside it, joined by '; '."""
    if not profile:
        return ""
    notes = []
    for name, value in case.items():
        if name not in profile["ranges"] or not np.isfinite(value):
            continue
        low, high = profile["ranges"][name]
        margin = margin_of(name, low, high)
        if not low - margin <= value <= high + margin:
            notes.append(f"{name} {value:.3g} outside the training range {low:.3g}..{high:.3g}")
    return "; ".join(notes)

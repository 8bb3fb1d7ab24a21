"""Input checks on plain arrays and files (numpy, nibabel, scipy; no MONAI or torch, so that preprocessing can run
without importing them): a wrong scan gets one line naming the file and the cause, never a probability.

- :func:`unreadable`: why a path cannot be read as an image (missing, empty, not NIfTI, truncated), or None.
- :func:`check_volume`: one loaded volume: 3-D, large enough, finite, not constant, and plausible for its sequence
  (CT in Hounsfield units: air-like 1st and soft-tissue 99th percentile; MR and parametric maps not in HU).
- :func:`contrast_share` / :func:`check_contrast`: vessel contrast in an MNI-space CT (share of the central brain's
  soft tissue above 120 HU, bone and its rim left out): an NCCT must have none, a CTA must have it.
- :func:`check_grid`: the grid the fold models were trained on (``grid.json`` beside them, :func:`write_grid`).

The same checks as MONAI transforms: :mod:`scripts.data.checks`. Every failure raises
:class:`scripts.BundleInputError` (one line, exit status 2 through the ``scripts`` hook).
"""

from __future__ import annotations

import os
from typing import Any, Dict, Mapping, Optional, Sequence

import nibabel as nib
import numpy as np
from scipy import ndimage

from scripts import BundleInputError
from scripts.data.anatomy import box_slices
from scripts.data.io import atomic_write_json, read_json_in

CT_SEQUENCES = ("ncct", "cta")
CT_RANGE = (-500.0, 30.0)  # a CT's 1st percentile is air-like (or the -1024 background), its 99th soft tissue or more
MR_LOWEST = -100.0  # MR and parametric maps: a 1st percentile below this is CT-like (air in HU)
MIN_VOXELS = 8  # per axis
CONTRAST_HU = 120.0  # unenhanced brain, clot and calcified partial volume stay below; contrast-filled vessels above
CONTRAST_SHARE = 0.003  # demo (2-6 mm): NCCT 0.000, CTA 0.010-0.025 of the central soft tissue above CONTRAST_HU
CENTRAL_BOX_MM = ((-50.0, 50.0), (-60.0, 30.0), (-30.0, 20.0))  # circle of Willis, M1/M2, basal ganglia (MNI, RAS)
GRID_FILE = "grid.json"


def unreadable(path: str) -> Optional[str]:
    """Why ``path`` cannot be read as an image (a NIfTI file, or a folder of DICOM files), or None."""
    if not os.path.exists(path):
        return "file not found"
    if os.path.isdir(path):
        return None if any(os.scandir(path)) else "empty folder (expected a DICOM series)"
    if os.path.getsize(path) == 0:
        return "empty file"
    try:
        img = nib.load(path)
        img.get_fdata(dtype=np.float32)
    except Exception as error:  # nibabel raises ImageFileError, EOFError, zlib.error, OSError ...
        text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return f"cannot be read as a NIfTI image ({text[:120]})"
    return None


def _describe(sequence: str) -> str:
    return sequence.upper() if sequence in (*CT_SEQUENCES, "adc") else sequence


def check_volume(
    array: Any, path: str, sequence: str, what: Optional[str] = None, channel_first: bool = False
) -> np.ndarray:
    """Check one loaded volume, (H, W, D) or with ``channel_first`` (1, H, W, D); return it as a float32
    (H, W, D) array. ``what``: the name in the error line (default: the sequence's)."""
    a = np.asarray(array, dtype=np.float32)
    what = f"{path}: {what or _describe(sequence)}"
    if channel_first:
        a = a[0] if a.shape[0] == 1 else np.moveaxis(a, 0, -1)  # (C, ...) with C > 1: C volumes of one file
    if a.ndim != 3:
        shape = " x ".join(str(s) for s in a.shape)
        kind = f"{a.ndim}-D" if a.ndim != 4 else f"4-D with {a.shape[-1]} volumes"
        raise BundleInputError(f"{what} is {kind} (shape {shape}); expected one 3-D volume")
    if min(a.shape) < MIN_VOXELS:
        raise BundleInputError(f"{what} has {' x '.join(map(str, a.shape))} voxels: too small for a head scan")
    if not np.isfinite(a).all():
        raise BundleInputError(f"{what} holds NaN or infinite values")
    low, high = float(a.min()), float(a.max())
    if low == high:
        raise BundleInputError(f"{what} is constant (every voxel {low:g})")
    p1, p99 = np.percentile(a, [1, 99])
    if sequence in CT_SEQUENCES:
        if p1 > CT_RANGE[0] or p99 < CT_RANGE[1]:
            raise BundleInputError(
                f"{what} does not look like CT in Hounsfield units (1st-99th percentile {p1:.0f}..{p99:.0f})"
            )
    elif p1 < MR_LOWEST:
        raise BundleInputError(f"{what} looks like CT in Hounsfield units (1st percentile {p1:.0f}), not {sequence}")
    return a


def contrast_share(volume: np.ndarray, affine: np.ndarray) -> float:
    """Share of the central brain's soft tissue (-50..800 HU) above :data:`CONTRAST_HU` in an RAS MNI-space CT,
    bone (> 500 HU) and 4 mm around it left out."""
    spacing = float(abs(affine[0, 0]))
    reach = max(1, int(round(4 / spacing)))
    box = box_slices(affine, volume.shape, CENTRAL_BOX_MM)
    # the dilation only within the box and `reach` voxels around it: the same voxels as dilating the whole volume
    around = tuple(slice(max(0, s.start - reach), s.stop + reach) for s in box)
    inner = tuple(slice(s.start - a.start, s.stop - a.start) for s, a in zip(box, around))
    bone = ndimage.binary_dilation(volume[around] > 500, iterations=reach)[inner]
    values = volume[tuple(box)][~bone]
    soft = values[(values > -50) & (values < 800)]
    return float((soft > CONTRAST_HU).mean()) if soft.size else 0.0


def check_contrast(volume: np.ndarray, affine: np.ndarray, path: str, sequence: str) -> float:
    """An MNI-space NCCT without vessel contrast, a CTA with it; returns the contrast share."""
    share = contrast_share(volume, affine)
    if sequence == "ncct" and share > CONTRAST_SHARE:
        raise BundleInputError(
            f"{path}: NCCT shows vessel contrast ({100 * share:.1f}% of the central soft tissue above "
            f"{CONTRAST_HU:.0f} HU); is it a CTA?"
        )
    if sequence == "cta" and share < CONTRAST_SHARE:
        raise BundleInputError(
            f"{path}: CTA shows no vessel contrast ({100 * share:.2f}% of the central soft tissue above "
            f"{CONTRAST_HU:.0f} HU); is it a non-contrast CT?"
        )
    return share


def image_grid(shape: Sequence[int], affine: Any) -> Dict[str, Any]:
    """The grid of an RAS-oriented image: spatial shape and affine (rounded to 1e-3 mm)."""
    return {"shape": [int(s) for s in shape], "affine": np.round(np.asarray(affine, dtype=float), 3).tolist()}


def check_grid(shape: Sequence[int], affine: Any, expected: Optional[Dict[str, Any]], path: str) -> None:
    """The image must be on the grid the fold models were trained on (``expected``; None = not recorded)."""
    if not expected:
        return
    grid = image_grid(shape, affine)
    if grid["shape"] != expected["shape"] or not np.allclose(grid["affine"], expected["affine"], atol=0.01):
        spacing = np.round(np.linalg.norm(np.asarray(grid["affine"])[:3, :3], axis=0), 2).tolist()
        trained = np.round(np.linalg.norm(np.asarray(expected["affine"])[:3, :3], axis=0), 2).tolist()
        raise BundleInputError(
            f"{path}: not on the grid the models were trained on (shape {grid['shape']}, spacing {spacing} mm; "
            f"trained on {expected['shape']}, {trained} mm in MNI space): preprocess it first (configs/preprocess.json)"
            " or use configs/inference_raw.json"
        )


def read_grid(ckpt_dir: Optional[str]) -> Optional[Dict[str, Any]]:
    """``ckpt_dir/grid.json`` (written when the fold models were trained), or None."""
    return read_json_in(ckpt_dir, GRID_FILE)


def grid_spacing(grid: Optional[Dict[str, Any]], default: float = 1.0) -> float:
    """The voxel size (mm) of a recorded grid (isotropic MNI grids), or ``default`` when none is recorded."""
    if not grid:
        return float(default)
    return float(np.round(np.linalg.norm(np.asarray(grid["affine"], dtype=float)[:3, :3], axis=0).mean(), 3))


def write_grid(ckpt_dir: str, items: Sequence[Mapping[str, Any]], keys: Sequence[str]) -> Optional[Dict[str, Any]]:
    """Record the training grid (the first item's first image, RAS) in ``ckpt_dir/grid.json``; keep an existing one
    (every fold of one ``ckpt_dir`` shares it). Returns the grid."""
    existing = read_grid(ckpt_dir)
    if existing is not None or not items:
        return existing
    path = next((items[0][k] for k in keys if isinstance(items[0].get(k), str)), None)
    if path is None or os.path.isdir(path) or unreadable(path):
        return None
    img = nib.as_closest_canonical(nib.load(path))
    grid = image_grid(img.shape[:3], img.affine)
    os.makedirs(ckpt_dir, exist_ok=True)
    atomic_write_json(os.path.join(ckpt_dir, GRID_FILE), grid)
    return grid

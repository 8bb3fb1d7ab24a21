"""Input checks on plain arrays and files (numpy, nibabel, scipy; no MONAI or torch, so that preprocessing can run
without importing them): a wrong scan gets one line naming the file and the cause, never a probability.

- :func:`unreadable`: why a path cannot be read as an image (missing, empty, not NIfTI, truncated), or None.
- :func:`check_volume`: one loaded volume: 3-D, large enough, finite, not constant, and plausible for its sequence
  (CT in Hounsfield units: air-like 1st and soft-tissue 99th percentile; MR and parametric maps not in HU).
- :func:`contrast_share` / :func:`check_contrast`: vessel contrast in an MNI-space CT (share of the central brain's
  soft tissue above ``contrast_hu``, bone and its rim left out): judged against the patient's own other scan when
  both are given (a CTA holds at least twice its NCCT's share: calcification and bone are bright on both), against
  wide physical floors when one is given alone.
- :data:`INPUT_LIMITS` / :func:`input_limits`: every limit of these checks, in one place, each set from the command
  line through the configs' ``input_limits`` (``--input_limits "{'cta_min_share': 0.0002}"``).
- :func:`check_grid`: the grid the fold models were trained on (``grid.json`` beside them, :func:`write_grid`).

The same checks as MONAI transforms: :mod:`scripts.data.checks`. Every failure raises
:class:`scripts.BundleInputError` (one line, exit status 2 through the ``scripts`` hook).
"""

from __future__ import annotations

import os
from typing import Any, Dict, Mapping, Sequence

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
# The limits come from CT physics, not from one cohort: unenhanced blood reads 40-60 HU, the densest (red-cell-rich)
# clots up to ~90 HU, grey matter ~40 HU, while opacified arteries read 150 to over 500 HU depending on the bolus
# timing (Bae, Radiology 2010;256:32-61). The central box (~450 mL) holds 1-3 mL of circle-of-Willis and M1/M2 lumen;
# with partial volume on a 2 mm grid, thin vessels and a late bolus leave a few tenths of a mL above 120 HU, and bone
# rims and a calcified siphon put voxels above it on the NCCT as well as the CTA (hence the comparison of the two).
INPUT_LIMITS: Dict[str, float] = {
    "contrast_hu": 120.0,  # above every unenhanced tissue and clot; below every opacified artery
    "cta_min_share": 0.0005,  # a CTA's floor: ~0.2 mL of the central box above contrast_hu (weak bolus, thin vessels)
    "cta_over_ncct": 2.0,  # a CTA's share at least this multiple of its own NCCT's (bone rims, calcification: both)
    "ncct_max_share": 0.005,  # an NCCT given alone: above ~2 mL of contrast-level tissue it is a CTA
}
CONTRAST_HU = INPUT_LIMITS["contrast_hu"]
CONTRAST_SHARE = INPUT_LIMITS["cta_min_share"]
CENTRAL_BOX_MM = ((-50.0, 50.0), (-60.0, 30.0), (-30.0, 20.0))  # circle of Willis, M1/M2, basal ganglia (MNI, RAS)
GRID_FILE = "grid.json"


def unreadable(path: str) -> str | None:
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
    array: Any, path: str, sequence: str, what: str | None = None, channel_first: bool = False
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


def input_limits(overrides: Mapping[str, Any] | None = None) -> Dict[str, float]:
    """:data:`INPUT_LIMITS` with ``overrides`` (a config's or the command line's ``input_limits``) applied; an unknown
    name or a value that is not a number raises :class:`BundleInputError`."""
    limits = dict(INPUT_LIMITS)
    for name, value in dict(overrides or {}).items():
        if name not in INPUT_LIMITS:
            raise BundleInputError(f"--input_limits: unknown limit '{name}' (known: {', '.join(INPUT_LIMITS)})")
        try:
            limits[name] = float(value)
        except (TypeError, ValueError):
            raise BundleInputError(f"--input_limits: {name} = {value!r} is not a number") from None
    return limits


def contrast_share(volume: np.ndarray, affine: np.ndarray, contrast_hu: float = CONTRAST_HU) -> float:
    """Share of the central brain's soft tissue (-50..800 HU) above ``contrast_hu`` in an RAS MNI-space CT,
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
    return float((soft > contrast_hu).mean()) if soft.size else 0.0


def check_contrast(
    volume: np.ndarray, affine: np.ndarray, path: str, sequence: str, limits: Mapping[str, float] | None = None
) -> float:
    """An MNI-space NCCT or CTA given alone: judged against the physical floors of ``limits``
    (:func:`input_limits`); returns the contrast share."""
    limits = input_limits(limits)
    share = contrast_share(volume, affine, limits["contrast_hu"])
    judge_contrast({sequence: (share, path)}, limits)
    return share


def judge_contrast(shares: Mapping[str, tuple[float, str]], limits: Mapping[str, float]) -> None:
    """``{"ncct" / "cta": (contrast share, path)}`` of one patient: a CTA above ``cta_min_share`` and, with its NCCT,
    above ``cta_over_ncct`` times the NCCT's share; an NCCT given alone below ``ncct_max_share``."""
    above = f"of the central soft tissue above {limits['contrast_hu']:.0f} HU"
    ncct, cta = shares.get("ncct"), shares.get("cta")
    if cta is not None and cta[0] < limits["cta_min_share"]:
        raise BundleInputError(
            f"{cta[1]}: CTA shows no vessel contrast ({100 * cta[0]:.3f}% {above}, at least "
            f"{100 * limits['cta_min_share']:.3f}% expected); is it a non-contrast CT?"
        )
    if ncct is not None and cta is not None and cta[0] < limits["cta_over_ncct"] * ncct[0]:
        raise BundleInputError(
            f"{ncct[1]}: NCCT shows vessel contrast ({100 * ncct[0]:.3f}% {above}, its CTA {100 * cta[0]:.3f}%); "
            "is it a CTA?"
        )
    if ncct is not None and cta is None and ncct[0] > limits["ncct_max_share"]:
        raise BundleInputError(f"{ncct[1]}: NCCT shows vessel contrast ({100 * ncct[0]:.2f}% {above}); is it a CTA?")


def image_grid(shape: Sequence[int], affine: Any) -> Dict[str, Any]:
    """The grid of an RAS-oriented image: spatial shape and affine (rounded to 1e-3 mm)."""
    return {"shape": [int(s) for s in shape], "affine": np.round(np.asarray(affine, dtype=float), 3).tolist()}


def check_grid(shape: Sequence[int], affine: Any, expected: Dict[str, Any] | None, path: str) -> None:
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


def read_grid(ckpt_dir: str | None) -> Dict[str, Any] | None:
    """``ckpt_dir/grid.json`` (written when the fold models were trained), or None."""
    return read_json_in(ckpt_dir, GRID_FILE)


def grid_spacing(grid: Dict[str, Any] | None, default: float = 1.0) -> float:
    """The voxel size (mm) of a recorded grid (isotropic MNI grids), or ``default`` when none is recorded."""
    if not grid:
        return float(default)
    return float(np.round(np.linalg.norm(np.asarray(grid["affine"], dtype=float)[:3, :3], axis=0).mean(), 3))


def write_grid(ckpt_dir: str, items: Sequence[Mapping[str, Any]], keys: Sequence[str]) -> Dict[str, Any] | None:
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

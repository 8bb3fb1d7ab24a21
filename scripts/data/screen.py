"""A cohort run never ends on one patient: every patient is checked first, the refused ones are written with their
one-line reasons to an exclusions table, and the run goes on with the others.

- :func:`screen_images`: the input checks of :mod:`scripts.data.volume_checks` on one patient's NIfTI files (readable,
  a plausible volume of its sequence, the cohort's grid, the NCCT / CTA contrast judged against each other); the
  reason, or None.
- :func:`screened`: a datalist with the refused patients taken out of every part (training, test, inner validation)
  and the exclusions table written to ``out_dir/exclusions.csv``; the screening is remembered in
  ``out_dir/screening.json`` for the same datalist, sequences and limits, so that training, evaluation and inference
  of one model folder check each file once. ``strict`` stops at the first refused patient instead (exit status 2).
- :func:`screened_items`: the same for a plain list of patients (the unlabeled pretraining pool).
- :func:`write_exclusions`: the table (``patient_id``, ``reason``); patients refused when the table was read
  (:func:`scripts.data.cohort.read_cohort` with ``excluded``) are listed in it as well.

Numpy, nibabel and scipy only (no MONAI), like the checks themselves.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Dict, List, Mapping, Sequence

import nibabel as nib
import numpy as np

from scripts import BundleInputError
from scripts.data.io import atomic_write_csv, atomic_write_json, read_json_in
from scripts.data.volume_checks import (
    CT_SEQUENCES,
    _describe,
    check_volume,
    contrast_share,
    image_grid,
    input_limits,
    judge_contrast,
    unreadable,
)

EXCLUSIONS_FILE = "exclusions.csv"
SCREENING_FILE = "screening.json"
PARTS = ("training", "test")


def screen_images(
    item: Mapping[str, Any],
    keys: Sequence[str],
    limits: Mapping[str, float],
    grid: Dict[str, Any] | None = None,
    grid_name: str = "the cohort's first patient's",
) -> str | None:
    """Why one patient's images (``item[key]`` = path, MNI space) cannot be used, or None. ``grid``: the grid they
    must be on (:func:`scripts.data.volume_checks.image_grid`; the cohort's first usable patient's, or the fold
    models'), named ``grid_name`` in the reason; None = not compared."""
    shares = {}
    try:
        for key in keys:
            path = item.get(key)
            if not isinstance(path, str) or not path:
                raise BundleInputError(f"patient {item.get('patient_id')}: no {_describe(key)} image")
            problem = unreadable(path)
            if problem:
                raise BundleInputError(f"{path}: {_describe(key)} {problem}")
            if os.path.isdir(path):  # a DICOM series: LoadScand reads and checks it
                continue
            img = nib.as_closest_canonical(nib.load(path))
            volume = check_volume(np.asarray(img.dataobj), path, key)
            own = image_grid(volume.shape, img.affine)
            if grid is not None and (
                own["shape"] != grid["shape"] or not np.allclose(own["affine"], grid["affine"], atol=0.01)
            ):
                raise BundleInputError(
                    f"{path}: not on {grid_name} grid (shape {own['shape']}, expected "
                    f"{grid['shape']}): preprocess it first (configs/preprocess.json)"
                )
            if key in CT_SEQUENCES:
                try:
                    shares[key] = (contrast_share(volume, img.affine, limits["contrast_hu"]), path)
                except ValueError as error:
                    raise BundleInputError(f"{path}: {_describe(key)} is not in MNI space ({error})") from None
        judge_contrast(shares, limits)
    except BundleInputError as error:
        return str(error)
    return None


def _first_grid(items: Sequence[Mapping[str, Any]], keys: Sequence[str]) -> Dict[str, Any] | None:
    for item in items:
        path = next((item.get(k) for k in keys if isinstance(item.get(k), str)), None)
        if path and os.path.isfile(path) and unreadable(path) is None:
            img = nib.as_closest_canonical(nib.load(path))
            if img.ndim == 3:
                return image_grid(img.shape, img.affine)
    return None


def _fingerprint(datalist: Mapping[str, Any], keys: Sequence[str], limits: Mapping[str, float]) -> str:
    files = sorted(
        (d["patient_id"], k, str(d.get(k)), os.path.getmtime(d[k]) if os.path.exists(str(d.get(k))) else None)
        for part in PARTS
        for d in datalist[part]
        for k in keys
    )
    text = json.dumps([files, sorted(keys), sorted(limits.items())], default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def screened(
    datalist: Dict[str, Any],
    keys: Sequence[str],
    limits: Mapping[str, Any] | None = None,
    strict: bool = False,
    out_dir: str | None = None,
) -> Dict[str, Any]:
    """``datalist`` without the patients whose images fail the input checks.

    Args:
        datalist: the split (training and test items).
        keys: the sequences to check.
        limits: the checks' limits (:func:`scripts.data.volume_checks.input_limits`).
        strict: raise the first refusal instead of excluding.
        out_dir: where the exclusions table and the remembered screening go.

    Returns:
        the datalist with ``excluded`` = [{patient_id, reason}] (the split's own exclusions first).

    Raises:
        BundleInputError: with ``strict``, or when every patient is refused.
    """
    limits = input_limits(limits)
    fingerprint = _fingerprint(datalist, keys, limits)
    remembered = read_json_in(out_dir, SCREENING_FILE) if out_dir else None
    if remembered and remembered.get("fingerprint") == fingerprint:
        refused = remembered["refused"]
    else:
        grid = _first_grid(datalist["training"] + datalist["test"], keys)
        refused = {}
        for d in datalist["training"] + datalist["test"]:
            reason = screen_images(d, keys, limits, grid)
            if reason is not None:
                refused[d["patient_id"]] = reason
        if out_dir:
            os.makedirs(out_dir, exist_ok=True)
            atomic_write_json(os.path.join(out_dir, SCREENING_FILE), {"fingerprint": fingerprint, "refused": refused})
    if refused and strict:
        pid = next(iter(refused))
        raise BundleInputError(refused[pid])
    total = len(datalist["training"]) + len(datalist["test"])
    if total and len(refused) == total:
        raise BundleInputError(f"every one of the {total} patients was refused (first: {next(iter(refused.values()))})")
    out = {
        **datalist,
        "training": [d for d in datalist["training"] if d["patient_id"] not in refused],
        "test": [d for d in datalist["test"] if d["patient_id"] not in refused],
        "inner_validation": {k: [p for p in v if p not in refused] for k, v in datalist["inner_validation"].items()},
        "excluded": list(datalist.get("excluded", [])) + [{"patient_id": p, "reason": r} for p, r in refused.items()],
    }
    if out_dir:
        write_exclusions(os.path.join(out_dir, EXCLUSIONS_FILE), out["excluded"])
    return out


def screened_items(
    items: List[Dict[str, Any]],
    keys: Sequence[str],
    limits: Mapping[str, Any] | None = None,
    strict: bool = False,
    out_dir: str | None = None,
) -> List[Dict[str, Any]]:
    """:func:`screened` for a plain list of patients (an unlabeled pretraining pool).

    Args:
        items: the patients' items.
        keys: the sequences to check.
        limits: the checks' limits.
        strict: raise the first refusal instead of excluding.
        out_dir: where the exclusions table goes.

    Returns:
        the usable items.
    """
    return screened({"training": items, "test": [], "inner_validation": {}}, keys, limits, strict, out_dir)["training"]


def write_exclusions(path: str, excluded: Sequence[Mapping[str, str]]) -> str:
    """The exclusions table at ``path`` (``patient_id``, ``reason``; a header only when nobody was refused)."""
    rows: List[Dict[str, str]] = [{"patient_id": e["patient_id"], "reason": e["reason"]} for e in excluded]
    atomic_write_csv(path, rows, fieldnames=["patient_id", "reason"])
    return path

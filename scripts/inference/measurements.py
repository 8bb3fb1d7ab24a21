"""What the main job's model measured, beside its probability: the clot readings in physical units and each value's
place in the training cohort.

:meth:`scripts.networks.clot_readings.ClotReadingNet.clinical_measurements` gives, per patient, the clot length (mm),
its NCCT density and asymmetry (HU), its perviousness (CTA minus NCCT, HU), the distal filling (ratio to the other
side) and the arterial enhancement (HU). Evaluation writes the development patients' values to
``<ckpt_dir>/measurements.json`` (:func:`write_reference`); inference adds each patient's values, the side and site
they were read on, and their percentile in that reference (:func:`measurement_fields`) to ``predictions.csv``. A
reader checks the machine against the CTA with these numbers.
"""

from __future__ import annotations

import math
import os
from typing import Any, Dict, List, Sequence

import numpy as np
from scipy.stats import percentileofscore

from scripts.data.io import atomic_write, atomic_write_json, read_json_in

MEASUREMENTS_FILE = "measurements.json"
KEY_IMAGES = "key_images"  # the folder of the key images beside predictions.csv
CASE_FIELDS = ("side", "location")  # where the readings were taken: the occluded side and the occlusion site


def write_reference(ckpt_dir: str, measured: Sequence[Dict[str, float]]) -> None:
    """``ckpt_dir/measurements.json``: every development patient's measurements, sorted per name (NaN left out).

    Args:
        ckpt_dir: the model folder.
        measured: one dict of measurements per development patient.
    """
    names = sorted({name for m in measured for name in m})
    values = {n: sorted(float(m[n]) for m in measured if n in m and not math.isnan(float(m[n]))) for n in names}
    atomic_write_json(os.path.join(ckpt_dir, MEASUREMENTS_FILE), {"patients": len(measured), "values": values})


def read_reference(ckpt_dir: str) -> Dict[str, List[float]]:
    """The sorted reference values per name (:func:`write_reference`), or {} when evaluation wrote none."""
    stored = read_json_in(ckpt_dir, MEASUREMENTS_FILE)
    return stored["values"] if stored else {}


def percentile(reference: Sequence[float], value: float) -> float:
    """The share (0-100) of the reference values below ``value``, ties counted half (scipy's ``percentileofscore``,
    kind "mean"); NaN without either."""
    if not reference or math.isnan(value):
        return float("nan")
    return float(percentileofscore(reference, value, kind="mean"))


def measurement_fields(
    item: Dict[str, Any], measured: Dict[str, float], reference: Dict[str, List[float]]
) -> Dict[str, Any]:
    """One patient's output fields: the side and site, each measurement and its ``<name>_pct`` in the reference.

    Args:
        item: the patient's item (``side``, ``location`` when given).
        measured: the patient's measurements.
        reference: :func:`read_reference`.

    Returns:
        {field: value}, None where there is no value (no clot found, no reference), empty when the model measured
        nothing.
    """
    if not measured:
        return {}
    fields: Dict[str, Any] = {k: item.get(k) for k in CASE_FIELDS}
    for name, value in measured.items():
        share = percentile(reference.get(name, []), value)
        fields[name] = None if math.isnan(value) else value
        fields[f"{name}_pct"] = None if math.isnan(share) else round(share, 1)
    return fields


def write_key_image(path: str, view: np.ndarray, zoom: int = 4) -> None:
    """``view`` (rows, columns, 3) RGB in [0, 1] (``ClotReadingNet.key_views``) to a PNG at ``path``, each voxel
    ``zoom`` pixels (nearest neighbour, so the voxels stay visible), written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    big = np.repeat(np.repeat(np.clip(view, 0, 1), zoom, 0), zoom, 1)
    atomic_write(path, lambda tmp: plt.imsave(tmp, big, format="png"), suffix=".png")

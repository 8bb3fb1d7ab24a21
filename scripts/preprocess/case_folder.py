"""One preprocessed case folder, written atomically (all files or none), with its QC picture and the fingerprint of
the scans it was made from."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import time
from typing import Any, Dict, Iterator, Mapping, Tuple

import numpy as np


class StageClock:
    """Seconds per preprocessing stage (``lap(stage)`` closes the stage), recorded in ``qc.json``."""

    def __init__(self) -> None:
        self.seconds: Dict[str, float] = {}
        self._start = time.time()

    def lap(self, stage: str) -> None:
        self.seconds[stage] = round(time.time() - self._start, 2)
        self._start = time.time()


def write_case(
    out: str,
    images: Dict[str, Any],
    transforms: Dict[str, str],
    qc: Dict[str, Any],
    template: Any,
    window: Tuple[float, float],
) -> None:
    """``images`` (name -> ANTs image, written as ``name.nii.gz``; the first is drawn in ``qc.png`` with
    ``window``, over the template's brain outline), ``transforms`` (file name in the case folder -> source
    file) and ``qc.json``, first into a temporary sibling folder, then one rename."""
    parent = os.path.dirname(os.path.abspath(out))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".tmp-", dir=parent)
    try:
        for name, image in images.items():
            image.to_file(os.path.join(tmp, f"{name}.nii.gz"))
        for name, source in transforms.items():
            shutil.copy(source, os.path.join(tmp, name))
        qc_picture(next(iter(images.values())), template, os.path.join(tmp, "qc.png"), window)
        with open(os.path.join(tmp, "qc.json"), "w") as f:
            json.dump(qc, f, indent=1)
        if os.path.isdir(out):
            shutil.rmtree(out)  # an earlier incomplete attempt (no qc.json), or made from other scans
        os.replace(tmp, out)
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp)


def transform_names(prefix: str, files) -> Dict[str, str]:
    """Case-folder names for ANTs transform files: ``{prefix}_{i}.mat`` / ``{prefix}_{i}.nii.gz`` (warp field)."""
    names = {}
    for i, path in enumerate(files):
        suffix = ".nii.gz" if path.endswith(".nii.gz") else os.path.splitext(path)[1]
        names[f"{prefix}_{i}{suffix}"] = path
    return names


CASE_SETTINGS = {"ct": ("transform", "spacing", "vessels"), "mr": ("spacing", "histogram_reference")}
SETTING_DEFAULTS = {"transform": "Affine", "spacing": 1.0, "vessels": False, "histogram_reference": None}


def case_settings(modality: str, settings: Mapping[str, Any]) -> Dict[str, Any]:
    """The preprocessing settings a case folder's images depend on (``ct``: registration transform, spacing, vessel
    maps; ``mr``: spacing, histogram reference), normalised so that equal settings compare equal."""
    chosen = {k: settings.get(k, SETTING_DEFAULTS[k]) for k in CASE_SETTINGS[modality]}
    chosen["spacing"] = float(chosen["spacing"])
    if "vessels" in chosen:
        chosen["vessels"] = bool(chosen["vessels"])
    return chosen


def scans_fingerprint(scans: Dict[str, str | None], settings: Mapping[str, Any] | None = None) -> str:
    """SHA-256 over each given scan's sequence name, real path, size and modification time (a DICOM folder: those of
    every file in it) and the ``settings`` (:func:`case_settings`). Stored in ``qc.json`` as ``scans_sha256``
    instead of the paths, which can carry identifiers."""
    digest = hashlib.sha256()
    for name, path in sorted((k, v) for k, v in scans.items() if v):
        if not os.path.exists(path):  # no match with any folder; reading the scan then names the missing file
            digest.update(f"{name}\0missing\n".encode())
            continue
        files = (
            [path] if not os.path.isdir(path) else sorted(os.path.join(d, f) for d, _, fs in os.walk(path) for f in fs)
        )
        for file in files:
            stat = os.stat(file)
            digest.update(f"{name}\0{os.path.realpath(file)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    if settings is not None:
        digest.update(json.dumps(dict(settings), sort_keys=True).encode())
    return digest.hexdigest()


def read_qc(
    out: str, scans: Dict[str, str | None] | None = None, settings: Mapping[str, Any] | None = None
) -> Dict[str, Any] | None:
    """The QC dict of a finished case folder, or None; with ``scans`` (sequence -> path) only a folder made from
    those very files with those ``settings`` counts as finished (a corrected cohort row, another scan under the same
    patient_id and output folder, or another spacing must not get the old case's images)."""
    path = os.path.join(out, "qc.json")
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        qc = json.load(f)
    if scans is not None and qc.get("scans_sha256") != scans_fingerprint(scans, settings):
        return None
    return qc


@contextlib.contextmanager
def case_lock(out: str) -> Iterator[None]:
    """Hold an exclusive lock on the case folder's parent (``output_dir/<patient_id>``, created, and removed again if
    it is left empty) while the block runs: a second process preprocessing the same case waits, then finds the
    finished folder instead of writing its own."""
    parent = os.path.dirname(os.path.abspath(out))
    os.makedirs(parent, exist_ok=True)
    handle = os.open(parent, os.O_RDONLY)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield
    finally:
        if not os.path.exists(out):  # a failed case leaves no folder behind (the parent only if it is empty)
            with contextlib.suppress(OSError):
                os.rmdir(parent)
        os.close(handle)  # closing the descriptor releases the lock


def qc_picture(image, template, path: str, window: Tuple[float, float]) -> None:
    """Axial, coronal and sagittal mid-slices of ``image`` with the template's brain outline in red."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    img, tpl = image.numpy(), template.numpy()
    centre = [s // 2 for s in img.shape]
    views = [
        (img[:, :, centre[2]], tpl[:, :, centre[2]]),
        (img[:, centre[1], :], tpl[:, centre[1], :]),
        (img[centre[0], :, :], tpl[centre[0], :, :]),
    ]
    fig, axes = plt.subplots(1, 3, figsize=(10, 3.6))
    for ax, (a, b), title in zip(axes, views, ("axial", "coronal", "sagittal")):
        ax.imshow(np.rot90(a), cmap="gray", vmin=window[0], vmax=window[1])
        ax.contour(np.rot90(b > 0), levels=[0.5], colors="tab:red", linewidths=0.6)
        ax.set_title(title)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)

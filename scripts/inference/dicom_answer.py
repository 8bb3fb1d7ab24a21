"""One patient's answer as DICOM objects of the input study, written by the Deploy app and by ``--study`` inference.

- ``outcome_sr.dcm``: the probability and the prediction (:func:`scripts.inference.dicom_report.structured_report`);
- ``measurements_sr.dcm``: the main job's clot measurements, TID 1500 (:func:`~scripts.inference.dicom_report.
  measurement_report`);
- ``clot_seg.dcm``: the vessel and clot memberships on the CTA's slices (:func:`scripts.inference.dicom_images.
  clot_segmentation`);
- ``key_image_sc.dcm``: the key image as a secondary capture (:func:`~scripts.inference.dicom_images.
  key_image_capture`).

The last three only for a model that measures the clot (the main job's ClotReadingNet). All four belong to the input
study (its Study Instance UID) and reference the input series by UID. The patient's name, ID and birth date, the
accession number and the referring physician are present and empty (DICOM type 2) unless ``keep_identifiers``: a
site whose PACS files results by patient ID asks for them; a research output carries none.
"""

from __future__ import annotations

import os
from typing import Any, Dict, List, Sequence

import numpy as np

from scripts.data.io import atomic_write
from scripts.inference.dicom_images import (
    KEY_IMAGE_FILE,
    SEG_FILE,
    box_affine,
    clot_segmentation,
    key_image_capture,
    on_source_frames,
    unturn,
)
from scripts.inference.dicom_report import PATIENT_STUDY, measurement_report, structured_report

SR_FILE, MEASUREMENTS_SR_FILE = "outcome_sr.dcm", "measurements_sr.dcm"
OUTCOMES = {"fpe": "First-pass effect", "mtici_2c": "Final mTICI >= 2c", "rlvo": "Refractory LVO"}
IDENTIFIERS = ("PatientName", "PatientID", "PatientBirthDate", "AccessionNumber", "ReferringPhysicianName")


def linkable(ds: Any, keep_identifiers: bool = False) -> Any:
    """A shallow copy of a source dataset as the answer's objects take it: the patient and study attributes present
    (DICOM type 2, empty where the source lacks them), the identifiers emptied unless ``keep_identifiers``."""
    import copy

    ds = copy.copy(ds)
    for keyword in PATIENT_STUDY:
        if keyword not in ds or (keyword in IDENTIFIERS and not keep_identifiers):
            setattr(ds, keyword, "")
    return ds


def write_dicom_answer(
    folder: str,
    result: Dict[str, Any],
    evidence: Sequence[Any],
    cta: Sequence[Any],
    model: Dict[str, str],
    label: str,
    clot: Dict[str, Any] | None = None,
    keep_identifiers: bool = False,
) -> List[str]:
    """Write the answer's DICOM objects into ``folder`` (each atomically); returns their paths.

    Args:
        folder: the output folder.
        result: the prediction dict (``probability``, ``probability_sd``, ``prediction``, ``cutoff``, ``warning``;
            the main job's ``measurements``).
        evidence: pydicom datasets of every input series (one study).
        cta: the CTA series' datasets (the segmentation's source frames).
        model: the bundle metadata (``name``, ``version``).
        label: the outcome the model predicts (``fpe``, ``mtici_2c``, ``rlvo``).
        clot: the main job's ``memberships`` (2, X, Y, Z box maps, the occluded side first), the box's ``affine``
            (:func:`scripts.inference.dicom_images.box_affine`), the key ``view`` and the ``side``; None for a model
            that does not measure the clot.
        keep_identifiers: copy the patient's name, ID and birth date, the accession number and the referring
            physician from the input (:func:`linkable`).
    """
    evidence = [linkable(ds, keep_identifiers) for ds in evidence]
    cta = [linkable(ds, keep_identifiers) for ds in cta]
    name, version = str(model.get("name", "thrombectomy outcome bundle")), str(model.get("version", ""))
    outcome = OUTCOMES.get(label, label)
    objects = {SR_FILE: structured_report(result, evidence, name, version, outcome)}
    if result.get("measurements"):
        objects[MEASUREMENTS_SR_FILE] = measurement_report(result, evidence, name, version, outcome)
    if clot is not None and clot["affine"] is not None and cta:
        cta = sorted(cta, key=lambda ds: float(np.dot(_normal(ds), [float(v) for v in ds.ImagePositionPatient])))
        frames = on_source_frames(unturn(clot["memberships"], clot["side"]), clot["affine"], cta)
        objects[SEG_FILE] = clot_segmentation(frames, cta, name, version)
        objects[KEY_IMAGE_FILE] = key_image_capture(clot["view"], evidence, name, clot["side"])
    os.makedirs(folder, exist_ok=True)
    written = []
    for file_name, dataset in objects.items():
        path = os.path.join(folder, file_name)
        atomic_write(path, lambda target: dataset.save_as(target), suffix=".dcm")
        written.append(path)
    return written


def _normal(ds: Any) -> np.ndarray:
    orientation = np.asarray([float(v) for v in ds.ImageOrientationPatient])
    return np.cross(orientation[:3], orientation[3:])


def write_study_answer(
    folder: str,
    item: Dict[str, Any],
    result: Dict[str, Any],
    preprocessing: Any,
    readouts: Dict[str, Any],
    model: Dict[str, str],
    label: str,
    keep_identifiers: bool = False,
) -> List[str]:
    """:func:`write_dicom_answer` for a patient whose images are DICOM series folders (``--study`` inference).

    Args:
        folder: the output folder.
        item: the patient's item (sequence: series folder; ``side``).
        result: as :func:`write_dicom_answer`.
        preprocessing: the model's preprocessing (its box for the SEG).
        readouts: the model's ``key_views`` and ``membership_maps`` of this patient
            (:func:`scripts.inference.predict.predict_many`), absent for a model without them.
        model: the bundle metadata.
        label: the outcome.
        keep_identifiers: as :func:`write_dicom_answer`.
    """
    from pydicom import dcmread

    from scripts.data.cohort import SEQUENCES

    series = {k: item[k] for k in SEQUENCES if isinstance(item.get(k), str) and os.path.isdir(item[k])}
    datasets = {k: [dcmread(os.path.join(path, f)) for f in sorted(os.listdir(path))] for k, path in series.items()}
    evidence = [ds for k in datasets for ds in datasets[k]]
    clot = None
    if "membership_maps" in readouts and "key_views" in readouts and "cta" in datasets:
        from monai.transforms import Compose, Orientationd

        from scripts.data.checks import LoadScand

        load = Compose([LoadScand("cta", ensure_channel_first=True, image_only=True), Orientationd("cta", "RAS")])
        affine = box_affine(preprocessing, load({"cta": series["cta"]})["cta"])
        memberships, view = readouts["membership_maps"], readouts["key_views"]
        clot = {"memberships": memberships, "affine": affine, "view": view, "side": item.get("side")}
    return write_dicom_answer(folder, result, evidence, datasets.get("cta", []), model, label, clot, keep_identifiers)

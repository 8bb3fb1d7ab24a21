"""DICOM test data (pydicom): a NIfTI CT volume as an axial series, and a whole stroke CT study as PACS sends it."""

from __future__ import annotations

import os
import random
from typing import Any, Dict, List, Sequence

import nibabel as nib
import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
from pydicom.valuerep import DS

AXIAL = ("ORIGINAL", "PRIMARY", "AXIAL")


def _file_meta(sop_class: str, syntax: str = ExplicitVRLittleEndian) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = syntax
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, ds.file_meta.MediaStorageSOPInstanceUID
    return ds


def _ds(values: Sequence[float]) -> List[DS]:
    """Decimal strings within DICOM's 16 characters."""
    return [DS(float(v), auto_format=True) for v in values]


def write_volume_series(
    vol: np.ndarray,
    aff: np.ndarray,
    out_dir: str,
    patient: Dict[str, str] | None = None,
    study: str | None = None,
    number: int = 1,
    description: str = "",
    image_type: Sequence[str] = AXIAL,
    contrast: str | None = None,
    compress: str | None = None,
    names: List[str] | None = None,
    extra: Dict[str, Any] | None = None,
) -> str:
    """One file per slice (third voxel axis) of a RAS volume in HU (``aff``: voxel -> RAS mm), oblique allowed.

    ``study``: StudyInstanceUID (new when None); ``contrast``: ContrastBolusAgent; ``compress``: a transfer syntax
    UID to encode with (JPEG 2000 / JPEG-LS lossless); ``names``: file names (default ``0000.dcm`` ...)."""
    vol = np.round(vol).astype(np.int32)
    spacing = np.linalg.norm(aff[:3, :3], axis=0)
    lps = np.array([-1.0, -1.0, 1.0])
    rows_dir, cols_dir = aff[:3, 0] / spacing[0] * lps, aff[:3, 1] / spacing[1] * lps
    series, study, frame_of_reference = generate_uid(), study or generate_uid(), generate_uid()
    os.makedirs(out_dir, exist_ok=True)
    for k in range(vol.shape[2]):
        ds = _file_meta(CTImageStorage)
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.Modality, ds.PatientID = study, series, "CT", "anonymous"
        ds.SeriesNumber, ds.SeriesDescription, ds.ImageType = number, description, list(image_type)
        ds.PatientPosition, ds.FrameOfReferenceUID = "HFS", frame_of_reference
        if contrast:
            ds.ContrastBolusAgent = contrast
        for keyword, value in {**(patient or {}), **(extra or {})}.items():
            setattr(ds, keyword, value)
        ds.InstanceNumber = k + 1
        x, y, z, _ = aff @ np.array([0, 0, k, 1.0])
        ds.ImagePositionPatient = _ds([-x, -y, z])  # RAS -> LPS
        ds.ImageOrientationPatient = _ds([*rows_dir, *cols_dir])  # along voxel axes i, then j
        ds.PixelSpacing = _ds([spacing[1], spacing[0]])
        ds.SliceThickness = _ds([spacing[2]])[0]
        ds.Rows, ds.Columns = vol.shape[1], vol.shape[0]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
        pixels = np.ascontiguousarray((vol[:, :, k].T + 1024).clip(0, 65535).astype(np.uint16))
        ds.PixelData = pixels.tobytes()
        if compress:
            ds.compress(compress, pixels)
        ds.save_as(os.path.join(out_dir, names[k] if names else f"{k:04d}.dcm"), enforce_file_format=True)
    return out_dir


def write_ct_series(nifti: str, out_dir: str, patient: Dict[str, str] | None = None, **options: Any) -> str:
    """A NIfTI CT (HU) as an axial DICOM series in ``out_dir`` (options: :func:`write_volume_series`)."""
    img = nib.as_closest_canonical(nib.load(nifti))
    return write_volume_series(np.asarray(img.dataobj), img.affine, out_dir, patient, **options)


def _dose_report(path: str, study: str, number: int) -> None:
    """A radiation dose structured report: a DICOM file of the study without pixels."""
    ds = _file_meta("1.2.840.10008.5.1.4.1.1.88.67")  # X-Ray Radiation Dose SR
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.Modality, ds.PatientID = study, generate_uid(), "SR", "anonymous"
    ds.SeriesNumber, ds.SeriesDescription = number, "Dose Report"
    ds.save_as(path, enforce_file_format=True)


def write_study(
    ncct: str, cta: str, out_dir: str, seed: int = 0, patient: Dict[str, str] | None = None, thick_factor: int = 5
) -> Dict[str, Any]:
    """A stroke CT study as a router sends it: one folder, files under random names in random order, 6 series:
    a scout, a thick NCCT (every ``thick_factor``-th slice of ``ncct``), the thin NCCT (``ncct``), the CTA
    (``cta``), a CTA MIP (derived, 3-slice slabs) and a dose report. Returns the study UID and the series numbers
    of the thin NCCT and the CTA (what a correct selection picks)."""
    rng = random.Random(seed)
    study = generate_uid()
    staging = out_dir + ".staging"
    nc, ct = (nib.as_closest_canonical(nib.load(p)) for p in (ncct, cta))
    nc_vol, ct_vol = np.asarray(nc.dataobj, dtype=np.float32), np.asarray(ct.dataobj, dtype=np.float32)
    scout_aff = nc.affine.copy()
    scout = nc_vol.max(axis=1, keepdims=True).transpose(0, 2, 1)  # a coronal projection as one image
    scout_aff[:3, 1], scout_aff[:3, 2] = nc.affine[:3, 2], nc.affine[:3, 1]
    thick_aff = nc.affine.copy()
    thick_aff[:3, 2] *= thick_factor
    mip = np.stack([ct_vol[:, :, k : k + 3].max(axis=2) for k in range(0, ct_vol.shape[2] - 2, 3)], axis=2)
    mip_aff = ct.affine.copy()
    mip_aff[:3, 2] *= 3
    common = {"study": study, "patient": patient}
    write_volume_series(
        scout,
        scout_aff,
        os.path.join(staging, "1"),
        number=1,
        description="Topogram",
        image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"),
        **common,
    )
    write_volume_series(
        nc_vol[:, :, ::thick_factor],
        thick_aff,
        os.path.join(staging, "2"),
        number=2,
        description="Head 5.0 H31s",
        **common,
    )
    write_volume_series(nc_vol, nc.affine, os.path.join(staging, "3"), number=3, description="Head 1.0 H31s", **common)
    write_volume_series(
        ct_vol,
        ct.affine,
        os.path.join(staging, "4"),
        number=4,
        description="CTA Head 1.0 Hv36",
        contrast="Iohexol",
        **common,
    )
    write_volume_series(
        mip,
        mip_aff,
        os.path.join(staging, "5"),
        number=5,
        description="CTA MIP axial",
        image_type=("DERIVED", "SECONDARY", "AXIAL", "MIP"),
        contrast="Iohexol",
        **common,
    )
    os.makedirs(os.path.join(staging, "6"))
    _dose_report(os.path.join(staging, "6", "0000.dcm"), study, 6)
    files = [os.path.join(root, n) for root, _, names in os.walk(staging) for n in names]
    rng.shuffle(files)
    os.makedirs(out_dir, exist_ok=True)
    for i, path in enumerate(files):
        os.replace(path, os.path.join(out_dir, f"IM{rng.randrange(10**8):08d}_{i}"))
    for root, _, _ in sorted(os.walk(staging), reverse=True):
        os.rmdir(root)
    return {"study": study, "ncct": 3, "cta": 4}


def site_rules(path: str, max_mm: float) -> str:
    """The bundle's series rules with every slice-thickness limit raised to ``max_mm`` (a site's own rules file for
    the coarse demo grids), written to ``path``."""
    import json

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    rules = json.load(open(os.path.join(root, "configs", "series_rules.json")))
    for selection in rules["selections"]:
        if "SliceThickness" in selection["conditions"]:
            selection["conditions"]["SliceThickness"] = [0.5, max_mm]
    with open(path, "w") as f:
        json.dump(rules, f)
    return path

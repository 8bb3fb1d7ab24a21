"""Write a NIfTI CT volume as an axial DICOM series (pydicom), anonymous, for DICOM-input tests."""

from __future__ import annotations

import os
from typing import Dict, Optional

import nibabel as nib
import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid


def write_ct_series(nifti: str, out_dir: str, patient: Optional[Dict[str, str]] = None) -> str:
    """One file per slice (third voxel axis) of a NIfTI, oblique allowed, in Hounsfield units via RescaleIntercept.
    ``patient``: DICOM attributes to set on every file (e.g. PatientName, PatientID, PatientBirthDate) instead of
    the anonymous default."""
    img = nib.as_closest_canonical(nib.load(nifti))
    vol = np.round(np.asarray(img.dataobj)).astype(np.int32)
    aff = img.affine
    spacing = np.linalg.norm(aff[:3, :3], axis=0)
    lps = np.array([-1.0, -1.0, 1.0])
    rows_dir, cols_dir = aff[:3, 0] / spacing[0] * lps, aff[:3, 1] / spacing[1] * lps
    series, study = generate_uid(), generate_uid()
    os.makedirs(out_dir, exist_ok=True)
    for k in range(vol.shape[2]):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, ds.file_meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.Modality, ds.PatientID = study, series, "CT", "anonymous"
        for keyword, value in (patient or {}).items():
            setattr(ds, keyword, value)
        ds.InstanceNumber = k + 1
        x, y, z, _ = aff @ np.array([0, 0, k, 1.0])
        ds.ImagePositionPatient = [float(-x), float(-y), float(z)]  # RAS -> LPS
        ds.ImageOrientationPatient = [float(v) for v in (*rows_dir, *cols_dir)]  # along voxel axes i, then j
        ds.PixelSpacing = [float(spacing[1]), float(spacing[0])]
        ds.SliceThickness = float(spacing[2])
        ds.Rows, ds.Columns = vol.shape[1], vol.shape[0]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
        ds.PixelData = (vol[:, :, k].T + 1024).clip(0, 65535).astype(np.uint16).tobytes()
        ds.save_as(os.path.join(out_dir, f"{k:04d}.dcm"), enforce_file_format=True)
    return out_dir

"""Where the main job read the clot, as DICOM on the CTA's own frame of reference: a segmentation and a key image.

The main job's model reads the clot in a box of MNI space, its occluded side turned first
(:class:`scripts.data.mirror_align.MirrorAlignd`). :func:`box_affine` gives that box's voxel -> RAS mm matrix from the
model's own preprocessing (its :class:`scripts.data.mni_box.MNIBoxd` crop and resize); :func:`on_source_frames`
samples the box's memberships at every pixel of the source CTA slices (highdicom's pixel -> patient coordinates), so
the segmentation lies on the CTA exactly as the CTA was sent, whatever its orientation. :func:`clot_segmentation`
writes the vessel and clot memberships as a binary DICOM SEG (highdicom) referencing the CTA; :func:`key_image_capture`
writes the key image (:meth:`scripts.networks.clot_readings.ClotReadingNet.key_views`) as a secondary capture
referencing the input series. Both take the patient and study modules from the datasets they are given
(:func:`scripts.inference.dicom_answer.linkable`: without the patient's identifiers unless asked).
"""

from __future__ import annotations

from typing import Any, Callable, List, Sequence

import numpy as np
import torch
from monai.transforms import Resize, Resized, SpatialCrop
from scipy import ndimage

from scripts.data.anatomy import box_slices
from scripts.data.mni_box import MNIBoxd
from scripts.inference.dicom_report import new_instance

SEGMENTS = ("vessel", "clot")  # the channels of ClotReadingNet.membership_maps, in order
SEG_FILE, KEY_IMAGE_FILE = "clot_seg.dcm", "key_image_sc.dcm"


def box_affine(preprocessing: Callable, image: torch.Tensor) -> np.ndarray | None:
    """The voxel -> RAS mm matrix (4, 4) of the model input's box, for ``image`` (a RAS-oriented MetaTensor, C, X, Y,
    Z, as the preprocessing loads it): the preprocessing's :class:`MNIBoxd` crop, then its resize (MONAI tracks the
    affine of both). None when the preprocessing crops no MNI box."""
    transforms = list(getattr(preprocessing, "transforms", []))
    box = next((t for t in transforms if isinstance(t, MNIBoxd)), None)
    if box is None:
        return None
    affine = image.affine.numpy()  # type: ignore[attr-defined]
    crop = SpatialCrop(roi_slices=box_slices(affine, image.shape[1:], box.box_mm))(image[:1])
    resize = next((t for t in transforms if isinstance(t, Resized)), None)
    if resize is not None:
        crop = Resize(resize.resizer.spatial_size)(crop)
    return np.asarray(crop.affine, dtype=float)  # type: ignore[attr-defined]


def unturn(maps: np.ndarray, side: str | None) -> np.ndarray:
    """Box maps (S, X, Y, Z) back to the patient's own left-right order: :class:`MirrorAlignd` turned a right-sided
    occlusion's box so that the occluded half came first."""
    return maps[:, ::-1] if side == "R" else maps


def on_source_frames(maps: np.ndarray, affine: np.ndarray, datasets: Sequence[Any]) -> np.ndarray:
    """Box maps (S, X, Y, Z) sampled (trilinear, 0 outside the box) at every pixel of each source slice:
    (frames, rows, columns, S), frames in ``datasets``' order.

    Args:
        maps: memberships in the box, the patient's own left-right order (:func:`unturn`).
        affine: the box's voxel -> RAS mm matrix (:func:`box_affine`).
        datasets: the source series' single-frame pydicom datasets.
    """
    from highdicom.spatial import PixelToReferenceTransformer

    to_box = np.linalg.inv(affine)
    frames = []
    for ds in datasets:
        rows, columns = int(ds.Rows), int(ds.Columns)
        column, row = np.meshgrid(np.arange(columns), np.arange(rows))
        pixels = np.stack([column.ravel(), row.ravel()], 1)
        to_patient = PixelToReferenceTransformer(ds.ImagePositionPatient, ds.ImageOrientationPatient, ds.PixelSpacing)
        lps = to_patient(pixels)
        ras = np.c_[-lps[:, 0], -lps[:, 1], lps[:, 2], np.ones(len(lps))]
        voxels = (to_box @ ras.T)[:3]
        sampled = [ndimage.map_coordinates(m, voxels, order=1, cval=0.0) for m in maps]
        frames.append(np.stack(sampled, -1).reshape(rows, columns, len(maps)))
    return np.stack(frames)


def clot_segmentation(
    memberships: np.ndarray, cta: Sequence[Any], model_name: str, model_version: str, level: float = 0.5
) -> Any:
    """A binary DICOM SEG (highdicom) of the vessel and clot memberships on the CTA's slices.

    Args:
        memberships: (frames, rows, columns, 2) on the CTA's frames (:func:`on_source_frames`).
        cta: the CTA series' pydicom datasets, in the frames' order.
        model_name: the bundle's name (the segments' algorithm).
        model_version: its version.
        level: the membership a voxel must reach to be in a segment.

    Returns:
        the SEG dataset: its frame of reference and referenced series the CTA's.
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes

    algorithm = hd.AlgorithmIdentificationSequence(
        name=model_name[:64], version=model_version or "unknown", family=codes.cid7162.ArtificialIntelligence
    )
    kinds = {
        "vessel": (codes.cid7150.AnatomicalStructure, codes.SCT.Artery),
        "clot": (codes.cid7150.MorphologicallyAbnormalStructure, codes.SCT.Thrombus),
    }
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=name,
            segmented_property_category=kinds[name][0],
            segmented_property_type=kinds[name][1],
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
        )
        for number, name in enumerate(SEGMENTS, 1)
    ]
    return hd.seg.Segmentation(
        source_images=list(cta),
        pixel_array=memberships >= level,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        **new_instance(9903, f"{model_name}: vessel and clot"),
        manufacturer_model_name=model_name[:64],
        software_versions=model_version or "unknown",
        device_serial_number="none",
        omit_empty_frames=False,
    )


def key_image_capture(
    view: np.ndarray, evidence: Sequence[Any], model_name: str, side: str | None, zoom: int = 4
) -> Any:
    """The key image (rows, columns, 3 RGB in [0, 1]; each voxel ``zoom`` pixels) as a DICOM secondary capture
    (highdicom), its patient and study the first evidence dataset's, the input series referenced (Referenced
    Series Sequence). Its patient orientation is the occluded half's (the left panel): anterior at the top, the
    columns towards the patient's right, or left for a right-sided occlusion (the box turned)."""
    import highdicom as hd
    from pydicom.dataset import Dataset

    pixels = np.repeat(np.repeat(np.clip(view, 0, 1), zoom, 0), zoom, 1)
    capture = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=evidence[0],
        pixel_array=np.round(pixels * 255).astype(np.uint8),
        photometric_interpretation=hd.PhotometricInterpretationValues.RGB,
        bits_allocated=8,
        coordinate_system=hd.CoordinateSystemNames.PATIENT,
        patient_orientation=("L" if side == "R" else "R", "P"),
        **new_instance(9904, f"{model_name}: key image"),
    )
    series: dict = {}
    for ds in evidence:
        series.setdefault(str(ds.SeriesInstanceUID), []).append(ds)
    references: List[Dataset] = []
    for uid, members in series.items():
        item = Dataset()
        item.SeriesInstanceUID = uid
        item.ReferencedInstanceSequence = [_instance(ds) for ds in members]
        references.append(item)
    capture.ReferencedSeriesSequence = references
    return capture


def _instance(ds: Any) -> Any:
    from pydicom.dataset import Dataset

    item = Dataset()
    item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    return item

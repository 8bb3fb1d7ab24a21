"""The output space: the MNI grid, Rorden's CT and FLAIR templates (2 mm MNI) and the arterial territories."""

from __future__ import annotations

import os

import nibabel as nib
import numpy as np

from scripts import BundleInputError
from scripts.data.anatomy import ATLAS_DIRS, ATLAS_LEVEL2, atlas_image
from scripts.data.anatomy import mni_grid as demo_grid
from scripts.preprocess.volumes import nifti_to_ants

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TEMPLATE_DIRS = (os.path.join(_ROOT, "data", "templates"), os.path.join(_ROOT, "..", "shared", "data", "templates"))
FLAIR_TEMPLATE = "GG-366-FLAIR-2.0mm-8mmFWHM.nii"


def cormack_to_hu(c: np.ndarray) -> np.ndarray:
    """Rorden's Cormack units -> Hounsfield units (clinical_c2h)."""
    c = np.asarray(c, dtype=np.float32)
    return np.where(c <= 900, c - 1024, np.where(c <= 3100, (c - 900) / 11 - 124, c - 3024)).astype(np.float32)


def template_dir(explicit: str | None = None) -> str:
    """The folder with Rorden's templates (``data/templates`` via large_files.yml, or ../shared/data/templates)."""
    for folder in [explicit] if explicit else list(TEMPLATE_DIRS):
        if folder and os.path.isfile(os.path.join(folder, "scct.nii")):
            return folder
    raise BundleInputError(
        "CT template scct.nii not found in data/templates (python -m monai.bundle download_large_files "
        "--meta_file models/large_files.yml)"
    )


def template_brain_mask(folder: str | None = None):
    """The template brain (``scct_stripped.nii`` > 0) as a 0/1 ANTs image, 2 mm MNI."""
    import ants

    mask = ants.image_read(os.path.join(template_dir(folder), "scct_stripped.nii"))
    return mask.new_image_like((mask.numpy() > 0).astype(np.float32))


def load_ct_template(folder: str | None = None):
    """(CT template in HU, its brain mask) as ANTs images, 2 mm MNI."""
    import ants

    raw = ants.image_read(os.path.join(template_dir(folder), "scct.nii"))
    return raw.new_image_like(cormack_to_hu(raw.numpy())), template_brain_mask(folder)


def load_mr_template(folder: str | None = None):
    """(FLAIR template with skull, the brain mask on its grid) as ANTs images, 2 mm MNI (same grid as scct)."""
    import ants

    path = os.path.join(template_dir(folder), FLAIR_TEMPLATE)
    if not os.path.isfile(path):
        raise BundleInputError(f"MR template {FLAIR_TEMPLATE} not found in {template_dir(folder)}")
    return ants.image_read(path).astype("float32"), template_brain_mask(folder)


def template_similarity(template, image) -> float:
    """QC: Mattes mutual information (ANTs; more negative = more similar) between the skull-stripped template and
    an MNI-space image, on the template's own 2 mm grid (the image resampled linearly onto it). At 1 mm on a 10%
    sample it took 1.0 s on the real head CT, most of it spent setting the metric up; on the 2 mm grid 0.3 s."""
    import ants

    moved = ants.resample_image_to_target(image, template, interp_type="linear")
    return round(float(ants.image_similarity(template, moved, "MattesMutualInformation")), 4)


def mni_grid(spacing: float = 1.0):
    """The output grid as an empty ANTs image, LAS like the atlas: at 1 mm the atlas grid (181 x 217 x 181); at
    every spacing the voxel centres of the demo's RAS grid (:func:`scripts.data.anatomy.mni_grid`), so preprocessed
    scans and demo scans of one spacing share one grid (``grid.json`` of the fold models)."""
    scale = float(spacing)
    shape, ras = demo_grid(scale)
    affine = ras.copy()
    affine[0, 0] = -scale
    affine[0, 3] = ras[0, 3] + scale * (shape[0] - 1)
    return nifti_to_ants(nib.Nifti1Image(np.zeros(shape, np.float32), affine))


def atlas_territories(grid):
    """The arterial-territory atlas (level 2, labels 1-8) resampled to ``grid`` (nearest neighbour)."""
    import ants

    path = next(
        (os.path.join(d, ATLAS_LEVEL2) for d in ATLAS_DIRS if os.path.isfile(os.path.join(d, ATLAS_LEVEL2))), ""
    )
    if not path:
        raise BundleInputError("arterial atlas not found in data/atlas (see models/large_files.yml)")
    img = atlas_image(path)
    labels = np.asarray(img.dataobj).astype(np.float32)
    atlas = nifti_to_ants(nib.Nifti1Image(np.where(labels <= 8, labels, 0), img.affine))
    return ants.resample_image_to_target(atlas, grid, interp_type="nearestNeighbor")


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice overlap of two masks (> 0.5)."""
    a, b = a > 0.5, b > 0.5
    return float(2 * (a & b).sum() / max(a.sum() + b.sum(), 1))


def affine_volume_scale(transform_file: str) -> float:
    """|det| of the linear part of an ANTs affine (.mat): a volume in the fixed (MNI) space times this is the
    volume in the moving (native) space."""
    import ants

    matrix = np.asarray(ants.read_transform(transform_file).parameters[:9]).reshape(3, 3)
    return float(abs(np.linalg.det(matrix)))

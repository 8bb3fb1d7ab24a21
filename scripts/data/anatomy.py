"""Real anatomy in an MNI grid: nilearn's MNI152 tissue maps and the JHU arterial-territory atlas.

The atlas (CC BY-SA 4.0; ``data/atlas`` via ``models/large_files.yml``, or ``../shared/data/atlas``) ships with
an identity header; its true grid is MNI 1 mm LAS (see :data:`ATLAS_AFFINE`). Without the atlas, a
documented fallback gives each hemisphere an MCA region (lateral to |x| = 20 mm, y in [-80, 45] mm,
z in [-25, 70] mm), an ACA region (|x| < 20 mm, y > -40 mm) and a PCA region (the rest, y < -40 mm).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import Sequence, Tuple

import nibabel as nib
import numpy as np

ATLAS_AFFINE = np.array([[-1.0, 0, 0, 90], [0, 1, 0, -126], [0, 0, 1, -72], [0, 0, 0, 1]])
ATLAS_LEVEL2 = "ArterialAtlas_level2.nii.gz"
# level-2 labels of the atlas (and of territories.nii.gz written by this project)
TERRITORIES = {"ACA_L": 1, "ACA_R": 2, "MCA_L": 3, "MCA_R": 4, "PCA_L": 5, "PCA_R": 6, "VB_L": 7, "VB_R": 8}
_BUNDLE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# models/large_files.yml downloads the atlas to data/atlas; tests and CI use ../shared/data/atlas
ATLAS_DIRS = (os.path.join(_BUNDLE_ROOT, "data", "atlas"), os.path.join(_BUNDLE_ROOT, "..", "shared", "data", "atlas"))
DEFAULT_ATLAS_DIR = next((d for d in ATLAS_DIRS if os.path.isfile(os.path.join(d, ATLAS_LEVEL2))), ATLAS_DIRS[0])


def mni_grid(spacing: float) -> Tuple[Tuple[int, int, int], np.ndarray]:
    """Shape and RAS affine of the MNI box x [-90, 90], y [-126, 90], z [-72, 108] mm at ``spacing`` mm."""
    shape = tuple(int(np.floor(extent / spacing)) + 1 for extent in (180, 216, 180))
    affine = np.diag([spacing, spacing, spacing, 1.0])
    affine[:3, 3] = (-90, -126, -72)
    return shape, affine  # type: ignore[return-value]


@dataclass
class Anatomy:
    """Tissue probability maps and labels resampled to one MNI grid (arrays indexed x, y, z in RAS)."""

    affine: np.ndarray
    gm: np.ndarray
    wm: np.ndarray
    brain: np.ndarray
    territories: np.ndarray
    atlas_used: bool

    @property
    def spacing(self) -> float:
        return float(self.affine[0, 0])

    def world(self) -> np.ndarray:
        """World (mm) coordinates of every voxel centre, shape (X, Y, Z, 3)."""
        idx = np.stack(np.meshgrid(*[np.arange(n) for n in self.gm.shape], indexing="ij"), axis=-1)
        return idx * self.spacing + self.affine[:3, 3]


def _resample(img: nib.Nifti1Image, shape: Tuple[int, ...], affine: np.ndarray, order: int) -> np.ndarray:
    from nilearn.image import resample_img

    out = resample_img(
        img,
        target_affine=affine,
        target_shape=shape,
        interpolation="continuous" if order else "nearest",
        force_resample=True,
        copy_header=True,
    )
    return np.asarray(out.get_fdata(), dtype=np.float32)


def _fallback_territories(world: np.ndarray, brain: np.ndarray) -> np.ndarray:
    x, y, z = world[..., 0], world[..., 1], world[..., 2]
    right = x > 0
    lab = np.where(y < -40, 5, 1) + right  # PCA / ACA by default
    mca = (np.abs(x) > 20) & (y > -80) & (y < 45) & (z > -25) & (z < 70)
    lab = np.where(mca, 3 + right, lab)
    return np.where(brain > 0.5, lab, 0).astype(np.int16)


@functools.lru_cache(maxsize=4)
def atlas_image(path: str) -> nib.Nifti1Image:
    """The level-2 atlas as a 3-D int16 image with its true MNI affine (the file's header is identity)."""
    raw = nib.load(path)
    return nib.Nifti1Image(np.asarray(raw.dataobj).reshape(raw.shape[:3]).astype(np.int16), ATLAS_AFFINE)


def load_anatomy(spacing: float = 2.0, atlas_dir: str | None = DEFAULT_ATLAS_DIR) -> Anatomy:
    """Resample the MNI152 GM/WM/brain maps (nilearn, no download) and the atlas to the grid."""
    from nilearn import datasets

    shape, affine = mni_grid(spacing)
    gm = _resample(datasets.load_mni152_gm_template(resolution=1), shape, affine, 1)
    wm = _resample(datasets.load_mni152_wm_template(resolution=1), shape, affine, 1)
    brain = _resample(datasets.load_mni152_brain_mask(resolution=1), shape, affine, 1)
    atlas_path = os.path.join(atlas_dir, ATLAS_LEVEL2) if atlas_dir else ""
    anatomy = Anatomy(affine, np.clip(gm, 0, 1), np.clip(wm, 0, 1), np.clip(brain, 0, 1), np.zeros(shape), False)
    if atlas_path and os.path.isfile(atlas_path):
        lab = _resample(atlas_image(atlas_path), shape, affine, 0).astype(np.int16)
        anatomy.territories = np.where(lab <= 8, lab, 0).astype(np.int16)
        anatomy.atlas_used = True
    else:
        anatomy.territories = _fallback_territories(anatomy.world(), anatomy.brain)
    return anatomy


@functools.lru_cache(maxsize=8)
def grid_maps(shape: Tuple[int, ...], affine_key: bytes, atlas_dir: str | None) -> Tuple[np.ndarray, np.ndarray]:
    """(MNI152 brain mask, territory labels 1-8) resampled to an MNI-space image grid given by ``shape`` and its
    affine as float64 bytes (hashable, so cached per grid); the fallback territories without the atlas."""
    from nilearn import datasets

    affine = np.frombuffer(affine_key).reshape(4, 4)
    brain = _resample(datasets.load_mni152_brain_mask(resolution=1), shape, affine, 0) > 0.5
    path = os.path.join(atlas_dir, ATLAS_LEVEL2) if atlas_dir else ""
    if path and os.path.isfile(path):
        labels = _resample(atlas_image(path), shape, affine, 0).astype(np.int16)
        territories = np.where(labels <= 8, labels, 0).astype(np.int16)
    else:
        ijk = np.indices(shape).reshape(3, -1)
        world = (affine[:3, :3] @ ijk + affine[:3, 3:4]).T.reshape(*shape, 3)
        territories = _fallback_territories(world, brain.astype(float))
    return brain, territories


def box_slices(affine: np.ndarray, shape: Sequence[int], box_mm: Sequence[Sequence[float]]) -> Sequence[slice]:
    """Voxel slices of an axis-aligned (RAS) image grid that cover ``box_mm`` ((lo, hi) mm per axis)."""
    affine = np.asarray(affine, dtype=float)
    if not np.allclose(affine[:3, :3], np.diag(np.diag(affine[:3, :3])), atol=1e-3) or (np.diag(affine)[:3] <= 0).any():
        raise ValueError("the image grid is not axis-aligned RAS (apply Orientationd with axcodes RAS first)")
    spacing, origin = np.diag(affine)[:3], affine[:3, 3]
    slices = []
    for axis, (lo, hi) in enumerate(box_mm):
        start = int(np.floor((lo - origin[axis]) / spacing[axis] + 1e-6))
        stop = int(np.floor((hi - origin[axis]) / spacing[axis] + 1e-6)) + 1
        if start < 0 or stop > shape[axis]:
            raise ValueError(
                f"the image does not cover the MNI box {lo:g}..{hi:g} mm on axis {axis} (it spans "
                f"{origin[axis]:g}..{origin[axis] + spacing[axis] * (shape[axis] - 1):g} mm)"
            )
        slices.append(slice(start, stop))
    return slices
